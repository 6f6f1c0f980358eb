"""Conditional rule application: a boolean condition over a case's attributes; does it apply?

Program (JSON)::

    {"numeric": [67, 80],                        # numeric attribute values
     "flags": [false],                           # boolean attribute values
     "facts": [["numeric", 0], ["flag", 0], ["numeric", 1]],   # the order they are stated
     "op": "and",                                # how the atoms combine: "and" | "or"
     "atoms": [{"kind": "gt", "attr": 0, "threshold": 60},     # numeric[0] > 60
               {"kind": "flag", "attr": 0, "want": true}]}     # flags[0] is true

Attributes no atom mentions are distractors. Steps: one per atom (its value, the
comparison, whether it holds), then one ``combine`` step; the answer is yes / no.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from iga.isomers.families.base import (
    Bindings,
    Family,
    LexiconSpec,
    Program,
    Solution,
    Step,
    is_int,
    require,
    template_spec,
)
from iga.isomers.render import TemplatePicker, join_clauses

OPS = ("and", "or")
_COMPARE = {"gt": lambda value, t: value > t, "lt": lambda value, t: value < t}


@dataclass(frozen=True)
class RulesKnobs:
    """Difficulty: ``n_atoms`` conditions, ``distractors`` unused attributes, the operator."""

    n_atoms: int = 2
    distractors: int = 1
    op: str = "mixed"
    p_yes: float = 0.5
    max_value: int = 99

    def __post_init__(self) -> None:
        if not 1 <= self.n_atoms <= 5:
            raise ValueError(f"rules n_atoms must be in 1..5, got {self.n_atoms}")
        if not 0 <= self.distractors <= 4:
            raise ValueError(f"rules distractors must be in 0..4, got {self.distractors}")
        if self.op not in (*OPS, "mixed"):
            raise ValueError(f"rules op must be 'and', 'or' or 'mixed', got {self.op!r}")
        if not 0.0 <= self.p_yes <= 1.0:
            raise ValueError(f"rules p_yes must be in [0, 1], got {self.p_yes}")
        if self.max_value < 20:
            raise ValueError(f"rules max_value must be >= 20, got {self.max_value}")


def _truths(rng: random.Random, n: int, op: str, yes: bool) -> list[bool]:
    """Atom truth values that make ``op`` over them equal ``yes``."""
    if (op == "and") == yes:  # and-yes: all true; or-no: all false
        return [yes] * n
    flipped = set(rng.sample(range(n), rng.randint(1, n)))  # and-no / or-yes: some flipped
    return [(i in flipped) != yes for i in range(n)]


def _numeric_atom(rng: random.Random, attr: int, holds: bool, top: int) -> tuple[dict, int]:
    kind = rng.choice(("gt", "lt"))
    threshold = rng.randrange(10, top - 9, 5)
    above = rng.randint(threshold + 1, top)
    below = rng.randint(1, threshold - 1)
    value = above if (kind == "gt") == holds else below
    return {"kind": kind, "attr": attr, "threshold": threshold}, value


def sample(rng: random.Random, knobs: RulesKnobs) -> Program:
    op = rng.choice(OPS) if knobs.op == "mixed" else knobs.op
    truths = _truths(rng, knobs.n_atoms, op, rng.random() < knobs.p_yes)
    numeric: list[int] = []
    flags: list[bool] = []
    atoms, facts = [], []
    for holds in truths:
        if rng.random() < 0.5:
            atom, value = _numeric_atom(rng, len(numeric), holds, knobs.max_value)
            numeric.append(value)
        else:
            want = rng.random() < 0.5
            atom = {"kind": "flag", "attr": len(flags), "want": want}
            flags.append(want == holds)
        atoms.append(atom)
        facts.append(["flag" if atom["kind"] == "flag" else "numeric", atom["attr"]])
    for _ in range(knobs.distractors):
        if rng.random() < 0.5:
            facts.append(["numeric", len(numeric)])
            numeric.append(rng.randint(1, knobs.max_value))
        else:
            facts.append(["flag", len(flags)])
            flags.append(rng.random() < 0.5)
    rng.shuffle(facts)
    return {"numeric": numeric, "flags": flags, "facts": facts, "op": op, "atoms": atoms}


def _check(program: Program) -> None:
    numeric, flags = program.get("numeric"), program.get("flags")
    require(isinstance(numeric, list) and all(map(is_int, numeric)), "'numeric' must list ints")
    require(isinstance(flags, list) and all(isinstance(f, bool) for f in flags), "bad 'flags'")
    every = sorted(
        [["numeric", i] for i in range(len(numeric))] + [["flag", i] for i in range(len(flags))]
    )
    facts = program.get("facts")
    require(
        isinstance(facts, list) and sorted(facts) == every, "'facts' must state each attribute once"
    )
    require(program.get("op") in OPS, f"'op' must be one of {OPS}")
    atoms = program.get("atoms")
    require(isinstance(atoms, list) and len(atoms) >= 1, "'atoms' must be a non-empty list")
    for i, atom in enumerate(atoms):
        require(
            isinstance(atom, dict) and atom.get("kind") in ("gt", "lt", "flag"), f"atoms[{i}].kind"
        )
        pool = flags if atom["kind"] == "flag" else numeric
        attr = atom.get("attr")
        require(is_int(attr) and 0 <= attr < len(pool), f"atoms[{i}].attr out of range")
        if atom["kind"] == "flag":
            require(isinstance(atom.get("want"), bool), f"atoms[{i}].want must be a bool")
        else:
            require(is_int(atom.get("threshold")), f"atoms[{i}].threshold must be an int")


def solve(program: Program) -> Solution:
    _check(program)
    steps: list[Step] = []
    for atom in program["atoms"]:
        if atom["kind"] == "flag":
            value = program["flags"][atom["attr"]]
            step = {"kind": "flag", "attr": atom["attr"], "value": value, "want": atom["want"]}
            steps.append(step | {"holds": value == atom["want"]})
        else:
            value = program["numeric"][atom["attr"]]
            holds = _COMPARE[atom["kind"]](value, atom["threshold"])
            steps.append(atom | {"value": value, "holds": holds})
    combine = all if program["op"] == "and" else any
    holds = combine(step["holds"] for step in steps)
    steps.append({"kind": "combine", "op": program["op"], "holds": holds})
    return Solution("yes" if holds else "no", steps)


def needs(knobs: RulesKnobs) -> dict[str, int]:
    total = knobs.n_atoms + knobs.distractors  # worst case: all numeric or all flags
    return {"subjects": 1, "decisions": 1, "numeric": total, "flags": total}


def bind(program: Program, lexicon: Mapping[str, list], rng: random.Random) -> Bindings:
    return {
        "subject": rng.choice(lexicon["subjects"]),
        "decision": rng.choice(lexicon["decisions"]),
        "numeric": [dict(x) for x in rng.sample(lexicon["numeric"], len(program["numeric"]))],
        "flags": [dict(x) for x in rng.sample(lexicon["flags"], len(program["flags"]))],
    }


def _phrase(bindings: Bindings, attr: int, value: bool) -> str:
    flag = bindings["flags"][attr]
    return flag["positive"] if value else flag["negative"]


def prompt(program: Program, bindings: Bindings, pick: TemplatePicker) -> list[str]:
    subject = bindings["subject"]
    sentences = []
    for kind, attr in program["facts"]:
        if kind == "flag":
            phrase = _phrase(bindings, attr, program["flags"][attr])
            sentences.append(pick("flag_fact", {"subject": subject, "phrase": phrase}))
        else:
            slots = {"subject": subject, **bindings["numeric"][attr]}
            sentences.append(pick("numeric_fact", slots | {"value": program["numeric"][attr]}))
    clauses = []
    for atom in program["atoms"]:
        if atom["kind"] == "flag":
            slots = {"subject": subject, "phrase": _phrase(bindings, atom["attr"], atom["want"])}
            clauses.append(pick("atom_flag", slots, capitalize=False))
        else:
            slots = {"subject": subject, **bindings["numeric"][atom["attr"]]}
            slots["threshold"] = atom["threshold"]
            clauses.append(pick(f"atom_{atom['kind']}", slots, capitalize=False))
    base = {"subject": subject, "decision": bindings["decision"]}
    rule = pick("rule", base | {"conditions": join_clauses(clauses, program["op"])})
    return sentences + [rule, pick("question", base)]


def step_lines(
    program: Program, steps: list[Step], bindings: Bindings, pick: TemplatePicker
) -> list[str]:
    subject, lines = bindings["subject"], []
    for step in steps:
        truth = "true" if step["holds"] else "false"
        if step["kind"] == "combine":
            slots = {"subject": subject, "decision": bindings["decision"]}
            lines.append(pick(f"step_{step['op']}_{truth}", slots))
        elif step["kind"] == "flag":
            phrase = _phrase(bindings, step["attr"], step["value"])
            lines.append(pick(f"step_flag_{truth}", {"subject": subject, "phrase": phrase}))
        else:
            slots = {"subject": subject, **bindings["numeric"][step["attr"]]}
            slots |= {"value": step["value"], "threshold": step["threshold"]}
            lines.append(pick(f"step_{step['kind']}_{truth}", slots))
    return lines


def markers(program: Program, step: Step, bindings: Bindings) -> list[str]:
    if step["kind"] == "combine":
        return []
    if step["kind"] == "flag":
        return [_phrase(bindings, step["attr"], step["value"])]
    return [str(step["value"]), str(step["threshold"])]


def wrong_answer(program: Program, answer: str, rng: random.Random) -> str:
    return "no" if answer == "yes" else "yes"


_NUMERIC_STEP = template_spec("subject noun unit value threshold", "value threshold")
_FLAG_STEP = template_spec("subject phrase", "phrase")
_COMBINE_STEP = template_spec("subject decision")

FAMILY = Family(
    name="rules",
    knobs=RulesKnobs,
    lexicon={
        "subjects": LexiconSpec(1),
        "decisions": LexiconSpec(1),
        "numeric": LexiconSpec(3, keys=("noun", "unit"), may_be_empty=("unit",)),
        "flags": LexiconSpec(3, keys=("positive", "negative")),
    },
    templates={
        "numeric_fact": template_spec("subject noun unit value", "noun value"),
        "flag_fact": template_spec("subject phrase", "phrase"),
        "atom_gt": template_spec("subject noun unit threshold", "noun threshold"),
        "atom_lt": template_spec("subject noun unit threshold", "noun threshold"),
        "atom_flag": template_spec("subject phrase", "phrase"),
        "rule": template_spec("subject decision conditions", "conditions"),
        "question": template_spec("subject decision"),
        **{f"step_{k}_{t}": _NUMERIC_STEP for k in ("gt", "lt") for t in ("true", "false")},
        **{f"step_flag_{t}": _FLAG_STEP for t in ("true", "false")},
        **{f"step_{op}_{t}": _COMBINE_STEP for op in OPS for t in ("true", "false")},
    },
    sample=sample,
    solve=solve,
    needs=needs,
    bind=bind,
    prompt=prompt,
    step_lines=step_lines,
    markers=markers,
    wrong_answer=wrong_answer,
)
