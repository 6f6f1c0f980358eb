"""The Continuous Gradient Conflict Mask (arXiv 2606.05025, abstract; docs/design.md section 2).

Given per-domain gradients ``G`` of shape (K, *shape):

    Gbar = mean_k G_k                         (the ERM gradient)
    V    = mean_k (G_k - Gbar)^2              ("raw": population variance)
    V    = V / (mean_k G_k^2 + eps)           ("relative": in [0, 1), scale-free)
    M    = m0 + (1 - m0) * exp(-tau * V)      (m0 = 0 is the paper's mask)

All functions are pure, differentiable in ``G`` and ``tau``, and batched over
the coordinate dimensions.

``V`` above is the variance of *minibatch* gradients; it carries the sampling noise
of every domain (``split_conflict_variance`` removes it; theory/THEOREMS.md, Lemma E).
"""

from __future__ import annotations

import math
import warnings

import torch

from iga.core.config import VARIANCE_KINDS


def _check_stack(grads: torch.Tensor) -> None:
    if grads.dim() < 1 or grads.shape[0] < 1:
        raise ValueError(
            f"per-domain gradients need a leading domain axis with K >= 1; got shape "
            f"{tuple(grads.shape)}."
        )


def conflict_variance(grads: torch.Tensor, kind: str = "raw", eps: float = 0.0) -> torch.Tensor:
    """Per-coordinate cross-domain variance ``V`` of ``grads`` (K, *shape) -> (*shape).

    Computed on gradients shifted by the first domain, so identical domains give
    exactly ``V = 0`` in floating point (a plain ``mean`` of K equal numbers can
    round away from them) and the two-pass formula keeps ``V >= 0``.

    ``kind="relative"`` divides by ``mean_k G_k^2 + eps``; with ``eps = 0`` a
    coordinate where every domain's gradient is 0 gets ``V = 0``.
    """
    _check_stack(grads)
    if kind not in VARIANCE_KINDS:
        raise ValueError(
            f"conflict_variance kind={kind!r} is unknown; choose one of {VARIANCE_KINDS}."
        )
    shifted = grads - grads[:1]  # (K, *shape); exactly 0 where domains agree
    centred = shifted - shifted.mean(dim=0, keepdim=True)  # (K, *shape)
    var = centred.square().mean(dim=0)  # (*shape)
    if kind == "raw":
        return var
    mean_sq = grads.square().mean(dim=0) + eps  # (*shape)
    positive = mean_sq > 0
    # Safe denominator: torch.where alone would still back-propagate 0/0 = nan.
    safe = torch.where(positive, mean_sq, torch.ones_like(mean_sq))
    return torch.where(positive, var / safe, torch.zeros_like(var))


def conflict_mask(
    variance: torch.Tensor, tau: float | torch.Tensor, floor: float = 0.0
) -> torch.Tensor:
    """``M = floor + (1 - floor) * exp(-tau * V)``, elementwise; values in (0, 1].

    ``tau`` may be a tensor that requires grad (the mask is differentiable in it).
    """
    tau_t = torch.as_tensor(tau, dtype=variance.dtype, device=variance.device)
    if bool((tau_t < 0).any()) or not bool(torch.isfinite(tau_t).all()):
        raise ValueError(f"conflict_mask needs a finite tau >= 0, got {tau!r}.")
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"conflict_mask floor must lie in [0, 1), got {floor!r}.")
    # Clamped at the smallest normal number so M > 0 holds in floating point too
    # (exp underflows to 0 once tau * V > ~745 in float64).
    mask = torch.exp(-tau_t * variance).clamp_min(torch.finfo(variance.dtype).tiny)
    if floor == 0.0:
        return mask
    return floor + (1.0 - floor) * mask


