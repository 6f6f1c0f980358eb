"""Readable views of one isomer set: domains side by side (text) or a Markdown table."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from itertools import zip_longest

from iga.isomers.schema import IsomerSet

_ROWS = ("prompt", "rationale")


def _pick_domains(iset: IsomerSet, domains: Sequence[str] | None) -> list[str]:
    chosen = list(domains) if domains else iset.domains
    unknown = [d for d in chosen if d not in iset.isomers]
    if unknown:
        raise ValueError(f"set {iset.set_id} has no domain(s) {unknown}; it has {iset.domains}")
    return chosen


def _header(iset: IsomerSet) -> str:
    sk = iset.skeleton
    return (
        f"{iset.set_id}  family={iset.family}  answer={sk.answer}  "
        f"steps={sk.n_steps}  hash={sk.hash}"
    )


def side_by_side(iset: IsomerSet, domains: Sequence[str] | None = None, width: int = 140) -> str:
    """The set's isomers in columns, one per domain: prompt, then rationale."""
    chosen = _pick_domains(iset, domains)
    col = max(16, (width - 3 * (len(chosen) - 1)) // len(chosen))
    out = [_header(iset), " | ".join(d.upper().ljust(col) for d in chosen)]
    out.append("-+-".join("-" * col for _ in chosen))
    for row in _ROWS:
        cells = []
        for domain in chosen:
            text = getattr(iset.isomers[domain], row)
            cells.append(
                [w for para in text.splitlines() for w in textwrap.wrap(para, col) or [""]]
            )
        for parts in zip_longest(*cells, fillvalue=""):
            out.append(" | ".join(p.ljust(col) for p in parts).rstrip())
        out.append("-+-".join("-" * col for _ in chosen))
    return "\n".join(out)


def markdown_table(iset: IsomerSet, domains: Sequence[str] | None = None) -> str:
    """The set as a Markdown table (a column per domain), for READMEs and reports."""
    chosen = _pick_domains(iset, domains)

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = [f"`{_header(iset)}`", "", "| | " + " | ".join(chosen) + " |"]
    lines.append("|---|" + "---|" * len(chosen))
    for row in _ROWS:
        values = [cell(getattr(iset.isomers[d], row)) for d in chosen]
        lines.append(f"| **{row}** | " + " | ".join(values) + " |")
    return "\n".join(lines)
