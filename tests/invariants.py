"""Invariants of the IGA operators, written as checks that take the operator.

Each check is run twice by the tests: on iga's operator over hypothesis inputs
(it must hold) and on a deliberately broken operator over a fixed input (it must
raise), so no property passes vacuously.
"""

from __future__ import annotations

import torch

from tests.strategies import orthonormal


def _close(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0, rtol: float = 1e-8) -> None:
    err = float((a - b).abs().max()) if a.numel() else 0.0
    assert err <= rtol * max(scale, 1.0), f"max abs difference {err:.3e} > {rtol:.0e} x {scale:.3e}"


# --- mask: op(grads (K, ...), tau, kind) -> M ----------------------------------------------


def mask_in_unit_interval(op, grads, tau, kind):
    m = op(grads, tau, kind)
    assert bool((m > 0).all()) and bool((m <= 1).all()), f"mask range [{m.min()}, {m.max()}]"


def identical_domains_give_unit_mask(op, grads, tau, kind):
    same = grads[:1].expand_as(grads).clone()  # (K, ...) K copies of domain 0
    m = op(same, tau, kind)
    assert torch.equal(m, torch.ones_like(m)), "identical domains must give M = 1 exactly"


def mask_permutation_invariant(op, grads, tau, kind):
    perm = torch.arange(grads.shape[0] - 1, -1, -1)  # reversal: the largest permutation
    _close(op(grads, tau, kind), op(grads[perm], tau, kind), rtol=1e-9)


def mask_decreasing_in_tau(op, grads, tau, kind):
    lo, hi = op(grads, tau, kind), op(grads, tau + 1.0, kind)
    assert bool((hi <= lo).all()), "the mask must not grow with tau"


def relative_mask_scale_invariant(op, grads, tau, c):
    _close(op(grads, tau, "relative"), op(c * grads, tau, "relative"), rtol=1e-9)


def mask_gradcheck(op, grads, tau, kind):
    g = grads.detach().clone().requires_grad_(True)
    t = torch.tensor(float(tau), dtype=grads.dtype, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, s: op(x, s, kind), (g, t), raise_exception=False)


# --- mask as a function of V: op(V, tau) -> M ------------------------------------------------


def mask_decreasing_in_variance(op, variance, tau):
    bigger = variance + variance.abs() + 0.1
    resolved = tau * bigger < 700  # beyond this exp(-tau V) sits at the float floor
    if tau > 0:
        falls = op(bigger, tau) < op(variance, tau)
        assert bool(falls[resolved].all()), "mask must fall as V grows"
    assert bool((op(bigger, tau) <= op(variance, tau)).all()), "mask must not grow with V"


# --- projection: op(matrix, rank) -> rank-r matrix ---------------------------------------------


def _tol(x: torch.Tensor) -> float:
    return 1e-9 * max(float(torch.linalg.matrix_norm(x, ord=2)), 1.0)


def projection_rank_at_most_r(op, x, r):
    rank = int(torch.linalg.matrix_rank(op(x, r), atol=_tol(x) * 100))
    assert rank <= r, f"output rank {rank} > r = {r}"


def projection_keeps_low_rank(op, x, r):
    """``x`` has rank <= r and must come back unchanged."""
    _close(op(x, r), x, scale=float(x.abs().max()), rtol=1e-9)


def projection_idempotent(op, x, r):
    p = op(x, r)
    _close(op(p, r), p, scale=float(x.abs().max()), rtol=1e-8)


def projection_eckart_young(op, x, r, singular_values):
    err = float(torch.linalg.matrix_norm(x - op(x, r)))
    expected = float(singular_values[r:].square().sum().sqrt())
    assert abs(err - expected) <= 1e-8 * max(float(singular_values[0]), 1.0), (err, expected)


def projection_norm_nonincreasing(op, x, r):
    assert float(torch.linalg.matrix_norm(op(x, r))) <= float(torch.linalg.matrix_norm(x)) * (
        1 + 1e-12
    )


def projection_orthogonal_equivariant(op, x, r, seed):
    m, n = x.shape
    q1, q2 = orthonormal(m, m, seed), orthonormal(n, n, seed + 7)
    _close(op(q1 @ x @ q2.T, r), q1 @ op(x, r) @ q2.T, scale=float(x.abs().max()), rtol=1e-7)


def projection_batched_matches_loop(op, xs, r):
    batched = op(xs, r)  # (b, m, n)
    looped = torch.stack([op(x, r) for x in xs])
    _close(batched, looped, scale=float(xs.abs().max()), rtol=1e-9)


# --- tangent projection: op(h, B, A) ---------------------------------------------------------


def tangent_idempotent(op, h, b, a):
    t = op(h, b, a)
    _close(op(t, b, a), t, scale=float(h.abs().max()), rtol=1e-9)


def tangent_self_adjoint(op, h, b, a):
    y = torch.flip(h, dims=(0,)) + 1.0
    lhs, rhs = (op(h, b, a) * y).sum(), (h * op(y, b, a)).sum()
    _close(lhs, rhs, scale=float(h.abs().sum() * y.abs().sum()) ** 0.5, rtol=1e-9)


def chain_rule_matches_autograd(op, g, b, a, scale):
    b_ = b.detach().clone().requires_grad_(True)
    a_ = a.detach().clone().requires_grad_(True)
    (g * (scale * b_ @ a_)).sum().backward()  # L = <G, dW>, so dL/d(dW) = G
    grads = op(g, b, a, scale)
    _close(grads.B, b_.grad, scale=float(b_.grad.abs().max()), rtol=1e-10)
    _close(grads.A, a_.grad, scale=float(a_.grad.abs().max()), rtol=1e-10)


# --- aligner: op(per_domain dict) -> dict of edited grads (tau=0, projection none) -------------


def aligner_reduces_to_mean(op, grads):
    out = op({"w": grads})["w"]
    assert torch.equal(out, grads.mean(dim=0)), "tau=0, projection=none must return mean_k G_k"
