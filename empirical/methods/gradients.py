"""Gradient-level baselines on IGA's per-domain gradient capture.

AND-mask, SAND-mask and PCGrad edit the per-domain gradients of the LoRA
factors that ``iga.core.capture.PerDomainGradients(space="factor")`` captures in the
same single backward pass IGA uses (``G_k = dL_k/dA``, ``dL_k/dB``), so they
share IGA's machinery rather than running K backward passes.
"""

from __future__ import annotations

import torch

from empirical.methods.base import Batch, Method
from iga.core.capture import PerDomainGradients
from iga.core.losses import domain_mean_loss


class GradientEdit(Method):
    """Capture per-domain factor gradients in one backward, replace ``.grad`` by ``edit``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.capture = PerDomainGradients(self.model, self.num_domains, space="factor")

    def edit(self, per_domain: dict[str, torch.Tensor]) -> tuple[dict, dict[str, float]]:
        raise NotImplementedError

    def _step(self, batch: Batch) -> dict[str, float]:
        self.capture.set_domains(batch["domain_ids"])
        ce, mask, _ = self.forward(batch)
        loss = domain_mean_loss(ce, mask, batch["domain_ids"], self.num_domains)
        loss.backward()
        grads, stats = self.edit(self.capture.per_domain())  # key -> (K, *shape)
        self.capture.write_grads(grads)
        self.capture.reset()
        return {"loss": loss.item(), **stats, "grad_norm": self._clip_and_step()}

    def close(self) -> None:
        self.capture.remove()


def and_mask(g: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """AND-mask's gradient for one parameter (Parascandolo et al. 2021; DomainBed's
    ``ANDMask.mask_grads``): (K, *shape) -> (update (*shape), mask (*shape)).

    ``m = [|mean_k sign G_k| >= tau]``, update ``m * mean_k G_k / (1e-10 + mean(m))``.
    """
    agreement = torch.sign(g).mean(dim=0).abs()  # (*shape)
    mask = (agreement >= tau).to(g.dtype)
    return mask * g.mean(dim=0) / (1e-10 + mask.mean()), mask


def sand_mask(g: torch.Tensor, tau: float, k: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SAND-mask's gradient for one parameter (Shahtalebi et al. 2021; DomainBed's
    ``SANDMask.mask_grads``): (K, *shape) -> (update (*shape), mask (*shape)).

    ``m = max(0, tanh(k (|mean_k sign G_k| - tau) / Var_k G_k))`` with the unbiased
    variance (divisor K - 1, as ``torch.var``'s default in DomainBed), update
    ``m * mean_k G_k / (1e-10 + mean(m))``. DomainBed's edge cases are kept: an undefined
    variance (K = 1) counts as 1e-17, a zero variance makes the ratio infinite (mask 1
    where the agreement exceeds tau, 0 below), and 0/0 (agreement exactly tau, zero
    variance) gives the mask value 1e-17.
    """
    agreement = torch.sign(g).mean(dim=0).abs()  # (*shape)
    var = g.var(dim=0)  # (*shape), divisor K - 1
    var = torch.where(torch.isnan(var), torch.full_like(var, 1e-17), var)
    mask = torch.tanh(k * (agreement - tau) / var).clamp_min(0.0)  # NaN stays NaN
    mask = torch.where(torch.isnan(mask), torch.full_like(mask, 1e-17), mask)
    return mask * g.mean(dim=0) / (1e-10 + mask.mean()), mask


def pcgrad(flat: torch.Tensor, orders: list[list[int]]) -> tuple[torch.Tensor, int]:
    """PCGrad's surgery (Yu et al. 2020, Algorithm 1) on K task gradients (K, P).

    ``g_i^PC`` starts at ``g_i``; for each ``j`` of ``orders[i]`` (the other tasks in a
    random order), if ``g_i^PC . g_j < 0``, ``g_i^PC -= (g_i^PC . g_j) / ||g_j||^2 g_j``
    (projection on the original ``g_j``). Returns ``(mean_i g_i^PC (P,), conflicts)``:
    the paper sums the projected gradients; we average them, so that the update has the
    scale of the mean-over-domains loss every other method uses (K times smaller; under
    Adam that changes only the clipping and epsilon).
    """
    projected = flat.clone()  # (K, P)
    conflicts = 0
    for i, order in enumerate(orders):
        for j in order:
            dot = projected[i] @ flat[j]
            if dot < 0:
                projected[i] -= dot / flat[j].square().sum().clamp_min(1e-20) * flat[j]
                conflicts += 1
    return projected.mean(dim=0), conflicts


class ANDMask(GradientEdit):
    """AND-mask, Parascandolo et al. 2021, "Learning explanations that are hard to vary",
    arXiv 2009.00329: ``and_mask`` on each LoRA factor, as DomainBed's ``ANDMask`` does on
    each parameter tensor (keep the mean gradient where at least ``tau`` of the domains
    agree in sign, rescaled by the kept fraction)."""

    def edit(self, per_domain):
        out, kept, total = {}, 0.0, 0
        for key, g in per_domain.items():  # g: (K, *shape)
            out[key], mask = and_mask(g, self.hparams["tau"])
            kept, total = kept + float(mask.sum()), total + mask.numel()
        return out, {"mask_mean": kept / max(total, 1)}


class SANDMask(GradientEdit):
    """SAND-mask, Shahtalebi et al. 2021, "SAND-mask: An Enhanced Gradient Masking Strategy
    for the Discovery of Invariances in Domain Generalization", arXiv 2106.02266:
    ``sand_mask`` on each LoRA factor, as DomainBed's ``SANDMask`` on each parameter tensor
    (same agreement term, same unbiased variance, same rescaling by the mask's mean).

    Where it differs from DomainBed, and why: the default threshold. DomainBed's default
    ``tau = 1`` makes ``|mean sign| - tau <= 0`` everywhere, so the mask is 0 and the model
    never moves; our default ``tau = 0.4`` keeps coordinates where more than 70% of the
    domains agree (3 of 4: agreement 0.5). The search ranges are DomainBed's.
    """

    def edit(self, per_domain):
        out, kept, total = {}, 0.0, 0
        for key, g in per_domain.items():  # g: (K, *shape)
            out[key], mask = sand_mask(g, self.hparams["tau"], self.hparams["k"])
            kept, total = kept + float(mask.sum()), total + mask.numel()
        return out, {"mask_mean": kept / max(total, 1)}


class PCGrad(GradientEdit):
    """PCGrad, Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", arXiv 2001.06782,
    with domains as tasks: ``pcgrad`` on the domains' gradients of all LoRA factors,
    flattened into one vector per domain, each domain with its own random order of the
    others (a ``torch.Generator`` seeded by the run); the step uses the mean of the
    projected gradients (the paper: their sum; see ``pcgrad``). DomainBed has no PCGrad."""

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator().manual_seed(seed)

    def edit(self, per_domain):
        keys = list(per_domain)
        flat = torch.cat([per_domain[k].reshape(self.num_domains, -1) for k in keys], dim=1)
        orders = []
        for i in range(self.num_domains):
            perm = torch.randperm(self.num_domains, generator=self.generator).tolist()
            orders.append([j for j in perm if j != i])
        mean, conflicts = pcgrad(flat, orders)  # (P,)
        out, start = {}, 0
        for k in keys:
            n = per_domain[k][0].numel()
            out[k] = mean[start : start + n].view_as(per_domain[k][0])
            start += n
        pairs = self.num_domains * (self.num_domains - 1)
        return out, {"conflict_frac": conflicts / max(pairs, 1)}
