"""Theorems 2 and 3 (THEOREMS.md): IGA-SGD reaches stationarity at the SGD rate.

Theorem 2 (plain parameters, e.g. the linear models; the mask from the same
noisy per-domain gradients as the step): with ``F`` L-smooth, per-domain
gradient noise with E||mean noise||^2 <= sigma2 that is Gaussian iid across
domains (so the mask's correlation with the noise helps, Lemma 2.1), mask values
in [m0, 1] and step ``eta = c / sqrt(T)`` with ``c <= 1 / (2 L)``:

    (1/T) sum_t E sum_j M_tj (d_j F(w_t))^2  <=  C / sqrt(T),     C = 2 Delta / c + L c sigma2
    min_t E ||grad F(w_t)||^2                <=  C / (m0 sqrt(T))

Theorem 3 (LoRA factors, full-space mask + rank-r projection + chain rule):
the same descent argument with the factor objective ``f(A, B) = F(W0 + s B A)``,
smooth with constant ``L = L_F s^2 (rho_A^2 + rho_B^2) + s sup ||grad F||_op`` on
the region the run visits, gives
``(1/T) sum_t E <grad f, d_t> <= (2 Delta / c + L c b) / sqrt(T)`` whenever
``E ||d_t||^2 <= 2 E <grad f, d_t> + b`` and ``c <= 1 / (2 L)``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

import iga
from theory.problems import DTYPE, LinearShortcut


def mask_floor_bound(config: iga.IGAConfig) -> float:
    """The m0 with ``M >= m0`` always: relative variance is at most 1, so
    ``M >= floor + (1 - floor) exp(-tau)``; the raw variance is unbounded (m0 = floor)."""
    if config.variance == "relative":
        return config.mask_floor + (1 - config.mask_floor) * math.exp(-config.tau)
    return config.mask_floor


def rate_constant(delta_f: float, smoothness: float, noise: float, c: float) -> float:
    """``C = 2 Delta / c + L c b`` of Theorems 2 and 3."""
    return 2 * delta_f / c + smoothness * c * noise


def linear_objective(problem: LinearShortcut, mu: torch.Tensor):
    """ERM objective ``F(w) = mean_k R_k(w)`` on domains ``mu`` (K, d_spu): (gradient, L, F*, F)."""
    m = problem.moments(mu)
    c_bar, C_bar, syy = m.c.mean(0), m.C.mean(0), float(m.syy.mean())

    def value(w):
        return syy - 2 * (w * c_bar).sum(-1) + (w * (w @ C_bar)).sum(-1)

    def grad(w):
        return 2 * (w @ C_bar - c_bar)  # (R, d); C_bar is symmetric

    w_star = torch.linalg.solve(C_bar, c_bar)
    smooth = 2 * float(torch.linalg.eigvalsh(C_bar).max())
    return grad, smooth, float(value(w_star)), value


def lora_smoothness(op_A, op_B, op_grad, scale: float, grad_lipschitz: float = 2.0):
    """Bound on the Hessian of ``f(A, B) = F(W0 + s B A)`` where ``||A||_op <= op_A``,
    ``||B||_op <= op_B`` and ``||grad F(W)||_op <= op_grad``:

        L = L_F s^2 (op_A^2 + op_B^2) + s op_grad

    (second derivative along (a, b): ``<hess F[s(bA + Ba)], s(bA + Ba)> + 2 s <grad F, b a>``).
    """
    return grad_lipschitz * scale**2 * (op_A**2 + op_B**2) + scale * op_grad


def lora_path_smoothness(
    trace: dict[str, torch.Tensor], scale: float, grad_lipschitz: float = 2.0
) -> float:
    """``L_hat``: the bound above on every segment [theta_t, theta_t+1] of a run (all replications).

    Norms of A and B on a segment are at most their endpoint maxima (convexity); grad F
    is affine in W and W is quadratic on the segment, which adds ``L_F s seg / 4``.
    """
    op_grad = trace["op_grad"] + grad_lipschitz * scale * trace["seg"] / 4
    per_step = lora_smoothness(trace["op_A"], trace["op_B"], op_grad, scale, grad_lipschitz)
    return float(per_step.max())


def probe_projection(config: iga.IGAConfig, grads: torch.Tensor, rank: int):
    """The aligner's projected masked gradient ``P(H)`` and ``H = M * Gbar`` for grads (K, out, in).

    With factors ``B = I`` and ``s = 1`` the chain rule returns ``dA = B^T P(H) = P(H)``,
    so one ``iga.align_gradients`` call exposes the step's projection at rank ``rank``.
    """
    _, out, inn = grads.shape
    probe = iga.LoRAFactors(
        A=torch.zeros((out, inn), dtype=DTYPE), B=torch.eye(out, dtype=DTYPE), scale=1.0
    )
    cfg = replace(config, rank=rank, warmup_steps=0)
    res = iga.align_gradients({"probe": grads}, cfg, {"probe": probe})
    return res.grads["probe"].A, res.masks["probe"] * grads.mean(dim=0)


def eckart_young_gap(P: torch.Tensor, H: torch.Tensor, rank: int) -> tuple[int, float]:
    """``(rank of P, ||H - P||_F^2 / tail_r(H) - 1)``; tail_r(H) = sum_{i>r} s_i(H)^2.

    The rank-r truncated SVD has rank <= r and gap 0 (Eckart-Young); any other
    rank-r matrix has gap > 0.
    """
    sv_p = torch.linalg.svdvals(P)
    rank_p = int((sv_p > sv_p.max() * 1e-9).sum()) if float(sv_p.max()) > 0 else 0
    tail = float(torch.linalg.svdvals(H)[rank:].square().sum())
    resid = float((H - P).square().sum())
    scale = float(H.square().sum())
    return rank_p, (resid - tail) / max(tail, 1e-12 * scale, 1e-300)
