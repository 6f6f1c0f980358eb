"""Reading and writing isomer sets as JSONL (one set per line, schema in docs/isomers.md)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from iga.isomers.schema import IsomerSet
from iga.isomers.validate import IsomerFormatError, validate_file


def read_sets(path: str | os.PathLike) -> list[IsomerSet]:
    """All sets of a JSONL file, fully validated.

    Raises :class:`IsomerFormatError` (``file:line: reason``) if any line is invalid; use
    :func:`iga.isomers.validate_file` to keep the valid lines of a partly broken file.
    """
    report = validate_file(path)
    if report.errors:
        raise IsomerFormatError(report.errors)
    return report.valid


def read_sets_located(path: str | os.PathLike) -> list[tuple[IsomerSet, str]]:
    """``read_sets`` with each set's place, ``file:line``; read errors name the file.

    An unreadable file, a folder, or text that is not UTF-8 raises ``IsomerReadError``
    (a ``ValueError``) naming the file, instead of a bare ``OSError`` or
    ``UnicodeDecodeError``.
    """
    path = Path(path)
    if path.is_dir():
        raise IsomerReadError(f"{path}: is a folder; pass a JSONL file of isomer sets.")
    try:
        sets = read_sets(path)
        with path.open(encoding="utf-8") as handle:  # as validate_file reads it
            lines = [i for i, line in enumerate(handle, start=1) if line.strip()]
    except FileNotFoundError:
        raise IsomerReadError(f"{path}: no such file.") from None
    except UnicodeDecodeError as err:
        raise IsomerReadError(
            f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); isomer files are "
            "UTF-8 JSONL."
        ) from None
    except OSError as err:
        raise IsomerReadError(f"{path}: cannot read it ({err.strerror or err}).") from None
    # read_sets succeeded, so every non-blank line is one valid set, in file order.
    return [(s, f"{path}:{line}") for s, line in zip(sets, lines)]


class IsomerReadError(ValueError):
    """An isomer file cannot be read at all; the message names it."""


def write_sets(path: str | os.PathLike, sets: Iterable[IsomerSet]) -> Path:
    """Write ``sets`` as JSONL, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as handle:
        for iset in sets:
            handle.write(iset.to_json() + "\n")
    os.replace(tmp, path)
    return path
