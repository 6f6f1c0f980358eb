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


class ANDMask(GradientEdit):
    """AND-mask, Parascandolo et al. 2021, "Learning explanations that are hard to vary",
    arXiv 2009.00329: keep the mean gradient only where at least ``tau`` of the domains
    agree in sign (``|mean_k sign G_k| >= tau``), rescaled by the kept fraction
    (DomainBed's ``ANDMask``)."""

    def edit(self, per_domain):
        out, kept, total = {}, 0.0, 0
        for key, g in per_domain.items():  # g: (K, *shape)
            agreement = torch.sign(g).mean(dim=0).abs()  # (*shape)
            mask = (agreement >= self.hparams["tau"]).to(g.dtype)
            frac = mask.mean()
            out[key] = mask * g.mean(dim=0) / (1e-10 + frac)
            kept, total = kept + float(mask.sum()), total + mask.numel()
        return out, {"mask_mean": kept / max(total, 1)}


class SANDMask(GradientEdit):
    """SAND-mask, Shahtalebi et al. 2021, "SAND-mask: An Enhanced Gradient Masking Strategy
    for the Discovery of Invariances in Domain Generalization", arXiv 2106.02266:
    ``M = max(0, tanh(k (|mean_k sign G_k| - tau) / Var_k G_k))``, rescaled by its mean.

    DomainBed's default ``tau = 1`` makes ``|mean sign| - tau <= 0`` everywhere, so the
    mask is 0 and the model never moves; our default ``tau = 0.4`` keeps coordinates
    where more than 70% of the domains agree (3 of 4: agreement 0.5).
    """

    def edit(self, per_domain):
        out, kept, total = {}, 0.0, 0
        for key, g in per_domain.items():  # g: (K, *shape)
            agreement = torch.sign(g).mean(dim=0).abs()  # (*shape)
            var = g.var(dim=0, unbiased=False).clamp_min(1e-17)  # (*shape)
            mask = torch.tanh(self.hparams["k"] * (agreement - self.hparams["tau"]) / var)
            mask = mask.clamp_min(0.0).nan_to_num(1e-17)
            out[key] = mask * g.mean(dim=0) / (1e-10 + mask.mean())
            kept, total = kept + float(mask.sum()), total + mask.numel()
        return out, {"mask_mean": kept / max(total, 1)}


class PCGrad(GradientEdit):
    """PCGrad, Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", arXiv 2001.06782,
    with domains as tasks: each domain's gradient (all LoRA factors, flattened) loses its
    component along every other domain's gradient it conflicts with (negative inner
    product), in a random order; the step uses the mean of the projected gradients."""

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator().manual_seed(seed)

    def edit(self, per_domain):
        keys = list(per_domain)
        flat = torch.cat([per_domain[k].reshape(self.num_domains, -1) for k in keys], dim=1)
        projected = flat.clone()  # (K, P)
        conflicts = 0
        for i in range(self.num_domains):
            for j in torch.randperm(self.num_domains, generator=self.generator).tolist():
                if j == i:
                    continue
                dot = projected[i] @ flat[j]
                if dot < 0:
                    projected[i] -= dot / flat[j].square().sum().clamp_min(1e-20) * flat[j]
                    conflicts += 1
        mean = projected.mean(dim=0)  # (P,)
        out, start = {}, 0
        for k in keys:
            n = per_domain[k][0].numel()
            out[k] = mean[start : start + n].view_as(per_domain[k][0])
            start += n
        pairs = self.num_domains * (self.num_domains - 1)
        return out, {"conflict_frac": conflicts / max(pairs, 1)}
