"""Theorem 1 (THEOREMS.md): the OOD bound over domains drawn from a meta-distribution.

For K training domains drawn iid from the meta-distribution Q and *every*
predictor W (so also one learnt from the training data), with probability
at least ``1 - delta`` over the draw of the domains:

    R_Q(W) <= Rhat_K(W) + Dev_K(W),
    Dev_K(W) = 2 ||T_S|| eps_g + ||T_S||^2 eps_ss + 2 ||T_S|| ||T_I|| eps_si,

where ``T = W - W_ref`` (``W_ref`` = 0 for the linear problems, the frozen base
``W0`` for LoRA), ``T_S``/``T_I`` are its spurious/invariant input columns, and
``eps_j = sigma_j / sqrt(K) + b_j sqrt(2 ln(J / delta) / K)`` for each of the J
domain-varying moment blocks (McDiarmid's inequality for the norm of a mean of
bounded vectors in a Hilbert space, and a union bound over the J blocks).

``Rhat_K`` is the mean *population* risk of the K training domains: the bound is
about generalization across domains (the OOD claim), not within a domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from theory.problems import LinearShortcut, LoRAShift


def radii(stats: dict[str, tuple[float, float]], K: int, delta: float) -> dict[str, float]:
    """Concentration radius ``eps_j`` of each moment block, union bound over the blocks."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}.")
    log_term = math.log(len(stats) / delta)
    return {
        name: sigma / math.sqrt(K) + b * math.sqrt(2 * log_term / K)
        for name, (sigma, b) in stats.items()
    }


@dataclass
class BoundTerms:
    """Both sides of Theorem 1 for R replications: each field (R,)."""

    train: torch.Tensor  # Rhat_K(W): mean population risk over the training domains
    deviation: torch.Tensor  # Dev_K(W)
    bound: torch.Tensor  # train + deviation (for classification: the 0-1 bound)
    ood: torch.Tensor  # true fresh-domain risk R_Q(W) (classification: 0-1 error)
    ood_excess: torch.Tensor  # ood minus the best achievable fresh-domain risk
    spurious_norm: torch.Tensor  # ||T_S||


def linear_deviation(
    problem: LinearShortcut, w: torch.Tensor, K: int, delta: float
) -> torch.Tensor:
    """``Dev_K(w)`` for the linear shortcut problems, ``w`` (..., d)."""
    eps = radii(problem.deviation_stats(), K, delta)
    ws = w[..., problem.spu].norm(dim=-1)
    wi = w[..., problem.inv].norm(dim=-1)
    return 2 * ws * eps["g"] + ws.square() * eps["ss"] + 2 * ws * wi * eps["si"]


def lora_deviation(problem: LoRAShift, W: torch.Tensor, K: int, delta: float) -> torch.Tensor:
    """``Dev_K(W) = 2 ||(W - W0)_S||_F eps_g`` for the LoRA problem, ``W`` (..., out, in)."""
    eps = radii(problem.deviation_stats(), K, delta)
    return 2 * problem.spurious_part(W - problem.W0).norm(dim=(-2, -1)) * eps["g"]


def linear_bound(
    problem: LinearShortcut, w: torch.Tensor, mu: torch.Tensor, delta: float
) -> BoundTerms:
    """Theorem 1 for ``w`` (R, d) trained on domains ``mu`` (R, K, d_spu).

    Regression: squared risk. Classification: the 0-1 error, bounded through
    ``1[y f <= 0] <= (y - f)^2`` at the best scale ``alpha >= 0`` of ``w`` (the
    bound holds for every predictor at once, so optimizing alpha is free).
    """
    K = mu.shape[1]
    train = problem.train_risk(w, mu)
    dev = linear_deviation(problem, w, K, delta)
    ws = w[:, problem.spu].norm(dim=-1)
    if problem.kind == "regression":
        ood = problem.ood_risk(w)
        best = problem.ood_risk(problem.ood_optimum())
        return BoundTerms(train, dev, train + dev, ood, ood - best, ws)
    # Rhat(a w) + Dev(a w) = v - 2 a p + a^2 q: minimized at a = p / q when p > 0.
    m = problem.moments(mu)
    lin = (w[:, None, :] * m.c).sum(-1).mean(-1)  # (R,) mean_k w . c_k
    quad = (w[:, None, :] * (m.C @ w[:, None, :, None])[..., 0]).sum(-1).mean(-1)  # (R,)
    eps = radii(problem.deviation_stats(), K, delta)
    wi = w[:, problem.inv].norm(dim=-1)
    p = lin - ws * eps["g"]
    q = quad + ws.square() * eps["ss"] + 2 * ws * wi * eps["si"]
    v = problem.label_second_moment
    alpha = torch.where(p > 0, p / q, torch.zeros_like(p))  # (R,)
    scaled = alpha[:, None] * w
    train_sq = problem.train_risk(scaled, mu)
    dev = linear_deviation(problem, scaled, K, delta)
    bound = (train_sq + dev).clamp(max=v)  # the 0-1 error is at most 1 = v anyway
    ood = problem.ood_error(w)
    best = problem.ood_error(problem.ood_optimum())
    return BoundTerms(train_sq, dev, bound, ood, ood - best, ws)


def lora_bound(
    problem: LoRAShift, W: torch.Tensor, shifts: torch.Tensor, delta: float
) -> BoundTerms:
    """Theorem 1 for effective weights ``W`` (R, out, in) trained on ``shifts`` (R, K, out, in)."""
    K = shifts.shape[1]
    train = problem.train_risk(W, shifts)
    dev = lora_deviation(problem, W, K, delta)
    ood = problem.ood_risk(W)
    best = problem.ood_risk(problem.ood_optimum())
    ws = problem.spurious_part(W - problem.W0).norm(dim=(-2, -1))
    return BoundTerms(train, dev, train + dev, ood, ood - best, ws)
