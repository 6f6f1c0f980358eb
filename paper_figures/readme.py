"""Keep the project README's copies of built tables equal to the built ones.

The README shows each table between two marker comments, ``<!-- NAME:start -->`` and
``<!-- NAME:end -->``: ``main-table`` (``figures/main_table.md``, pasted by ``python -m
paper_figures --out figures --readme README.md``), ``estimator-table``
(``paper_figures.estimator_figs --readme``), ``curve-table`` and
``curve-compare-table`` (``paper_figures.curve_figs --readme``, with ``--compare`` for
the second) and ``pretrained-table`` (``paper_figures.pretrained_table --readme``).
Tests fail when a copy differs.
"""

from __future__ import annotations

import sys
from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    """(start, end) marker lines of block ``name``."""
    return f"<!-- {name}:start -->\n", f"\n<!-- {name}:end -->"


START, END = markers("main-table")


def shown_table(text: str, where: str = "README", name: str = "main-table") -> str:
    """The table between the markers of ``text``; a clear error when a marker is missing."""
    start, end = markers(name)
    if start not in text or end not in text.split(start, 1)[1]:
        raise ValueError(
            f"{where} has no {name} block: put the line {start.strip()!r} before the "
            f"table and {end.strip()!r} after it."
        )
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def paste_table(readme: Path, table_markdown: str, name: str) -> bool:
    """Replace the block ``name`` of ``readme`` by ``table_markdown``.

    Returns whether the file changed. Nothing is written when a marker is missing.
    """
    start, end = markers(name)
    text = readme.read_text()
    old = shown_table(text, str(readme), name)
    new = table_markdown.strip()
    if old == new:
        return False
    head, rest = text.split(start, 1)
    readme.write_text(head + start + new + end + rest.split(end, 1)[1])
    return True


def paste_and_report(readme: Path, table_markdown: str, name: str, label: str) -> bool:
    """``paste_table`` for a command line: prints ``README: <label> updated`` (or
    ``already current``); on a missing file or marker prints the error to stderr and
    returns False, leaving ``readme`` as it was."""
    try:
        changed = paste_table(readme, table_markdown, name)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return False
    print(f"{readme}: {label} {'updated' if changed else 'already current'}")
    return True


def paste_main_table(readme: Path, table_markdown: str) -> bool:
    """``paste_table`` for the main table."""
    return paste_table(readme, table_markdown, "main-table")
