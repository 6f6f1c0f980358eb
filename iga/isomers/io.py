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
