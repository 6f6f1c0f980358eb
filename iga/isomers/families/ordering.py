"""Transitive ordering: pairwise comparisons among n entities; ask the extreme or a pair.

Program (JSON)::

    {"labels": ["K", "D", "F"],                  # entity labels, the same in every domain
     "facts": [[0, 1, "more"], [2, 1, "less"]],  # labels[i] is more / less than labels[j]
     "query": {"kind": "most"}}                  # or "least", or {"kind": "pair", "a": 2, "b": 0}

The facts are the n - 1 adjacent links of one hidden ranking, so the order is total.
Steps: the ``link``s walked from the top (all of them for an extreme, the stretch
between the two for a pair), then one conclusion step. Labels are domain-free, so the
answer (a label or yes/no) is identical across isomers.

The chain rationale opens with the top link, so a student must rank the entities
before writing its first line. The ``rationale="restate"`` knob (stored in the program
as ``"rationale": "restate"``; absent means ``"chain"``) writes instead every fact as
a ``more`` link in the order the prompt states them, each line the rewording of one
prompt sentence, then the conclusion: the same answer, reached one fact at a time.
``rationale="walk"`` restates the facts so too, then, for a top (bottom) query, walks
from the upper (lower) entity of the first restated link to the entity above (below)
it, one line per move ("Interval F is wider than interval B."), until a line says
nothing is ("No interval is wider than interval F."): the extreme is found by
lookups of one entity at a time instead of being named outright.
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

# Consonants only: no label reads as an English word ("A", "I", "O").
LABELS = tuple("BCDFGHJKLMNPRSTVWXZ")
QUERIES = ("most", "least", "pair")
RATIONALES = ("chain", "restate", "walk")


@dataclass(frozen=True)
class OrderingKnobs:
    """Difficulty: ``n_entities`` in the ranking; ``query`` kind (``mixed`` draws one);
    ``rationale``: the teacher's ``chain`` from the top, ``restate`` or ``walk`` (module doc)."""

    n_entities: int = 3
    query: str = "mixed"
    rationale: str = "chain"

    def __post_init__(self) -> None:
        if not 2 <= self.n_entities <= 10:
            raise ValueError(f"ordering n_entities must be in 2..10, got {self.n_entities}")
        if self.query not in (*QUERIES, "mixed"):
            raise ValueError(
                f"ordering query must be one of {QUERIES} or 'mixed', got {self.query!r}"
            )
        if self.rationale not in RATIONALES:
            raise ValueError(
                f"ordering rationale must be one of {RATIONALES}, got {self.rationale!r}"
            )


def sample(rng: random.Random, knobs: OrderingKnobs) -> Program:
    n = knobs.n_entities
    labels = rng.sample(LABELS, n)
    ranking = rng.sample(range(n), n)  # ranking[0] is the top entity
    facts = []
    for upper, lower in zip(ranking, ranking[1:]):
        facts.append([upper, lower, "more"] if rng.random() < 0.5 else [lower, upper, "less"])
    rng.shuffle(facts)
    kind = rng.choice(QUERIES) if knobs.query == "mixed" else knobs.query
    query: dict = {"kind": kind}
    if kind == "pair":
        query["a"], query["b"] = rng.sample(range(n), 2)
    program = {"labels": labels, "facts": facts, "query": query}
    if knobs.rationale != "chain":  # after every draw: the same problems either way
        program["rationale"] = knobs.rationale
    return program


def _chain(program: Program) -> list[int]:
    """Entity ids from top to bottom; raises unless the facts form one total order."""
    labels = program.get("labels")
    ok = isinstance(labels, list) and len(labels) >= 2
    ok = ok and all(isinstance(x, str) and x.strip() == x and x for x in labels)
    require(ok and len(set(labels)) == len(labels), "'labels' must be >= 2 distinct tokens")
    n, below = len(labels), {}
    facts = program.get("facts")
    require(isinstance(facts, list) and len(facts) == n - 1, f"'facts' must hold {n - 1} links")
    for k, fact in enumerate(facts):
        ok = isinstance(fact, list) and len(fact) == 3 and fact[2] in ("more", "less")
        ok = ok and all(is_int(i) and 0 <= i < n for i in fact[:2]) and fact[0] != fact[1]
        require(ok, f"facts[{k}] must be [i, j, 'more'|'less'] with distinct ids in 0..{n - 1}")
        upper, lower = fact[:2] if fact[2] == "more" else fact[1::-1]
        require(upper not in below, f"facts[{k}]: entity {upper} is ranked above two entities")
        below[upper] = lower
    tops = set(range(n)) - set(below.values())
    require(len(tops) == 1, "the facts must rank all entities in one chain")
    chain = [tops.pop()]
    while chain[-1] in below and len(chain) <= n:
        chain.append(below[chain[-1]])
    require(len(chain) == n, "the facts must rank all entities in one chain")
    return chain