def masked_mean(
    grads: torch.Tensor,
    tau: float | torch.Tensor,
    kind: str = "raw",
    eps: float = 0.0,
    floor: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M * Gbar, M)`` for per-domain gradients (K, *shape); both of shape (*shape)."""
    mask = conflict_mask(conflict_variance(grads, kind=kind, eps=eps), tau, floor=floor)
    return mask * grads.mean(dim=0), mask


def split_conflict_variance(
    grads_a: torch.Tensor, grads_b: torch.Tensor, kind: str = "raw", eps: float = 0.0
) -> torch.Tensor:
    """Unbiased between-domain variance ``var_k(mu_k)`` from two independent halves.

    ``grads_a``, ``grads_b`` (K, *shape) -> (*shape). Row k of each is the gradient of
    domain k's mean loss over one of two disjoint halves of its examples in the batch,
    so ``a_k`` and ``b_k`` are independent unbiased estimates of the domain's mean
    gradient ``mu_k`` (theory/THEOREMS.md, Lemma E).

    Derivation. The target is ``V_between = (1/K) sum_k mu_k^2 - (1/K^2) sum_{k,j} mu_k mu_j``.
    The minibatch variance ``conflict_variance(G)`` of ``G_k = (a_k + b_k) / 2`` has
    ``E[V_batch] = V_between + ((K - 1) / K^2) sum_k sigma_k^2 / n_k``: its squares
    ``G_k^2`` carry the noise variance. Products of *independent* pieces do not:
    ``E[a_k b_k] = mu_k^2`` and, for ``k != j``, ``E[G_k G_j] = mu_k mu_j``. Hence

        V_hat = ((K - 1) / K^2) sum_k a_k b_k  -  (1 / K^2) sum_{k != j} G_k G_j

    has ``E[V_hat] = V_between`` exactly, whatever the noise. It is clamped at 0 (a
    negative estimate means "no detectable disagreement"), which adds a bias of at most
    ``E[max(0, -V_hat)]``, vanishing as the noise falls.

    ``kind="relative"`` divides by the matching unbiased estimate of ``mean_k mu_k^2``,
    ``S = (1/K) sum_k a_k b_k``, plus ``eps``; the ratio of the population quantities lies
    in [0, 1] (a variance never exceeds the mean square), and the estimate is capped
    there: ``V_rel = V_hat / max(S + eps, V_hat)`` (0 where both are 0).

    Identical halves and domains give exactly 0. With K = 1 there is no between-domain
    variance: the result is 0 (the mask is 1 and IGA's step is ERM's), with a warning.
    """
    if kind not in VARIANCE_KINDS:
        raise ValueError(
            f"split_conflict_variance kind={kind!r} is unknown; choose one of {VARIANCE_KINDS}."
        )
    for name, g in (("grads_a", grads_a), ("grads_b", grads_b)):
        _check_stack(g)
        if not g.dtype.is_floating_point:
            raise TypeError(
                f"split_conflict_variance: {name} has dtype {g.dtype}; pass floating-point "
                f"gradients (e.g. .float())."
            )
    if grads_a.shape != grads_b.shape:
        raise ValueError(
            f"split_conflict_variance: grads_a {tuple(grads_a.shape)} and grads_b "
            f"{tuple(grads_b.shape)} must have the same (K, *shape)."
        )
    if grads_a.dtype != grads_b.dtype:
        raise TypeError(
            f"split_conflict_variance: grads_a is {grads_a.dtype} but grads_b is "
            f"{grads_b.dtype}; cast both to one dtype."
        )
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"split_conflict_variance eps must be finite and >= 0, got {eps!r}.")
    k = grads_a.shape[0]
    if k == 1:
        warnings.warn(
            "split_conflict_variance with K = 1 domain: no between-domain variance, V = 0 "
            "(the mask is 1 and the step is ERM's).",
            stacklevel=2,
        )
        return torch.zeros_like(grads_a[0])
    # V_hat is exactly invariant to shifting every piece by one common c (an algebraic
    # identity: the c-terms of the two sums cancel), so shifting by domain 0's batch
    # gradient changes nothing in exact arithmetic and makes agreeing domains give
    # exactly 0 in floating point (as conflict_variance does).
    ref = 0.5 * (grads_a[:1] + grads_b[:1])  # (1, *shape)
    a = grads_a - ref  # (K, *shape)
    b = grads_b - ref  # (K, *shape)
    g = 0.5 * (a + b)  # (K, *shape): the domain's batch gradient, shifted
    same = (a * b).sum(dim=0)  # (*shape): sum_k a_k b_k, estimates sum_k mu_k^2
    total = g.sum(dim=0)  # (*shape)
    cross = total.square() - g.square().sum(dim=0)  # (*shape): sum_{k != j} G_k G_j
    v_hat = ((k - 1) * same - cross) / (k * k)  # (*shape)
    v_hat = v_hat.clamp_min(0.0)
    if kind == "raw":
        return v_hat
    signal = (grads_a * grads_b).mean(dim=0) + eps  # (*shape): estimates mean_k mu_k^2
    denom = torch.maximum(signal, v_hat)  # (*shape); >= v_hat >= 0
    positive = denom > 0
    safe = torch.where(positive, denom, torch.ones_like(denom))
    return torch.where(positive, v_hat / safe, torch.zeros_like(v_hat))
