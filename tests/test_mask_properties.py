"""Property tests of the Continuous Gradient Conflict Mask (docs/design.md section 2)."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import iga
from tests import invariants as inv
from tests.strategies import domain_grads, positive_scales, taus

KINDS = st.sampled_from(["raw", "relative"])


def mask_op(grads, tau, kind):
    return iga.conflict_mask(iga.conflict_variance(grads, kind=kind), tau)


@given(domain_grads(), taus, KINDS)
def test_mask_in_unit_interval(grads, tau, kind):
    inv.mask_in_unit_interval(mask_op, grads, tau, kind)


@given(domain_grads(), taus, KINDS)
def test_identical_domains_give_unit_mask(grads, tau, kind):
    inv.identical_domains_give_unit_mask(mask_op, grads, tau, kind)
    same = grads[:1].expand_as(grads)
    assert torch.equal(iga.conflict_variance(same, kind=kind), torch.zeros_like(grads[0]))


@given(domain_grads(min_k=2), taus, KINDS)
def test_mask_permutation_invariant(grads, tau, kind):
    inv.mask_permutation_invariant(mask_op, grads, tau, kind)


@given(domain_grads(), taus, KINDS)
def test_mask_decreasing_in_tau(grads, tau, kind):
    inv.mask_decreasing_in_tau(mask_op, grads, tau, kind)


@given(domain_grads(), st.floats(0.01, 50.0))
def test_mask_decreasing_in_variance(grads, tau):
    inv.mask_decreasing_in_variance(iga.conflict_mask, iga.conflict_variance(grads), tau)


@given(domain_grads(), taus, positive_scales)
def test_relative_mask_scale_invariant(grads, tau, c):
    inv.relative_mask_scale_invariant(mask_op, grads, tau, c)


@given(domain_grads(max_k=4, max_numel=8, min_k=2), st.floats(0.1, 3.0), KINDS)
def test_mask_gradcheck(grads, tau, kind):
    # Scale to O(1) so finite differences of exp(-tau V) are well resolved; tau > 0 keeps
    # the finite-difference probe of tau inside the domain tau >= 0.
    inv.mask_gradcheck(mask_op, grads / grads.abs().max(), tau, kind)


def test_relative_variance_lies_in_unit_interval():
    g = torch.randn(5, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    v = iga.conflict_variance(g * 1e3, kind="relative")
    assert bool((v >= 0).all()) and bool((v < 1).all())


def test_raw_variance_is_population_variance():
    g = torch.randn(5, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(iga.conflict_variance(g), g.var(dim=0, unbiased=False))


def test_mask_floor_bounds_mask():
    v = torch.tensor([0.0, 1.0, 1e6], dtype=torch.float64)
    m = iga.conflict_mask(v, 10.0, floor=0.2)
    assert m[0] == 1.0 and bool((m >= 0.2).all())


@pytest.mark.parametrize(
    "bad",
    [
        {"tau": -1.0},
        {"tau": float("nan")},
        {"floor": 1.0},
    ],
)
def test_mask_rejects_bad_arguments(bad):
    with pytest.raises(ValueError):
        iga.conflict_mask(torch.zeros(3), bad.get("tau", 1.0), floor=bad.get("floor", 0.0))


def test_variance_rejects_unknown_kind_and_empty_stack():
    with pytest.raises(ValueError, match="unknown"):
        iga.conflict_variance(torch.zeros(2, 3), kind="median")
    with pytest.raises(ValueError, match="K >= 1"):
        iga.conflict_variance(torch.zeros(0, 3))


# --- companions: each invariant catches a deliberately broken mask ---------------------------

FIXED = torch.tensor(
    [[[1.0, -2.0], [0.5, 3.0]], [[2.0, 1.0], [-0.5, 2.0]], [[0.0, 0.0], [1.5, -1.0]]],
    dtype=torch.float64,
)  # (K=3, 2, 2), domains disagree everywhere


def mean_instead_of_variance(grads, tau, kind):
    return torch.exp(-torch.as_tensor(tau) * grads.mean(dim=0))


def sign_flipped(grads, tau, kind):
    return torch.exp(torch.as_tensor(tau) * iga.conflict_variance(grads, kind=kind))


def order_dependent(grads, tau, kind):
    w = torch.arange(1, grads.shape[0] + 1, dtype=grads.dtype).view(-1, *[1] * (grads.dim() - 1))
    return iga.conflict_mask(iga.conflict_variance(grads * w, kind=kind), tau)


def relative_without_normalizer(grads, tau, kind):
    return iga.conflict_mask(iga.conflict_variance(grads, kind="raw"), tau)


def detached_mask(grads, tau, kind):
    return iga.conflict_mask(iga.conflict_variance(grads, kind=kind).detach(), tau)


def no_decrease_in_v(variance, tau):
    return torch.exp(-torch.as_tensor(tau) * variance.clamp_max(0.0))


@pytest.mark.parametrize(
    "check, broken, args",
    [
        (inv.mask_in_unit_interval, mean_instead_of_variance, (FIXED, 2.0, "raw")),
        (inv.mask_in_unit_interval, sign_flipped, (FIXED, 2.0, "raw")),
        (inv.identical_domains_give_unit_mask, mean_instead_of_variance, (FIXED, 2.0, "raw")),
        (inv.mask_permutation_invariant, order_dependent, (FIXED, 2.0, "raw")),
        (inv.mask_decreasing_in_tau, sign_flipped, (FIXED, 2.0, "raw")),
        (inv.relative_mask_scale_invariant, relative_without_normalizer, (FIXED, 2.0, 10.0)),
        (inv.mask_gradcheck, detached_mask, (FIXED, 0.5, "raw")),
        (inv.mask_decreasing_in_variance, no_decrease_in_v, (torch.tensor([0.5, 2.0]), 1.0)),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_broken_mask_is_caught(check, broken, args):
    with pytest.raises(AssertionError):
        check(broken, *args)
    if check is not inv.mask_decreasing_in_variance:  # the real operator passes on the same input
        check(mask_op, *args)
    else:
        check(iga.conflict_mask, *args)