def solve(program: Program) -> Solution:
    chain = _chain(program)
    labels, query = program["labels"], program.get("query")
    require(isinstance(query, dict) and query.get("kind") in QUERIES, f"'query.kind' in {QUERIES}")
    kind = query["kind"]
    rationale = program.get("rationale", "chain")
    require(rationale in RATIONALES, f"'rationale' must be one of {RATIONALES}")
    if kind == "pair":
        ids = (query.get("a"), query.get("b"))
        ok = all(is_int(i) and 0 <= i < len(labels) for i in ids) and ids[0] != ids[1]
        require(ok, "a pair query needs distinct entity ids 'a' and 'b'")
        pos_a, pos_b = chain.index(ids[0]), chain.index(ids[1])
        lo, hi = sorted((pos_a, pos_b))
    else:
        lo, hi = 0, len(chain) - 1
    if rationale != "chain":  # every fact as a "more" link, in the prompt's order
        steps: list[Step] = [
            {"kind": "link", "upper": i, "lower": j} if rel == "more" else
            {"kind": "link", "upper": j, "lower": i}
            for i, j, rel in program["facts"]
        ]  # fmt: skip
    else:
        steps = [{"kind": "link", "upper": chain[k], "lower": chain[k + 1]} for k in range(lo, hi)]
    if kind == "pair":
        holds = pos_a < pos_b
        steps.append({"kind": "pair", "a": ids[0], "b": ids[1], "holds": holds})
        return Solution("yes" if holds else "no", steps)
    entity = chain[0] if kind == "most" else chain[-1]
    if rationale == "walk":
        steps += _walk(steps, up=kind == "most")
    steps.append({"kind": kind, "entity": entity})
    return Solution(labels[entity], steps)


def _walk(links: list[Step], up: bool) -> list[Step]:
    """From the first link's upper (``up``) or lower entity, one ``above`` / ``below``
    step per move to the neighbour on that side, the last with ``other`` None."""
    side, toward = ("lower", "upper") if up else ("upper", "lower")
    neighbour = {link[side]: link[toward] for link in links}
    entity, kind, steps = links[0][toward], ("above" if up else "below"), []
    while True:
        other = neighbour.get(entity)
        steps.append({"kind": kind, "entity": entity, "other": other})
        if other is None:
            return steps
        entity = other


def needs(knobs: OrderingKnobs) -> dict[str, int]:
    return {"scales": 1}


def bind(program: Program, lexicon: Mapping[str, list], rng: random.Random) -> Bindings:
    return dict(rng.choice(lexicon["scales"]))


def prompt(program: Program, bindings: Bindings, pick: TemplatePicker) -> list[str]:
    labels, query = program["labels"], program["query"]
    sentences = []
    for i, j, relation in program["facts"]:
        slots = {"noun": bindings["noun"], "a": labels[i], "b": labels[j]}
        sentences.append(pick(f"fact_{relation}", slots | {relation: bindings[relation]}))
    slots = {"noun": bindings["noun"], "more": bindings["more"]}
    if query["kind"] == "pair":
        slots |= {"a": labels[query["a"]], "b": labels[query["b"]]}
    else:
        slots = {"noun": bindings["noun"], query["kind"]: bindings[query["kind"]]}
    return sentences + [pick(f"question_{query['kind']}", slots)]


def step_lines(
    program: Program, steps: list[Step], bindings: Bindings, pick: TemplatePicker
) -> list[str]:
    labels, lines = program["labels"], []
    noun, more = bindings["noun"], bindings["more"]
    for step in steps:
        kind = step["kind"]
        if kind == "link":
            slots = {"noun": noun, "a": labels[step["upper"]], "b": labels[step["lower"]]}
            lines.append(pick("step_link", slots | {"more": more}))
        elif kind == "pair":
            slots = {"noun": noun, "a": labels[step["a"]], "b": labels[step["b"]], "more": more}
            lines.append(pick("step_pair_yes" if step["holds"] else "step_pair_no", slots))
        elif kind in ("above", "below"):  # "walk": the neighbour on that side, or none
            word = "more" if kind == "above" else "less"
            slots = {"noun": noun, word: bindings[word], "a": labels[step["entity"]]}
            if step["other"] is None:
                lines.append(pick(f"step_none_{word}", slots))
            else:
                slots |= {"a": labels[step["other"]], "b": labels[step["entity"]]}
                lines.append(pick("step_link" if word == "more" else "step_link_less", slots))
        else:  # "most" / "least"
            slots = {"noun": noun, "a": labels[step["entity"]], kind: bindings[kind]}
            lines.append(pick(f"step_{kind}", slots))
    return lines


def markers(program: Program, step: Step, bindings: Bindings) -> list[str]:
    labels = program["labels"]
    keys = {"link": ("upper", "lower"), "pair": ("a", "b")}.get(step["kind"], ("entity",))
    if step["kind"] in ("above", "below") and step["other"] is not None:
        keys = ("entity", "other")
    return [labels[step[key]] for key in keys]


def wrong_answer(program: Program, answer: str, rng: random.Random) -> str:
    if answer in ("yes", "no"):
        return "no" if answer == "yes" else "yes"
    return rng.choice([label for label in program["labels"] if label != answer])


_PAIR = template_spec("noun a b more", "a b")

FAMILY = Family(
    name="ordering",
    knobs=OrderingKnobs,
    lexicon={"scales": LexiconSpec(1, keys=("noun", "more", "less", "most", "least"))},
    templates={
        "fact_more": template_spec("noun a b more", "a b more"),
        "fact_less": template_spec("noun a b less", "a b less"),
        "question_most": template_spec("noun most", "most"),
        "question_least": template_spec("noun least", "least"),
        "question_pair": template_spec("noun a b more", "a b more"),
        "step_link": _PAIR,
        "step_link_less": template_spec("noun a b less", "a b"),
        "step_none_more": template_spec("noun a more", "a"),
        "step_none_less": template_spec("noun a less", "a"),
        "step_most": template_spec("noun a most", "a"),
        "step_least": template_spec("noun a least", "a"),
        "step_pair_yes": _PAIR,
        "step_pair_no": _PAIR,
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
