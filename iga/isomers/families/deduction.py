"""Deductive rule chains: facts plus if-then rules (some distractors); is the query derivable?

Program (JSON)::

    {"n_props": 6,                      # abstract propositions 0..n_props-1
     "facts": [0],                      # propositions stated as true
     "rules": [[0, 1], [4, 5], [1, 2]], # [premise, conclusion]: "if premise then conclusion"
     "query": 2}

The solver forward-chains to a fixpoint (closed world: what is not derived is not
established). Steps: for ``yes`` the proof, one ``derive`` per rule used from a fact
to the query; for ``no`` every derivation made, then one ``missing`` step for the query.
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


@dataclass(frozen=True)
class DeductionKnobs:
    """Difficulty: a chain of ``depth`` rules, ``distractors`` unrelated rules, P(yes)."""

    depth: int = 2
    distractors: int = 1
    p_yes: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= 8:
            raise ValueError(f"deduction depth must be in 1..8, got {self.depth}")
        if not 0 <= self.distractors <= 5:
            raise ValueError(f"deduction distractors must be in 0..5, got {self.distractors}")
        if not 0.0 <= self.p_yes <= 1.0:
            raise ValueError(f"deduction p_yes must be in [0, 1], got {self.p_yes}")


def sample(rng: random.Random, knobs: DeductionKnobs) -> Program:
    # The chain 0 -> 1 -> ... -> depth reaches the query from the fact; a "no" problem
    # breaks one link by giving it a premise nothing establishes.
    yes = rng.random() < knobs.p_yes
    depth, fresh = knobs.depth, iter(range(knobs.depth + 1, 10**6))
    rules = [[i, i + 1] for i in range(depth)]
    if not yes:
        broken = rng.randrange(depth)
        rules[broken] = [next(fresh), broken + 1]
    rules += [[next(fresh), next(fresh)] for _ in range(knobs.distractors)]
    rng.shuffle(rules)
    n_props = next(fresh)
    return {"n_props": n_props, "facts": [0], "rules": rules, "query": depth}


def _check(program: Program) -> None:
    n = program.get("n_props")
    require(is_int(n) and n >= 1, "deduction program needs an integer 'n_props' >= 1")

    def prop(value: object) -> bool:
        return is_int(value) and 0 <= value < n

    facts, rules = program.get("facts"), program.get("rules")
    require(isinstance(facts, list) and facts and all(map(prop, facts)), "bad 'facts'")
    require(isinstance(rules, list), "deduction program needs a 'rules' list")
    for i, rule in enumerate(rules):
        ok = isinstance(rule, list) and len(rule) == 2 and all(map(prop, rule))
        require(ok, f"rules[{i}] must be [premise, conclusion] with ids in 0..{n - 1}")
    require(prop(program.get("query")), f"'query' must be a proposition id in 0..{n - 1}")


def solve(program: Program) -> Solution:
    _check(program)
    facts, query = set(program["facts"]), program["query"]
    known, derivations = set(facts), []
    changed = True
    while changed:
        changed = False
        for premise, conclusion in program["rules"]:
            if premise in known and conclusion not in known:
                known.add(conclusion)
                derivations.append({"kind": "derive", "premise": premise, "conclusion": conclusion})
                changed = True
    if query in facts:
        return Solution("yes", [{"kind": "given", "prop": query}])
    if query not in known:
        return Solution("no", derivations + [{"kind": "missing", "prop": query}])
    by_conclusion = {d["conclusion"]: d for d in derivations}
    proof, prop = [], query
    while prop not in facts:
        proof.append(by_conclusion[prop])
        prop = by_conclusion[prop]["premise"]
    return Solution("yes", proof[::-1])


def needs(knobs: DeductionKnobs) -> dict[str, int]:
    return {"subjects": 1, "predicates": knobs.depth + 2 + 2 * knobs.distractors}


def bind(program: Program, lexicon: Mapping[str, list], rng: random.Random) -> Bindings:
    return {
        "subject": rng.choice(lexicon["subjects"]),
        "props": rng.sample(lexicon["predicates"], program["n_props"]),
    }


def prompt(program: Program, bindings: Bindings, pick: TemplatePicker) -> list[str]:
    subject, props = bindings["subject"], bindings["props"]
    sentences = [pick("fact", {"subject": subject, "p": props[f]}) for f in program["facts"]]
    for premise, conclusion in program["rules"]:
        slots = {"subject": subject, "p": props[premise], "q": props[conclusion]}
        sentences.append(pick("rule", slots))
    return sentences + [pick("question", {"subject": subject, "q": props[program["query"]]})]


def step_lines(
    program: Program, steps: list[Step], bindings: Bindings, pick: TemplatePicker
) -> list[str]:
    subject, props = bindings["subject"], bindings["props"]
    lines = []
    for step in steps:
        if step["kind"] == "derive":
            slots = {"p": props[step["premise"]], "q": props[step["conclusion"]]}
            lines.append(pick("step_derive", {"subject": subject, **slots}))
        else:  # "missing" or "given"
            lines.append(
                pick(f"step_{step['kind']}", {"subject": subject, "q": props[step["prop"]]})
            )
    return lines


def markers(program: Program, step: Step, bindings: Bindings) -> list[str]:
    props = bindings["props"]
    if step["kind"] == "derive":
        return [props[step["premise"]], props[step["conclusion"]]]
    return [props[step["prop"]]]


def wrong_answer(program: Program, answer: str, rng: random.Random) -> str:
    return "no" if answer == "yes" else "yes"


FAMILY = Family(
    name="deduction",
    knobs=DeductionKnobs,
    lexicon={"subjects": LexiconSpec(1), "predicates": LexiconSpec(6)},
    templates={
        "fact": template_spec("subject p", "p"),
        "rule": template_spec("subject p q", "p q"),
        "question": template_spec("subject q", "q"),
        "step_derive": template_spec("subject p q", "p q"),
        "step_missing": template_spec("subject q", "q"),
        "step_given": template_spec("subject q", "q"),
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
