"""Template filling: ``{slot}`` placeholders replaced by lexicon words and numbers.

Templates use plain ``{name}`` slots only (no format specs, no attribute access), so a
domain data file cannot run code or leave half-filled text behind: a missing slot
raises, and :func:`placeholders` finds anything that still looks like one.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping

_PLACEHOLDER = re.compile(r"[{}]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,;:?!])")
_MULTI_SPACE = re.compile(r"[ \t]{2,}")


class TemplateError(ValueError):
    """A template is malformed or refers to a slot that has no value."""


def template_slots(template: str) -> set[str]:
    """Names of the ``{slot}`` fields in ``template``; raises on anything but plain names."""
    slots: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise TemplateError(f"template {template!r}: {err}") from None
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise TemplateError(
                f"template {template!r}: slot {{{field}}} must be a plain name like {{holder}}"
            )
        slots.add(field)
    return slots


def fill(template: str, slots: Mapping[str, object], *, capitalize: bool = True) -> str:
    """``template`` with every slot replaced; capitalizes the first letter of a sentence.

    Whitespace is tidied so an empty value (a unit-less quantity) leaves no gap:
    ``"{value} {unit}."`` with ``unit=""`` gives ``"7."``.
    """
    missing = template_slots(template) - set(slots)
    if missing:
        raise TemplateError(f"template {template!r}: no value for {sorted(missing)}")
    text = template.format_map(dict(slots))
    text = _MULTI_SPACE.sub(" ", _SPACE_BEFORE_PUNCT.sub(r"\1", text)).strip()
    if capitalize and text:
        text = text[0].upper() + text[1:]
    return text


def placeholders(text: str) -> list[str]:
    """Brace characters left in rendered text (an unfilled slot); empty when clean."""
    return _PLACEHOLDER.findall(text)


def join_clauses(clauses: Iterable[str], conjunction: str) -> str:
    """``a``; ``a and b``; ``a, b and c``."""
    items = list(clauses)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


class TemplatePicker:
    """Fills templates chosen at random (seeded) from a domain's lists, one key at a time.

    ``templates`` maps a template key (``"add"``, ``"step_derive"``) to its
    alternatives; the choice varies the surface inside one domain.
    """

    def __init__(self, templates: Mapping[str, list[str]], rng) -> None:
        self._templates = templates
        self._rng = rng

    def __call__(self, key: str, slots: Mapping[str, object], *, capitalize: bool = True) -> str:
        options = self._templates.get(key)
        if not options:
            raise TemplateError(f"no templates for {key!r}")
        return fill(self._rng.choice(options), slots, capitalize=capitalize)
