"""The Continuous Gradient Conflict Mask (arXiv 2606.05025, abstract; DESIGN.md section 2).

Given per-domain gradients ``G`` of shape (K, *shape):

    Gbar = mean_k G_k                         (the ERM gradient)
    V    = mean_k (G_k - Gbar)^2              ("raw": population variance)
    V    = V / (mean_k G_k^2 + eps)           ("relative": in [0, 1), scale-free)
    M    = m0 + (1 - m0) * exp(-tau * V)      (m0 = 0 is the paper's mask)

All functions are pure, differentiable in ``G`` and ``tau``, and batched over
the coordinate dimensions.
"""

from __future__ import annotations

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
