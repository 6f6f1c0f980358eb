"""The single place that reads answers from text, for teacher rationales and students alike.

A completion ends with one answer line, ``Answer: <token>``. Answers are single tokens:
an integer (arithmetic), ``yes`` / ``no`` (deduction, rules, pairwise ordering) or an
entity label such as ``K`` (ordering extremes). Everything else in the project compares
answers through :func:`normalize_answer`, so ``"Answer: Yes."`` and ``"yes"`` agree.
"""

from __future__ import annotations

import re

ANSWER_PREFIX = "Answer:"

# The first line that starts with the prefix; a student may keep generating after it,
# and the first commitment is the one we grade.
_ANSWER_LINE = re.compile(r"^[ \t]*answer[ \t]*:[ \t]*(\S*)", re.IGNORECASE | re.MULTILINE)
_STRIP = " \t\"'`*.,;:!?()[]"
_BOOLEAN = {"yes": "yes", "no": "no", "true": "yes", "false": "no"}
_INTEGER = re.compile(r"^[+-]?\d+(\.0+)?$")


def format_answer_line(answer: str) -> str:
    """The answer line that ends every rationale: ``"Answer: 14"``."""
    return f"{ANSWER_PREFIX} {normalize_answer(answer)}"


def normalize_answer(text: str) -> str:
    """Canonical form of one answer token.

    ``yes``/``no`` (also ``true``/``false``) lower-case; integers as plain decimals
    (``"+07"`` -> ``"7"``, ``"14.0"`` -> ``"14"``); single letters upper-case
    (entity labels); anything else stripped of surrounding punctuation, case kept.
    """
    token = text.strip().strip(_STRIP)
    lowered = token.lower()
    if lowered in _BOOLEAN:
        return _BOOLEAN[lowered]
    if _INTEGER.match(token):
        return str(int(float(token)))
    if len(token) == 1 and token.isalpha():
        return token.upper()
    return token


def extract_answer(text: str) -> str | None:
    """The normalized answer of the first ``Answer:`` line in ``text``, or None.

    Only the first whitespace-separated token after the prefix counts, so
    ``"Answer: 14 vials"`` reads as ``"14"``. None when no answer line exists or
    the line is empty.
    """
    match = _ANSWER_LINE.search(text)
    if match is None:
        return None
    answer = normalize_answer(match.group(1))
    return answer or None


def is_single_token(answer: str) -> bool:
    """Whether ``answer`` is a non-empty token without whitespace (the schema's rule)."""
    return bool(answer) and not any(ch.isspace() for ch in answer)
