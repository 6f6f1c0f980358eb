"""Properties of ``split_conflict_variance`` (issue 14, item 6), with broken companions."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import iga

DT = torch.float64


@st.composite
def halves(draw, k_min: int = 2):
    """(a, b): K x D independent half gradients, mean scale and noise drawn."""
    k = draw(st.integers(k_min, 6))
    d = draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.floats(1e-3, 1e3))
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(k, d, generator=g, dtype=DT)
    a = scale * (mu + torch.randn(k, d, generator=g, dtype=DT))
    b = scale * (mu + torch.randn(k, d, generator=g, dtype=DT))
    return a, b


KINDS = st.sampled_from(["raw", "relative"])


def _close(x, y, rtol=1e-9):
    scale = float(torch.maximum(x.abs().max(), y.abs().max())) if x.numel() else 0.0
    torch.testing.assert_close(x, y, rtol=rtol, atol=rtol * scale + 1e-300)


@settings(max_examples=60, deadline=None)
@given(ab=halves(), kind=KINDS, perm_seed=st.integers(0, 1000))
def test_invariant_to_permuting_domains(ab, kind, perm_seed):
    a, b = ab
    perm = torch.randperm(a.shape[0], generator=torch.Generator().manual_seed(perm_seed))
    _close(
        iga.split_conflict_variance(a[perm], b[perm], kind), iga.split_conflict_variance(a, b, kind)
    )


@settings(max_examples=60, deadline=None)
@given(ab=halves(), kind=KINDS)
def test_invariant_to_swapping_the_halves(ab, kind):
    a, b = ab
    _close(iga.split_conflict_variance(b, a, kind), iga.split_conflict_variance(a, b, kind))


@settings(max_examples=60, deadline=None)
@given(ab=halves(), c=st.floats(1e-3, 1e3))
def test_relative_is_invariant_to_scaling(ab, c):
    a, b = ab
    _close(
        iga.split_conflict_variance(c * a, c * b, "relative", eps=0.0),
        iga.split_conflict_variance(a, b, "relative", eps=0.0),
        rtol=1e-7,
    )


@settings(max_examples=60, deadline=None)
@given(ab=halves(), kind=KINDS)
def test_nonnegative_and_relative_at_most_one(ab, kind):
    v = iga.split_conflict_variance(*ab, kind)
    assert bool((v >= 0).all())
    if kind == "relative":
        assert bool((v <= 1).all())


def test_one_domain_warns_and_the_step_is_erm():
    """K = 1: V = 0 with a warning, and the aligned gradient is the ERM gradient."""
    a = torch.randn(1, 4, 3, dtype=DT)
    with pytest.warns(UserWarning, match="K = 1"):
        v = iga.split_conflict_variance(a, 2 * a)
    assert bool((v == 0).all())
    with pytest.warns(UserWarning, match="K = 1"):
        result = iga.align_gradients({"w": a}, iga.IGAConfig(tau=10.0))
    torch.testing.assert_close(result.grads["w"], a[0])


@pytest.mark.parametrize("K,n", [(2, 8), (4, 16), (8, 64)])
def test_mean_equals_the_population_variance_of_the_means(K, n):
    """Over seeded draws, the raw estimate's mean (before the clamp binds: mu large against
    the noise) equals var_k(mu_k) within 4 standard errors of the estimator itself."""
    g = torch.Generator().manual_seed(K * 1000 + n)
    D, reps, sigma = 200, 300, 1.0
    mu = 2.0 * torch.randn(K, D, generator=g, dtype=DT)  # (K, D)
    target = float(mu.var(dim=0, unbiased=False).mean())
    noise = sigma / (n / 2) ** 0.5
    draws, batch = [], []
    for _ in range(reps):
        a = mu + noise * torch.randn(K, D, generator=g, dtype=DT)
        b = mu + noise * torch.randn(K, D, generator=g, dtype=DT)
        draws.append(float(iga.split_conflict_variance(a, b).mean()))
        batch.append(float(iga.conflict_variance(0.5 * (a + b)).mean()))
    draws_t = torch.tensor(draws, dtype=DT)
    se = float(draws_t.std()) / reps**0.5
    assert abs(float(draws_t.mean()) - target) < 4 * se
    # Companion: the minibatch variance of the same draws fails the same check.
    assert abs(sum(batch) / reps - target) > 4 * se


def _same_piece(a, b, kind):
    """Broken: squares of one half (a_k a_k) carry the noise."""
    return iga.split_conflict_variance(a, a, kind)


def _order_dependent(a, b, kind):
    """Broken: the first domain weighs twice."""
    return iga.split_conflict_variance(torch.cat([a[:1], a]), torch.cat([b[:1], b]), kind)


def _not_scale_free(a, b, kind):
    """Broken: relative by the mean square of one half plus a fixed constant."""
    return iga.split_conflict_variance(a, b, "raw") / (a.square().mean(dim=0) + 1.0)


def test_broken_estimators_fail_the_properties():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 50, generator=g, dtype=DT), torch.randn(3, 50, generator=g, dtype=DT)
    perm = torch.tensor([2, 0, 1])
    with pytest.raises(AssertionError):
        _close(_order_dependent(a[perm], b[perm], "raw"), _order_dependent(a, b, "raw"))
    with pytest.raises(AssertionError):
        _close(_same_piece(b, a, "raw"), _same_piece(a, b, "raw"))
    with pytest.raises(AssertionError):
        _close(_not_scale_free(10 * a, 10 * b, "relative"), _not_scale_free(a, b, "relative"))


@settings(max_examples=60, deadline=None)
@given(ab=halves(k_min=1), kind=KINDS, share_seed=st.integers(0, 1000))
def test_the_steps_fused_estimator_equals_the_reference(ab, kind, share_seed):
    """``split_variance_fused`` on raw half buffers == ``split_conflict_variance`` on the
    rescaled halves (unequal shares f_a != f_b included)."""
    import warnings

    from iga.core.estimators import split_variance_fused

    a, b = ab
    g = torch.Generator().manual_seed(share_seed)
    f_a = 0.2 + 0.6 * torch.rand(a.shape[0], generator=g, dtype=DT)  # (K,)
    load = torch.stack([f_a, 1 - f_a], dim=1)  # (K, 2)
    scale = load.sum(dim=1, keepdim=True) / load  # (K, 2)
    pairs = torch.stack([a / scale[:, :1], b / scale[:, 1:]], dim=1)  # raw buffers (K, 2, D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = iga.split_conflict_variance(a, b, kind)
    _close(split_variance_fused(pairs, scale, kind), expected, rtol=1e-9)
    if a.shape[0] > 1 and not torch.allclose(a, b):  # companion: swapped scales are wrong
        wrong = split_variance_fused(pairs, scale.flip(1), kind)
        # Only coordinates off the clamps tell the two apart: where both estimates are
        # clamped (at 0, or at 1 for the relative kind) they agree whatever the scales.
        inside = (expected > 0) & ((expected < 1) if kind == "relative" else True)
        if bool(inside.any()):
            assert not torch.allclose(wrong[inside], expected[inside], rtol=1e-6, atol=0)
