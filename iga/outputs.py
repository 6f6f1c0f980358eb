"""Output paths checked before the work starts (issue 18: an unwritable ``--json`` or an
``--out`` under a file is a one-line message naming the flag, not a traceback after a
long run). Shared by every command that writes files.
"""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An output path cannot be written; the message names the flag and the path."""


def check_output_dir(path: Path, flag: str) -> None:
    """``OutputPathError`` unless ``path`` is (or can be made) a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{flag} {path}: it is a file, not a folder; choose another {flag}.")
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputPathError(
            f"{flag} {path}: {parent} is a file, so no folder can be made under it; "
            f"choose another {flag}."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {path}: {parent} is not writable; choose another {flag}.")


def check_output_file(path: Path, flag: str, make_parents: bool = False) -> None:
    """``OutputPathError`` unless a file can be written at ``path`` (checked before work).

    With ``make_parents`` the folder may be missing, as long as it can be created.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} {path}: it is a folder; give a file name.")
    parent = path.parent if str(path.parent) else Path(".")
    if make_parents and not parent.is_dir():
        check_output_dir(parent, flag)
        return
    if not parent.is_dir():
        if parent.exists():
            raise OutputPathError(f"{flag} {path}: {parent} is a file, not a folder.")
        raise OutputPathError(
            f"{flag} {path}: its folder {parent} does not exist; create it first."
        )
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputPathError(f"{flag} {path}: not writable; choose another {flag}.")
