"""Every check can fail: break an operator (or the bound) on purpose and the matching check says so.

The breakages live in ``theory.sabotage`` and swap the names ``iga.core.aligner`` calls, so
the trainers run the broken step while the references the checks compute stay intact.
Each test first runs the check unbroken (it passes), then broken (it fails).
"""

from dataclasses import replace

import pytest
import torch

import iga.core.aligner
from theory import bound as bd
from theory import checks
from theory.sabotage import PATCH_SABOTAGES, sabotaged

SMALL = replace(checks.Settings.quick(), reps_bound=80, train_steps=200, reps_k=20)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tightness_regression():
    return checks.bound_checks("regression", SMALL, seed=0)[1]


@pytest.mark.parametrize("sabotage", ["mask_ones", "mask_from_mean", "sign_flip"])
def test_broken_mask_fails_tightness(sabotage):
    assert _tightness_regression().passed
    with sabotaged(sabotage):
        broken = _tightness_regression()
    assert not broken.passed, broken.detail


def test_sign_flip_fails_the_rate_check():
    small = replace(SMALL, rate_T=(256, 512, 1024), reps_rate=8)
    assert checks.rate_linear_check(small, seed=0).passed
    with sabotaged("sign_flip"):
        broken = checks.rate_linear_check(small, seed=0)
    assert not broken.passed and "False" in broken.detail


def test_mask_from_mean_fails_the_k_scaling_check():
    grid = replace(SMALL, k_grid=(4, 8, 16, 32))
    assert checks.k_scaling_check("regression", grid, seed=0).passed
    with sabotaged("mask_from_mean"):
        broken = checks.k_scaling_check("regression", grid, seed=0)
    assert not broken.passed, broken.detail


def test_wrong_rank_fails_the_projection_check():
    small = replace(SMALL, lora_rate_T=(128, 256), reps_lora_rate=2, probe_steps=8)
    _, projection = checks.rate_lora_checks(small, seed=0)
    assert projection.passed
    with sabotaged("wrong_rank"):
        _, broken = checks.rate_lora_checks(small, seed=0)
    assert not broken.passed and broken.numbers["max_gap"] > 0


@pytest.mark.slow
def test_wrong_rank_also_slows_the_lora_rate_below_the_claimed_exponent():
    with sabotaged("wrong_rank"):
        rate, _ = checks.rate_lora_checks(checks.Settings.quick(), seed=0)
    assert not rate.passed, rate.detail


def test_bound_without_its_deviation_term_fails_validity(monkeypatch):
    assert checks.bound_checks("regression", SMALL, seed=0)[0].passed
    monkeypatch.setattr(
        bd, "linear_deviation", lambda problem, w, K, delta: torch.zeros(w.shape[:-1])
    )
    broken = checks.bound_checks("regression", SMALL, seed=0)[0]
    assert not broken.passed and broken.numbers["coverage"] < 0.5


def test_fresh_domains_from_another_meta_distribution_fail_validity():
    result = checks.shifted_validity(SMALL, seed=0)
    assert not result.passed and result.numbers["coverage"] < 0.5


def _operators():
    a = iga.core.aligner
    return (a.masked_mean, a.project_low_rank, iga.split_conflict_variance)


def test_sabotage_restores_the_operators():
    before = _operators()
    for name in PATCH_SABOTAGES:
        with sabotaged(name):
            assert _operators() != before
        assert _operators() == before
    with pytest.raises(ValueError, match="unknown sabotage"), sabotaged("nope"):
        pass
