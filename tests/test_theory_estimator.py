"""Lemma E: the estimators' closed forms, and the estimator check with its sabotage."""

import math
from dataclasses import replace

import torch

import iga
from theory import estimators as est
from theory.check_estimator import estimator_check
from theory.common import Settings
from theory.problems import DTYPE
from theory.sabotage import sabotaged

SMALL = replace(Settings.quick(), estimator_n=(2, 64, 1024), estimator_K=(2, 8), estimator_reps=150)


def test_split_estimator_is_the_library_before_its_clamp():
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn((5, 7), generator=g, dtype=DTYPE) for _ in range(2))
    raw = est.split_unclamped(a, b)
    assert torch.allclose(iga.split_conflict_variance(a, b, "raw"), raw.clamp_min(0), atol=1e-14)
    assert (raw < 0).any()  # the clamp binds somewhere: the unclamped form is what is unbiased


def test_identical_halves_give_the_batch_variance_of_a_half_minus_nothing():
    # a = b: E[a_k b_k] = mu_k^2 + 2 v_k, so the split estimator degrades to the batch one.
    g = torch.Generator().manual_seed(1)
    a = torch.randn((4, 6), generator=g, dtype=DTYPE)
    assert torch.allclose(est.split_unclamped(a, a), iga.conflict_variance(a, "raw"), atol=1e-14)


def test_closed_forms_on_a_small_case():
    mu = torch.tensor([[1.0], [3.0]], dtype=DTYPE)  # V_between = 1
    v = torch.tensor([0.5, 1.5], dtype=DTYPE)
    assert math.isclose(float(est.batch_mean(mu, v)), 1 + 0.25 * 2.0)
    assert math.isclose(est.ema_factor(0.9, 0), 1.0)
    assert math.isclose(est.ema_factor(0.9, 10_000), 0.1 / 1.9)
    # Var V_hat = (4/4)(1 * 0.5 + 1 * 1.5) + (4/16)((1)(0.25 + 2.25) + 0.75) = 2 + 0.8125
    assert math.isclose(float(est.split_variance(mu, v)), 2.8125)


def test_split_variance_formula_matches_simulation():
    g = torch.Generator().manual_seed(2)
    K, R = 4, 40_000
    mu = torch.tensor([0.0, 1.0, -1.0, 2.0], dtype=DTYPE)[:, None]
    v = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=DTYPE)
    sd = (2 * v).sqrt()[:, None]
    a = mu + sd * torch.randn((K, R), generator=g, dtype=DTYPE)
    b = mu + sd * torch.randn((K, R), generator=g, dtype=DTYPE)
    x = est.split_unclamped(a, b)
    assert abs(float(x.mean()) - float(est.between(mu))) < 4 * float(x.std()) / math.sqrt(R)
    assert abs(float(x.var()) / float(est.split_variance(mu, v)) - 1) < 0.05


def test_estimator_check_passes_and_fails_when_the_split_estimator_is_broken():
    result = estimator_check(SMALL, seed=0)
    assert result.passed, result.detail
    with sabotaged("split_same_half"):
        broken = estimator_check(SMALL, seed=0)
    assert not broken.passed and "split_clamp" in broken.detail


def test_estimator_check_fails_when_the_batch_formula_is_wrong(monkeypatch):
    monkeypatch.setattr(est, "batch_mean", lambda mu, v: est.between(mu))  # forget the bias
    broken = estimator_check(SMALL, seed=0)
    assert not broken.passed and "z_batch" in broken.detail
