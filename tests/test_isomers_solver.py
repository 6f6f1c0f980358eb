"""The independent solver on hand-checked programs, random programs, and malformed ones."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from iga.isomers import FAMILIES, ProgramError, solve
from iga.isomers.families import get_family


def test_arithmetic_by_hand():
    program = {
        "start": 12,
        "ops": [{"op": "add", "x": 6}, {"op": "div", "x": 3}, {"op": "mul", "x": 5}],
        "distractors": [{"value": 9, "position": 1}],
    }
    solution = solve("arithmetic", program)
    assert solution.answer == "30"  # (12 + 6) / 3 * 5
    assert [s["after"] for s in solution.steps] == [18, 6, 30]


def test_deduction_yes_proof_and_no_closure():
    rules = [[1, 2], [3, 4], [0, 1]]
    yes = solve("deduction", {"n_props": 5, "facts": [0], "rules": rules, "query": 2})
    assert yes.answer == "yes"
    assert [(s["premise"], s["conclusion"]) for s in yes.steps] == [(0, 1), (1, 2)]
    no = solve("deduction", {"n_props": 5, "facts": [0], "rules": rules, "query": 4})
    assert no.answer == "no"
    assert no.steps[-1] == {"kind": "missing", "prop": 4}
    assert len(no.steps) == 3  # both derivations made, then the missing query


def test_deduction_proof_skips_unused_derivations():
    program = {"n_props": 4, "facts": [0], "rules": [[0, 3], [0, 1], [1, 2]], "query": 2}
    solution = solve("deduction", program)
    assert [s["conclusion"] for s in solution.steps] == [1, 2]


def test_ordering_extremes_and_pairs():
    # Ranking K > D > F, stated as D < K and D > F.
    program = {"labels": ["K", "D", "F"], "facts": [[1, 0, "less"], [1, 2, "more"]]}
    assert solve("ordering", program | {"query": {"kind": "most"}}).answer == "K"
    assert solve("ordering", program | {"query": {"kind": "least"}}).answer == "F"
    pair = solve("ordering", program | {"query": {"kind": "pair", "a": 2, "b": 0}})
    assert pair.answer == "no"
    assert [s["kind"] for s in pair.steps] == ["link", "link", "pair"]
    adjacent = solve("ordering", program | {"query": {"kind": "pair", "a": 0, "b": 1}})
    assert adjacent.answer == "yes" and len(adjacent.steps) == 2


def test_ordering_restate_rationale_links_the_facts_in_prompt_order():
    # Ranking K > D > F, stated as D < K and D > F: restated as K > D, then D > F.
    program = {"labels": ["K", "D", "F"], "facts": [[1, 0, "less"], [1, 2, "more"]]}
    for query, answer in (({"kind": "least"}, "F"), ({"kind": "pair", "a": 2, "b": 0}, "no")):
        restate = solve("ordering", program | {"query": query, "rationale": "restate"})
        assert restate.answer == answer == solve("ordering", program | {"query": query}).answer
        links = [(s["upper"], s["lower"]) for s in restate.steps if s["kind"] == "link"]
        assert links == [(0, 1), (1, 2)]  # every fact, even where a pair needs fewer
    flipped = program | {"facts": program["facts"][::-1], "query": {"kind": "most"}}
    steps = solve("ordering", flipped | {"rationale": "restate"}).steps
    assert [(s["upper"], s["lower"]) for s in steps[:2]] == [(1, 2), (0, 1)]
    with pytest.raises(ProgramError, match="'rationale' must be one of"):
        solve("ordering", flipped | {"rationale": "shuffled"})


def test_ordering_walk_rationale_moves_to_the_extreme_one_neighbour_at_a_time():
    # Ranking K > D > F, stated as D > F and D < K: restated as D > F, then K > D.
    program = {"labels": ["K", "D", "F"], "facts": [[1, 2, "more"], [1, 0, "less"]]}
    most = solve("ordering", program | {"query": {"kind": "most"}, "rationale": "walk"})
    assert most.answer == "K"
    assert [s for s in most.steps if s["kind"] == "above"] == [
        {"kind": "above", "entity": 1, "other": 0},  # from D (first link's upper): K is above
        {"kind": "above", "entity": 0, "other": None},  # nothing is above K
    ]
    least = solve("ordering", program | {"query": {"kind": "least"}, "rationale": "walk"})
    assert least.answer == "F"
    assert [s for s in least.steps if s["kind"] == "below"] == [
        {"kind": "below", "entity": 2, "other": None},  # from F (first link's lower)
    ]
    pair = solve(
        "ordering", program | {"query": {"kind": "pair", "a": 0, "b": 2}, "rationale": "walk"}
    )
    assert pair.answer == "yes" and [s["kind"] for s in pair.steps] == ["link", "link", "pair"]


def test_ordering_walk_lines_read_as_english():
    from iga.isomers import generate_sets

    checked = 0
    for s in generate_sets("ordering", ["mathematics"], 30, seed=1, rationale="walk"):
        lines = s.isomers["mathematics"].rationale.split("\n")
        if s.skeleton.program["query"]["kind"] == "most":
            checked += 1
            b = s.isomers["mathematics"].metadata["bindings"]
            assert lines[-3] == f"No {b['noun']} is {b['more']} {b['noun']} {s.skeleton.answer}."
            assert lines[-2].endswith(f"{s.skeleton.answer} is the {b['most']}.")
    assert checked > 0  # the loop saw top queries


def test_ordering_rationale_knob_changes_only_the_rationale():
    from iga.isomers import generate_sets

    chain = generate_sets("ordering", ["mathematics", "law"], 12, seed=3)
    assert all("rationale" not in s.skeleton.program for s in chain)  # old hashes kept
    for style in ("restate", "walk"):
        other = generate_sets("ordering", ["mathematics", "law"], 12, seed=3, rationale=style)
        differ = 0
        for a, b in zip(chain, other):
            assert b.skeleton.program == a.skeleton.program | {"rationale": style}
            assert a.skeleton.answer == b.skeleton.answer
            for d in ("mathematics", "law"):
                assert a.isomers[d].prompt == b.isomers[d].prompt
                differ += a.isomers[d].rationale != b.isomers[d].rationale
        assert differ > 0
    with pytest.raises(ValueError, match="ordering rationale must be one of"):
        generate_sets("ordering", ["mathematics"], 1, rationale="backwards")


def test_rules_and_or():
    base = {
        "numeric": [67, 10],
        "flags": [False],
        "facts": [["numeric", 0], ["flag", 0], ["numeric", 1]],
        "atoms": [
            {"kind": "gt", "attr": 0, "threshold": 60},
            {"kind": "flag", "attr": 0, "want": True},
        ],
    }
    assert solve("rules", base | {"op": "and"}).answer == "no"
    solution = solve("rules", base | {"op": "or"})
    assert solution.answer == "yes"
    assert [s["holds"] for s in solution.steps] == [True, False, True]


@given(
    st.integers(1, 60), st.lists(st.tuples(st.sampled_from("+-*"), st.integers(0, 9)), min_size=1)
)
def test_arithmetic_matches_python(start, ops):
    program = {"start": start, "ops": [], "distractors": []}
    expected = start
    for symbol, x in ops:
        program["ops"].append({"op": {"+": "add", "-": "sub", "*": "mul"}[symbol], "x": x})
        expected = eval(f"{expected} {symbol} {x}")
    assert solve("arithmetic", program).answer == str(expected)


@given(st.sampled_from(FAMILIES), st.integers(0, 10**6))
def test_sampled_programs_solve_and_wrong_answers_differ(family, seed):
    fam = get_family(family)
    rng = random.Random(seed)
    program = fam.sample(rng, fam.make_knobs())
    solution = solve(family, program)
    assert solution.answer and solution.steps
    assert fam.wrong_answer(program, solution.answer, rng) != solution.answer


@pytest.mark.parametrize(
    ("family", "program", "reason"),
    [
        ("arithmetic", {"start": 5, "ops": [{"op": "div", "x": 2}]}, "exact"),
        ("arithmetic", {"start": 5, "ops": []}, "non-empty"),
        ("arithmetic", {"start": "5", "ops": [{"op": "add", "x": 1}]}, "start"),
        ("arithmetic", {"start": 5, "ops": [{"op": "pow", "x": 2}]}, "op"),
        ("deduction", {"n_props": 2, "facts": [0], "rules": [[0, 5]], "query": 1}, "rules[0]"),
        ("deduction", {"n_props": 2, "facts": [], "rules": [], "query": 1}, "facts"),
        (
            "ordering",
            {"labels": ["K", "D", "F"], "facts": [[0, 1, "more"]], "query": {"kind": "most"}},
            "links",
        ),
        (
            "ordering",
            {
                "labels": ["K", "D", "F"],
                "facts": [[0, 1, "more"], [2, 1, "more"]],
                "query": {"kind": "most"},
            },
            "chain",
        ),
        ("rules", {"numeric": [1], "flags": [], "facts": [], "op": "and", "atoms": []}, "facts"),
        (
            "rules",
            {"numeric": [1], "flags": [], "facts": [["numeric", 0]], "op": "xor", "atoms": []},
            "op",
        ),
        ("deduction", ["not", "an", "object"], "JSON object"),
        ("deduction", {"n_props": 2, "facts": [0], "rules": [None], "query": 1}, "rules[0]"),
    ],
)
def test_malformed_programs_raise_with_reason(family, program, reason):
    with pytest.raises(ProgramError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        solve(family, program)
