"""Keep the project README's copy of the main table equal to the built one.

The README shows ``figures/main_table.md`` between two marker comments;
``python -m paper_figures --out figures --readme README.md`` pastes the freshly
built table there, and a test fails when the two differ.
"""

from __future__ import annotations

from pathlib import Path

START = "<!-- main-table:start -->\n"
END = "\n<!-- main-table:end -->"


def shown_table(text: str, where: str = "README") -> str:
    """The table between the markers of ``text``; a clear error when a marker is missing."""
    if START not in text or END not in text.split(START, 1)[1]:
        raise ValueError(
            f"{where} has no main-table block: put the line {START.strip()!r} before the "
            f"table and {END.strip()!r} after it."
        )
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def paste_main_table(readme: Path, table_markdown: str) -> bool:
    """Replace the block between the markers of ``readme`` by ``table_markdown``.

    Returns whether the file changed. Nothing is written when a marker is missing.
    """
    text = readme.read_text()
    old = shown_table(text, str(readme))
    new = table_markdown.strip()
    if old == new:
        return False
    head, rest = text.split(START, 1)
    readme.write_text(head + START + new + END + rest.split(END, 1)[1])
    return True
