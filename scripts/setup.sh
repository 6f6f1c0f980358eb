#!/usr/bin/env bash
# Creates .venv with iga and its test tools. On a machine without an NVIDIA GPU it
# installs the CPU build torch==2.13.0 first (taken from a local wheel folder when
# PIP_FIND_LINKS or /opt/wheels holds it), so pip never pulls a multi-GB CUDA build.
# With a GPU, pip resolves torch from pyproject.toml's range as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "${pip[@]}" "torch>=2.3,<2.15"
  else
    links=()
    [ -d /opt/wheels ] && links=(--find-links /opt/wheels)
    "${pip[@]}" "${links[@]}" "torch==2.13.0" \
      || "${pip[@]}" --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
  fi
fi
"${pip[@]}" -e ".[dev]"
