#!/usr/bin/env bash
# Sets up .venv (scripts/setup.sh), lints, and runs the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/test_aligner.py -k warmup`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
