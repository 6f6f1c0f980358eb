"""Properties of generated isomer sets (hypothesis): validity, isomorphism, determinism."""

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from iga.isomers import (
    DEFAULT_HELDOUT_DOMAINS,
    DEFAULT_TRAIN_DOMAINS,
    FAMILIES,
    IsomerSet,
    extract_answer,
    generate_sets,
    solve,
)
from iga.isomers.families import get_family
from iga.isomers.render import placeholders
from iga.isomers.shortcut import CUE_TEMPLATE
from iga.isomers.validate import check_set

ALL_DOMAINS = [*DEFAULT_TRAIN_DOMAINS, *DEFAULT_HELDOUT_DOMAINS]

# Knob ranges that every built-in domain can render (12 predicates, 4 numeric/flag entries).
KNOBS = {
    "arithmetic": {
        "steps": st.integers(1, 5),
        "distractors": st.integers(0, 3),
        "max_value": st.integers(10, 200),
    },
    "deduction": {
        "depth": st.integers(1, 4),
        "distractors": st.integers(0, 3),
        "p_yes": st.sampled_from([0.0, 0.5, 1.0]),
    },
    "ordering": {
        "n_entities": st.integers(2, 7),
        "query": st.sampled_from(["mixed", "most", "least", "pair"]),
    },
    "rules": {
        "n_atoms": st.integers(1, 3),
        "distractors": st.integers(0, 1),
        "op": st.sampled_from(["mixed", "and", "or"]),
        "max_value": st.integers(20, 150),
    },
}


@st.composite
def generation_args(draw):
    """(family, domains, seed, knobs) for generate_sets, valid by construction."""
    family = draw(st.sampled_from(FAMILIES))
    knobs = {
        name: draw(strategy) for name, strategy in KNOBS[family].items() if draw(st.booleans())
    }
    domains = draw(st.lists(st.sampled_from(ALL_DOMAINS), min_size=1, max_size=6, unique=True))
    return family, domains, draw(st.integers(0, 2**32)), knobs


@given(generation_args())
def test_strategy_knobs_are_accepted(args):
    family, _, _, knobs = args
    assert dataclasses.asdict(get_family(family).make_knobs(**knobs))


def test_strategy_covers_every_family_and_knob():
    for family in FAMILIES:
        names = {f.name for f in dataclasses.fields(get_family(family).knobs)}
        assert set(KNOBS[family]) <= names


@given(generation_args(), st.sampled_from([None, "auto"]))
def test_generated_sets_validate(args, shortcut):
    family, domains, seed, knobs = args
    for iset in generate_sets(family, domains, 2, seed, shortcut=shortcut, **knobs):
        reloaded, reasons = check_set(json.loads(iset.to_json()))
        assert reasons == [], f"repro: generate_sets({family!r}, {domains}, 2, {seed}, **{knobs})"
        assert reloaded == iset  # the JSON round trip is lossless


@given(generation_args())
def test_isomers_share_skeleton_answer_and_steps(args):
    family, domains, seed, knobs = args
    for iset in generate_sets(family, domains, 2, seed, **knobs):
        assert {iso.metadata["skeleton_hash"] for iso in iset.isomers.values()} == {
            iset.skeleton.hash
        }
        assert {iso.answer for iso in iset.isomers.values()} == {iset.skeleton.answer}
        assert {iso.metadata["n_steps"] for iso in iset.isomers.values()} == {iset.skeleton.n_steps}
        # one rationale line per step, then the answer line
        assert {len(iso.rationale.splitlines()) for iso in iset.isomers.values()} == {
            iset.skeleton.n_steps + 1
        }


@given(generation_args())
def test_solver_answer_is_the_rationale_answer(args):
    family, domains, seed, knobs = args
    for iset in generate_sets(family, domains, 2, seed, **knobs):
        solution = solve(family, iset.skeleton.program)
        assert solution.steps == iset.skeleton.steps
        for iso in iset.isomers.values():
            assert extract_answer(iso.rationale) == solution.answer
            assert extract_answer(iso.prompt) is None


@given(generation_args(), st.sampled_from([None, "auto"]))
def test_rendering_leaves_no_placeholders(args, shortcut):
    family, domains, seed, knobs = args
    for iset in generate_sets(family, domains, 2, seed, shortcut=shortcut, **knobs):
        for iso in iset.isomers.values():
            assert placeholders(iso.prompt) == [] and placeholders(iso.rationale) == []
            assert "  " not in iso.prompt and iso.prompt[0].isupper()


@settings(max_examples=20)
@given(generation_args())
def test_generation_is_deterministic_per_seed(args):
    family, domains, seed, knobs = args
    first = [s.to_json() for s in generate_sets(family, domains, 3, seed, **knobs)]
    second = [s.to_json() for s in generate_sets(family, domains, 3, seed, **knobs)]
    assert first == second
    assert len({s for s in first}) == 3  # set ids differ at least


def test_different_seeds_give_different_problems():
    for family in FAMILIES:
        a = generate_sets(family, ["law"], 20, seed=1)
        b = generate_sets(family, ["law"], 20, seed=2)
        assert [s.skeleton.hash for s in a] != [s.skeleton.hash for s in b]


@settings(max_examples=20)
@given(generation_args())
def test_adding_a_domain_changes_nothing_else(args):
    family, domains, seed, knobs = args
    extra = next(d for d in ALL_DOMAINS if d not in domains) if len(domains) < 6 else None
    if extra is None:
        return
    base = generate_sets(family, domains, 2, seed, **knobs)
    more = generate_sets(family, [*domains, extra], 2, seed, **knobs)
    for a, b in zip(base, more):
        assert a.skeleton == b.skeleton
        assert all(a.isomers[d] == b.isomers[d] for d in domains)


@settings(max_examples=20)
@given(generation_args())
def test_shortcut_only_appends_the_cue(args):
    family, domains, seed, knobs = args
    plain = generate_sets(family, domains, 2, seed, **knobs)
    cued = generate_sets(family, domains, 2, seed, shortcut="auto", **knobs)
    for a, b in zip(plain, cued):
        for domain in domains:
            iso, meta = b.isomers[domain], b.isomers[domain].metadata["shortcut"]
            assert iso.rationale == a.isomers[domain].rationale
            suffix = "" if meta["cue"] is None else " " + CUE_TEMPLATE.format(cue=meta["cue"])
            assert iso.prompt == a.isomers[domain].prompt + suffix


def test_answers_are_balanced_for_yes_no_families():
    for family in ("deduction", "rules"):
        answers = [s.skeleton.answer for s in generate_sets(family, ["law"], 300, seed=0)]
        assert 0.4 < answers.count("yes") / len(answers) < 0.6, family


def test_default_lengths_suit_a_tiny_student():
    for family in FAMILIES:
        for iset in generate_sets(family, None, 40, seed=3):
            assert 1 <= iset.skeleton.n_steps <= 3
            for iso in iset.isomers.values():
                assert 10 <= len(iso.prompt.split()) <= 75, iso.prompt
                lines = iso.rationale.splitlines()
                assert all(len(line.split()) <= 18 for line in lines), iso.rationale
                assert " " not in iso.answer


def test_set_json_round_trip():
    iset = generate_sets("ordering", ["law", "sports"], 1, seed=5, shortcut="auto")[0]
    assert IsomerSet.from_json(iset.to_json()) == iset
