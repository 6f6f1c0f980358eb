"""Multi-step arithmetic: a quantity updated by add / subtract / multiply / exact divide.

Program (JSON)::

    {"start": 12,
     "ops": [{"op": "add", "x": 5}, {"op": "mul", "x": 2}],   # applied in order
     "distractors": [{"value": 7, "position": 1}]}            # another holder's amount,
                                                              # stated after op #position
Steps: one per op, ``{"op", "before", "x", "after"}``; the answer is the final value.
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
from iga.isomers.render import TemplatePicker

OPS = ("add", "sub", "mul", "div")
_APPLY = {
    "add": lambda a, x: a + x,
    "sub": lambda a, x: a - x,
    "mul": lambda a, x: a * x,
    "div": lambda a, x: a // x,
}


@dataclass(frozen=True)
class ArithmeticKnobs:
    """Difficulty: ``steps`` operations, ``distractors`` irrelevant amounts, a value cap."""

    steps: int = 2
    distractors: int = 0
    max_value: int = 60
    ops: tuple[str, ...] = OPS

    def __post_init__(self) -> None:
        if not 1 <= self.steps <= 10:
            raise ValueError(f"arithmetic steps must be in 1..10, got {self.steps}")
        if not 0 <= self.distractors <= 4:
            raise ValueError(f"arithmetic distractors must be in 0..4, got {self.distractors}")
        if self.max_value < 10:
            raise ValueError(f"arithmetic max_value must be >= 10, got {self.max_value}")
        ops = tuple(self.ops)
        object.__setattr__(self, "ops", ops)
        if not ops or set(ops) - set(OPS) or not {"add", "sub"} & set(ops):
            raise ValueError(f"arithmetic ops must be a subset of {OPS} with add or sub, got {ops}")


def _feasible(value: int, knobs: ArithmeticKnobs, rng: random.Random) -> list[tuple[str, int]]:
    """(op, operand) choices that keep every value and operand a whole number in 2..max_value.

    Never 1: "1 vials" would break the plural templates.
    """
    top = knobs.max_value
    options: dict[str, list[int]] = {
        "add": list(range(2, min(20, top - value) + 1)),
        "sub": list(range(2, min(20, value - 2) + 1)),
        "mul": [x for x in (2, 3) if value * x <= top],
        "div": [x for x in (2, 3, 4, 5) if value % x == 0 and value // x >= 2],
    }
    return [(op, rng.choice(options[op])) for op in knobs.ops if options[op]]


def sample(rng: random.Random, knobs: ArithmeticKnobs) -> Program:
    start = rng.randint(4, knobs.max_value // 2)
    value, ops = start, []
    for _ in range(knobs.steps):
        # Nothing in `ops` fits (say sub-only at a small value): a small add keeps going.
        choices = _feasible(value, knobs, rng) or [("add", rng.randint(2, 5))]
        op, x = rng.choice(choices)
        ops.append({"op": op, "x": x})
        value = _APPLY[op](value, x)
    distractors = [
        {"value": rng.randint(2, knobs.max_value), "position": rng.randint(0, knobs.steps)}
        for _ in range(knobs.distractors)
    ]
    return {"start": start, "ops": ops, "distractors": distractors}


def solve(program: Program) -> Solution:
    require(is_int(program.get("start")), "arithmetic program needs an integer 'start'")
    ops = program.get("ops")
    require(
        isinstance(ops, list) and len(ops) > 0, "arithmetic program needs a non-empty 'ops' list"
    )
    value, steps = program["start"], []
    for i, item in enumerate(ops):
        require(isinstance(item, dict), f"ops[{i}] must be an object")
        op, x = item.get("op"), item.get("x")
        require(op in OPS, f"ops[{i}].op must be one of {OPS}, got {op!r}")
        require(is_int(x), f"ops[{i}].x must be an integer, got {x!r}")
        if op == "div":
            require(x != 0 and value % x == 0, f"ops[{i}]: {value} / {x} is not an exact division")
        after = _APPLY[op](value, x)
        steps.append({"op": op, "before": value, "x": x, "after": after})
        value = after
    _check_distractors(program.get("distractors", []), len(ops))
    return Solution(answer=str(value), steps=steps)


def _check_distractors(distractors: object, n_ops: int) -> None:
    require(isinstance(distractors, list), "'distractors' must be a list")
    for i, item in enumerate(distractors):
        ok = isinstance(item, dict) and is_int(item.get("value")) and is_int(item.get("position"))
        require(ok, f"distractors[{i}] must be {{'value': int, 'position': int}}")
        require(0 <= item["position"] <= n_ops, f"distractors[{i}].position out of 0..{n_ops}")


def needs(knobs: ArithmeticKnobs) -> dict[str, int]:
    return {"holders": 1 + knobs.distractors, "units": 1}


def bind(program: Program, lexicon: Mapping[str, list], rng: random.Random) -> Bindings:
    holders = rng.sample(lexicon["holders"], 1 + len(program["distractors"]))
    return {"holder": holders[0], "unit": rng.choice(lexicon["units"]), "others": holders[1:]}


def prompt(program: Program, bindings: Bindings, pick: TemplatePicker) -> list[str]:
    base = {"holder": bindings["holder"], "unit": bindings["unit"]}
    after_op: list[list[str]] = [[] for _ in range(len(program["ops"]) + 1)]
    for other, item in zip(bindings["others"], program["distractors"]):
        slots = {"other": other, "unit": bindings["unit"], "value": item["value"]}
        after_op[item["position"]].append(pick("distractor", slots))
    sentences = [pick("intro", base | {"start": program["start"]}), *after_op[0]]
    for i, item in enumerate(program["ops"]):
        sentences += [pick(item["op"], base | {"x": item["x"]}), *after_op[i + 1]]
    return sentences + [pick("question", base)]


def step_lines(
    program: Program, steps: list[Step], bindings: Bindings, pick: TemplatePicker
) -> list[str]:
    base = {"holder": bindings["holder"], "unit": bindings["unit"]}
    return [
        pick(f"step_{s['op']}", base | {"before": s["before"], "x": s["x"], "after": s["after"]})
        for s in steps
    ]


def markers(program: Program, step: Step, bindings: Bindings) -> list[str]:
    return [str(step["x"]), str(step["after"])]


def wrong_answer(program: Program, answer: str, rng: random.Random) -> str:
    value = int(answer)
    candidates = {value + d for d in (-3, -2, -1, 1, 2, 3) if value + d >= 0}
    candidates.add(solve(program).steps[-1]["before"])
    candidates.discard(value)
    return str(rng.choice(sorted(candidates)))


_OP_SLOTS = template_spec("holder unit x", "x")
_STEP_SLOTS = template_spec("holder unit before x after", "x after")

FAMILY = Family(
    name="arithmetic",
    knobs=ArithmeticKnobs,
    lexicon={"holders": LexiconSpec(2), "units": LexiconSpec(1)},
    templates={
        "intro": template_spec("holder unit start", "start"),
        **{op: _OP_SLOTS for op in OPS},
        "distractor": template_spec("other unit value", "other value"),
        "question": template_spec("holder unit"),
        **{f"step_{op}": _STEP_SLOTS for op in OPS},
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
