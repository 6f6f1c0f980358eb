"""Property tests of the low-rank and tangent projections and the LoRA chain rule."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import iga
from tests import invariants as inv
from tests.strategies import DTYPE, gapped_matrices, lora_points, matrices, seeds


def exact(x, r):
    return iga.project_low_rank(x, r, method="exact")


def randomized(x, r):
    return iga.project_low_rank(
        x, r, method="randomized", generator=torch.Generator().manual_seed(0)
    )


ranks = st.integers(1, 6)


@given(matrices(), ranks)
def test_rank_at_most_r(m, r):
    inv.projection_rank_at_most_r(exact, m.matrix, r)


@given(st.integers(1, 5), st.data())
def test_low_rank_returned_unchanged(r, data):
    m = data.draw(matrices(rank=r))
    inv.projection_keeps_low_rank(exact, m.matrix, r)


@given(matrices(), ranks)
def test_idempotent(m, r):
    inv.projection_idempotent(exact, m.matrix, r)


@given(matrices(), ranks)
def test_eckart_young(m, r):
    inv.projection_eckart_young(exact, m.matrix, r, m.singular_values)


@given(matrices(), ranks)
def test_norm_nonincreasing(m, r):
    inv.projection_norm_nonincreasing(exact, m.matrix, r)


@given(gapped_matrices(max_side=12), seeds)
def test_orthogonal_equivariance(gapped, seed):
    m, r = gapped
    inv.projection_orthogonal_equivariant(exact, m.matrix, r, seed)


@given(gapped_matrices())
def test_randomized_agrees_with_exact_given_a_gap(gapped):
    m, r = gapped
    torch.testing.assert_close(randomized(m.matrix, r), exact(m.matrix, r), rtol=0, atol=1e-7 * 20)


@given(st.lists(matrices(max_side=6, cond=10.0), min_size=1, max_size=4), ranks, seeds)
def test_batched_equals_per_matrix(ms, r, seed):
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(len(ms), 5, 4, generator=g, dtype=DTYPE)  # (b, m, n): one shape per batch
    inv.projection_batched_matches_loop(exact, xs, r)


def test_auto_threshold_documented_and_used():
    from iga.core import projection

    big = torch.randn(projection.RANDOMIZED_MIN_DIM, 600, dtype=DTYPE)
    assert projection._use_randomized(*big.shape, rank=8)
    assert not projection._use_randomized(100, 100, rank=8)
    assert not projection._use_randomized(600, 600, rank=300)


def test_projection_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rank"):
        iga.project_low_rank(torch.zeros(3, 3), 0)
    with pytest.raises(ValueError, match="method"):
        iga.project_low_rank(torch.zeros(3, 3), 1, method="qr")
    with pytest.raises(ValueError, match="shape"):
        iga.project_low_rank(torch.zeros(3), 1)


# --- tangent projection and chain rule ------------------------------------------------------


@given(lora_points())
def test_tangent_idempotent(point):
    b, a, h = point
    inv.tangent_idempotent(iga.tangent_project, h, b, a)


@given(lora_points())
def test_tangent_self_adjoint(point):
    b, a, h = point
    inv.tangent_self_adjoint(iga.tangent_project, h, b, a)


def test_tangent_at_lora_init_is_right_projection():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 6, generator=g, dtype=DTYPE)
    h = torch.randn(5, 6, generator=g, dtype=DTYPE)
    q, _ = torch.linalg.qr(a.T)  # (in, r): basis of row(A)
    torch.testing.assert_close(
        iga.tangent_project(h, torch.zeros(5, 2, dtype=DTYPE), a), h @ q @ q.T
    )


@given(lora_points(), st.floats(0.1, 4.0))
def test_chain_rule_matches_autograd(point, scale):
    b, a, h = point
    inv.chain_rule_matches_autograd(iga.lora_factor_grads, h, b, a, scale)


# --- companions: broken projections are caught --------------------------------------------


def keeps_one_too_many(x, r):
    return exact(x, r + 1)


def keeps_one_too_few(x, r):
    return exact(x, r - 1) if r > 1 else torch.zeros_like(x)


def keeps_smallest(x, r):
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    return (u[:, -r:] * s[-r:]) @ vh[-r:]


def doubles(x, r):
    return 2 * exact(x, r)


def first_matrix_basis(xs, r):
    if xs.dim() == 2:
        return exact(xs, r)
    u, _, _ = torch.linalg.svd(xs[0], full_matrices=False)
    p = u[:, :r] @ u[:, :r].T
    return p @ xs


def wrong_space(x, r):
    """Projects onto a fixed coordinate subspace instead of the singular one."""
    out = torch.zeros_like(x)
    out[:r] = x[:r]
    return out


def tangent_without_overlap(h, b, a):
    pb = b @ torch.linalg.pinv(b)
    pa = torch.linalg.pinv(a) @ a
    return pb @ h + h @ pa


def tangent_skewed(h, b, a):
    shift = torch.triu(
        torch.ones(h.shape[0], h.shape[0], dtype=h.dtype), diagonal=1
    )  # not symmetric
    return iga.tangent_project(h, b, a) + 0.1 * shift @ h


def chain_rule_without_scale(g, b, a, scale):
    return iga.lora_factor_grads(g, b, a, 1.0)


G = torch.Generator().manual_seed(11)
X = torch.randn(6, 5, generator=G, dtype=DTYPE)
S = torch.linalg.svdvals(X)
LOW = iga.project_low_rank(X, 2, "exact")  # exact rank 2
B0, A0 = torch.randn(6, 2, generator=G, dtype=DTYPE), torch.randn(2, 5, generator=G, dtype=DTYPE)
GAP = (
    torch.linalg.qr(torch.randn(6, 6, generator=G, dtype=DTYPE))[0][:, :5]
    * torch.tensor([20.0, 15.0, 1.0, 0.5, 0.1], dtype=DTYPE)
    @ torch.linalg.qr(torch.randn(5, 5, generator=G, dtype=DTYPE))[0]
)


@pytest.mark.parametrize(
    "check, broken, real, args",
    [
        (inv.projection_rank_at_most_r, keeps_one_too_many, exact, (X, 2)),
        (inv.projection_keeps_low_rank, keeps_one_too_few, exact, (LOW, 2)),
        (inv.projection_idempotent, doubles, exact, (X, 2)),
        (inv.projection_eckart_young, keeps_smallest, exact, (X, 2, S)),
        (inv.projection_norm_nonincreasing, doubles, exact, (X, 2)),
        (inv.projection_orthogonal_equivariant, wrong_space, exact, (GAP, 2, 5)),
        (
            inv.projection_batched_matches_loop,
            first_matrix_basis,
            exact,
            (torch.stack([X, X.flip(0)]), 2),
        ),
        (inv.tangent_idempotent, tangent_without_overlap, iga.tangent_project, (X, B0, A0)),
        (inv.tangent_self_adjoint, tangent_skewed, iga.tangent_project, (X[:5], B0[:5], A0)),
        (
            inv.chain_rule_matches_autograd,
            chain_rule_without_scale,
            iga.lora_factor_grads,
            (X, B0, A0, 2.0),
        ),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_broken_projection_is_caught(check, broken, real, args):
    with pytest.raises(AssertionError):
        check(broken, *args)
    check(real, *args)
