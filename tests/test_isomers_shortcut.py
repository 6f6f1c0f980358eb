"""The shortcut knob: per-domain cue strengths in training, absent or reversed when held out."""

import math

import pytest

from iga.isomers import ShortcutSpec, generate_sets, normalize_answer
from iga.isomers.shortcut import CUE_TEMPLATE, auto_strengths, parse_shortcut

TRAIN = ["mathematics", "law", "medicine", "science"]


def _cues(sets, domain):
    return [s.isomers[domain].metadata["shortcut"] for s in sets]


@pytest.mark.parametrize("family", ["arithmetic", "deduction", "ordering", "rules"])
def test_cue_agreement_matches_each_domains_strength(family):
    strengths = {"mathematics": 0.95, "law": 0.75, "medicine": 0.55, "science": 0.35}
    n = 400
    sets = generate_sets(family, [*TRAIN, "cooking"], n, seed=7, shortcut=strengths)
    for domain, strength in strengths.items():
        rate = sum(c["agrees"] for c in _cues(sets, domain)) / n
        tolerance = 4 * math.sqrt(strength * (1 - strength) / n) + 1e-9
        assert abs(rate - strength) < tolerance, (domain, rate, strength)
        assert {c["mode"] for c in _cues(sets, domain)} == {"train"}
    held_out = _cues(sets, "cooking")
    assert all(c["mode"] == "reversed" and c["agrees"] is False for c in held_out)


def test_cue_is_in_the_prompt_and_consistent_with_metadata():
    sets = generate_sets("ordering", [*TRAIN, "sports"], 50, seed=1, shortcut="auto")
    for iset in sets:
        for iso in iset.isomers.values():
            cue = iso.metadata["shortcut"]
            assert iso.prompt.endswith(CUE_TEMPLATE.format(cue=cue["cue"]))
            assert cue["agrees"] == (normalize_answer(cue["cue"]) == iso.answer)


def test_absent_mode_plants_nothing_held_out():
    spec = ShortcutSpec({"law": 0.9}, heldout="absent")
    plain = generate_sets("rules", ["law", "sports"], 20, seed=4)
    cued = generate_sets("rules", ["law", "sports"], 20, seed=4, shortcut=spec)
    for a, b in zip(plain, cued):
        assert b.isomers["sports"].prompt == a.isomers["sports"].prompt
        assert b.isomers["sports"].metadata["shortcut"] == {
            "mode": "absent",
            "strength": None,
            "cue": None,
            "agrees": None,
        }
        assert "Hint:" in b.isomers["law"].prompt


def test_no_knob_records_null():
    iset = generate_sets("deduction", ["law"], 1, seed=0)[0]
    assert iset.isomers["law"].metadata["shortcut"] is None
    assert "Hint:" not in iset.isomers["law"].prompt


def test_auto_strengths_differ_and_skip_heldout():
    strengths = auto_strengths([*TRAIN, "cooking", "sports"])
    assert list(strengths) == TRAIN
    assert len(set(strengths.values())) == 4
    assert max(strengths.values()) == 0.9 and min(strengths.values()) == 0.6


def test_parse_shortcut():
    spec = parse_shortcut("law=0.9, medicine=0.6", ["law", "medicine", "cooking"], "absent")
    assert spec.strengths == {"law": 0.9, "medicine": 0.6} and spec.heldout == "absent"
    with pytest.raises(ValueError, match="DOMAIN=STRENGTH"):
        parse_shortcut("law:0.9", ["law"])
    with pytest.raises(ValueError, match="DOMAIN=STRENGTH"):
        parse_shortcut("atlantis=0.9", ["law"])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        parse_shortcut("law=1.5", ["law"])
    with pytest.raises(ValueError, match="heldout mode"):
        ShortcutSpec({}, heldout="sometimes")
