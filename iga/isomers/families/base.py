"""What every problem family provides: sampling, an independent solver, and rendering hooks.

A family is a plain record of functions (no class hierarchy). The *program* is the
domain-free logical content of a problem (numbers, abstract proposition ids, entity
labels); the solver reads only the program, never rendered text. *Bindings* map the
program's abstract symbols to one domain's words; they are recorded in each isomer's
metadata so the validator can check a rationale step by step.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iga.isomers.render import TemplatePicker

Program = dict[str, Any]  # JSON-ready: dicts, lists, ints, strings, bools only
Step = dict[str, Any]
Bindings = dict[str, Any]


class ProgramError(ValueError):
    """A skeleton program is malformed (missing key, out-of-range id, inexact division)."""


@dataclass(frozen=True)
class Solution:
    """What the solver derives from a program: the answer token and the reasoning steps."""

    answer: str
    steps: list[Step]


@dataclass(frozen=True)
class LexiconSpec:
    """One lexicon list a family needs: at least ``min_count`` entries.

    Entries are strings when ``keys`` is empty, else objects with exactly these
    string fields (an ordering scale: ``noun, more, less, most, least``).
    """

    min_count: int
    keys: tuple[str, ...] = ()
    may_be_empty: tuple[str, ...] = ()  # object fields allowed to be "" (a unit-less noun)


@dataclass(frozen=True)
class TemplateSpec:
    """Slots a template may use, and those it must use (the validator looks for them)."""

    allowed: frozenset[str]
    required: frozenset[str] = frozenset()


def template_spec(allowed: str, required: str = "") -> TemplateSpec:
    """Shorthand: ``template_spec("holder unit x", "x")``."""
    return TemplateSpec(frozenset(allowed.split()), frozenset(required.split()))


@dataclass(frozen=True)
class Family:
    """A benchmark family: the functions that sample, solve and render its problems."""

    name: str
    knobs: type  # a dataclass of difficulty knobs with defaults
    lexicon: Mapping[str, LexiconSpec]
    templates: Mapping[str, TemplateSpec]
    sample: Callable[[random.Random, Any], Program]
    solve: Callable[[Program], Solution]
    needs: Callable[[Any], dict[str, int]]  # knobs -> least lexicon size per key
    bind: Callable[[Program, Mapping[str, list], random.Random], Bindings]
    prompt: Callable[[Program, Bindings, TemplatePicker], list[str]]  # sentences
    step_lines: Callable[[Program, list[Step], Bindings, TemplatePicker], list[str]]
    markers: Callable[[Program, Step, Bindings], list[str]]  # must appear in the step's line
    wrong_answer: Callable[[Program, str, random.Random], str]

    def make_knobs(self, **values: Any) -> Any:
        """The family's knobs with ``values`` applied; unknown names raise a TypeError."""
        names = [f.name for f in dataclasses.fields(self.knobs)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(
                f"family {self.name!r} has no knob {', '.join(unknown)}; its knobs are {names}"
            )
        return self.knobs(**values)


def require(condition: bool, reason: str) -> None:
    """Raise :class:`ProgramError` with ``reason`` unless ``condition`` holds."""
    if not condition:
        raise ProgramError(reason)


def is_int(value: Any) -> bool:
    """A JSON integer (bools excluded)."""
    return isinstance(value, int) and not isinstance(value, bool)
