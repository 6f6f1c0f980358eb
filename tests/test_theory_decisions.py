"""The decision rules of theory.decisions on synthetic outcomes with a known answer."""

import numpy as np
import pytest

from theory.decisions import (
    coverage_decision,
    coverage_outcome,
    fieller_ratio,
    predicted_outcome,
    relative_gap,
)


def test_a_bound_with_exactly_the_claimed_coverage_passes_almost_always():
    rng = np.random.default_rng(0)
    fails = [
        not coverage_decision(rng.random(100) < 0.95, delta=0.05, alpha=0.05).passed
        for _ in range(400)
    ]
    assert np.mean(fails) <= 0.05  # the old rule (lower limit >= 0.95) failed ~99 %


def test_a_bound_well_below_the_claimed_coverage_fails():
    rng = np.random.default_rng(1)
    fails = [
        not coverage_decision(rng.random(100) < 0.8, delta=0.05, alpha=0.05).passed
        for _ in range(200)
    ]
    assert np.mean(fails) >= 0.95
    assert coverage_decision([True] * 95 + [False] * 5, 0.05, 0.05).passed
    assert not coverage_decision([True] * 85 + [False] * 15, 0.05, 0.05).passed


def test_coverage_outcome_needs_the_interval_on_one_side():
    assert coverage_outcome(coverage_decision([False] * 100, 0.05, 0.05), 0.05) == "confirmed"
    assert coverage_outcome(coverage_decision([True] * 100, 0.05, 0.05), 0.05) == "contradicted"
    borderline = coverage_decision([True] * 94 + [False] * 6, 0.05, 0.05)
    assert coverage_outcome(borderline, 0.05) == "not confirmed"


def _paired(gap, n=100, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    a = 1 + 0.2 * rng.standard_normal(n)
    return a, (1 - gap) * a + noise * rng.standard_normal(n)


def test_a_tiny_but_significant_gap_is_not_tighter():
    a, b = _paired(0.001, noise=1e-5)  # p ~ 0, effect 0.1 %
    gap = relative_gap(a, b, alpha=0.05, min_effect=0.02)
    assert not gap.passed and gap.ci[1] < 0.02 and abs(gap.estimate - 0.001) < 1e-4


def test_a_real_gap_passes_and_its_interval_contains_it():
    a, b = _paired(0.1)
    gap = relative_gap(a, b, alpha=0.05, min_effect=0.02)
    assert gap.passed and gap.ci[0] < 0.1 < gap.ci[1] and gap.p_value < 0.05


def test_fieller_interval_has_its_nominal_coverage():
    hits = 0
    for seed in range(300):
        a, b = _paired(0.1, n=30, noise=0.2, seed=seed)
        lo, hi = fieller_ratio(a, b, alpha=0.05)  # 90 % two-sided
        hits += lo <= 0.9 <= hi
    assert 0.85 <= hits / 300 <= 0.95


def test_fieller_interval_is_unbounded_when_the_denominator_is_not_significant():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(20)
    assert fieller_ratio(a, rng.standard_normal(20), 0.05) == (-np.inf, np.inf)


@pytest.mark.parametrize(
    "kind, gap, expected",
    [
        ("erm_better", -0.1, "confirmed"),
        ("erm_better", 0.1, "contradicted"),
        ("erm_better", 0.0, "not confirmed"),
        ("iga_better", 0.1, "confirmed"),
        ("iga_better", -0.1, "contradicted"),
        ("no_gain", 0.0, "confirmed"),
        ("no_gain", 0.2, "contradicted"),
    ],
)
def test_predictions_count_only_on_a_significant_test_in_their_direction(kind, gap, expected):
    erm, iga = _paired(gap, noise=0.01 if gap else 0.0005)
    if gap == 0.0 and kind == "erm_better":
        erm, iga = _paired(0.0, noise=0.3, seed=5)  # no difference, noisy
    outcome, evidence = predicted_outcome(kind, erm, iga, alpha=0.05, min_effect=0.02)
    assert outcome == expected, evidence


def test_an_input_side_like_row_in_igas_favour_is_not_a_confirmed_failure():
    # Shaped like tightness[lora,side=in]: IGA better, p ~ 0.03 one-sided.
    rng = np.random.default_rng(7)
    erm = 1 + 0.3 * rng.standard_normal(100)
    iga = erm - 0.06 + 0.3 * rng.standard_normal(100)
    outcome, _ = predicted_outcome("erm_better", erm, iga, alpha=0.05, min_effect=0.02)
    assert outcome != "confirmed"
