"""Loss-level invariance baselines: IRMv1, V-REx and GroupDRO (DomainBed's recipes)."""

from __future__ import annotations

import torch

from empirical.methods.base import Batch, Method
from iga.core.losses import completion_token_losses, per_domain_losses


class _Annealed(Method):
    """A penalty with weight 1 for ``anneal_frac * steps`` steps, then ``lambda``.

    As in DomainBed, Adam's moments are reset when the full weight switches on,
    because the loss scale jumps.
    """

    def penalty_weight(self) -> float:
        anneal = int(self.hparams["anneal_frac"] * self.steps)
        if self.update_count == anneal and anneal > 0:
            self.reset_optimizer()
        return self.hparams["lambda"] if self.update_count >= anneal else 1.0


class IRMv1(_Annealed):
    """IRMv1, Arjovsky et al. 2019, "Invariant Risk Minimization", arXiv 1907.02893.

    The dummy classifier is a scalar ``w = 1`` multiplying the logits; the penalty
    is ``sum_k (dL_k/dw)^2``, estimated without bias as the product of the
    gradients on two halves of domain k's batch (DomainBed's ``IRM``).
    """

    def irm_penalty(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        scale = torch.ones((), device=logits.device, requires_grad=True)
        ce, mask = completion_token_losses(logits * scale, batch["labels"])  # (B, T-1)
        penalty = logits.new_zeros(())
        ids = batch["domain_ids"]
        for k in range(self.num_domains):
            rows = torch.nonzero(ids == k).squeeze(1)
            halves = (rows[0::2], rows[1::2]) if rows.numel() > 1 else (rows, rows)
            grads = []
            for h in halves:
                m = mask[h].to(ce.dtype)
                loss_h = (ce[h] * m).sum() / m.sum().clamp_min(1.0)
                grads.append(torch.autograd.grad(loss_h, [scale], create_graph=True)[0])
            penalty = penalty + grads[0] * grads[1]
        return penalty

    def _step(self, batch: Batch) -> dict[str, float]:
        weight = self.penalty_weight()
        ce, mask, logits = self.forward(batch)
        nll = per_domain_losses(ce, mask, batch["domain_ids"], self.num_domains).mean()
        penalty = self.irm_penalty(logits, batch)
        loss = nll + weight * penalty
        if weight > 1.0:  # keep the gradient scale comparable (Arjovsky et al.'s code)
            loss = loss / weight
        loss.backward()
        return {
            "loss": nll.item(),
            "penalty": penalty.item(),
            "grad_norm": self._clip_and_step(),
        }


class VREx(_Annealed):
    """V-REx, Krueger et al. 2021, "Out-of-Distribution Generalization via Risk
    Extrapolation (REx)", arXiv 2003.00688: ``mean_k L_k + lambda Var_k(L_k)``."""

    def _step(self, batch: Batch) -> dict[str, float]:
        weight = self.penalty_weight()
        ce, mask, _ = self.forward(batch)
        losses = per_domain_losses(ce, mask, batch["domain_ids"], self.num_domains)  # (K,)
        penalty = ((losses - losses.mean()) ** 2).mean()
        loss = losses.mean() + weight * penalty
        if weight > 1.0:
            loss = loss / weight
        loss.backward()
        return {
            "loss": losses.mean().item(),
            "penalty": penalty.item(),
            "grad_norm": self._clip_and_step(),
        }


class GroupDRO(Method):
    """GroupDRO, Sagawa et al. 2020, "Distributionally Robust Neural Networks for Group
    Shifts", arXiv 1911.08731: online exponentiated-gradient weights ``q`` over domains,
    ``q_k <- q_k exp(eta L_k)``, loss ``sum_k q_k L_k``."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.q = torch.full((self.num_domains,), 1.0 / self.num_domains)  # (K,)

    def _step(self, batch: Batch) -> dict[str, float]:
        ce, mask, _ = self.forward(batch)
        losses = per_domain_losses(ce, mask, batch["domain_ids"], self.num_domains)  # (K,)
        self.q = self.q * torch.exp(self.hparams["eta"] * losses.detach().cpu())
        self.q = self.q / self.q.sum()
        loss = (self.q.to(losses) * losses).sum()
        loss.backward()
        return {
            "loss": losses.mean().item(),
            "q_max": float(self.q.max()),
            "grad_norm": self._clip_and_step(),
        }
