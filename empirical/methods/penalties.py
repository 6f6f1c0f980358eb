"""Loss-level invariance baselines: IRMv1, V-REx and GroupDRO (DomainBed's recipes).

Each penalty is a module-level function of tensors, so that
``tests/test_baseline_fidelity.py`` can check it against an independent computation
of its paper's equation (and a broken variant can be swapped in to show that the
check fails).

Shared differences from DomainBed (``domainbed/algorithms.py``), all methods alike:
``L_k`` is domain k's mean token cross-entropy over its completion tokens (DomainBed:
mean example cross-entropy); the optimizer is the shared AdamW with the cosine schedule
and gradient clipping of ``empirical.methods.base`` (DomainBed: Adam at a constant
rate, no clipping); the annealing length is a fraction of the run (``anneal_frac``),
not a number of iterations.
"""

from __future__ import annotations

import torch

from empirical.methods.base import Batch, Method
from iga.core.losses import completion_token_losses, per_domain_losses


def annealed_weight(method: Method, before: float) -> float:
    """``before`` for the first ``anneal_frac * steps`` updates, then ``lambda``.

    As in DomainBed, Adam's moments are reset at the update where the full weight
    switches on (the loss scale jumps); with ``anneal_frac = 0`` there is nothing to
    reset. IRMv1 and V-REx use ``before = 1`` (DomainBed's ``IRM``, ``VREx``), Fishr
    ``before = 0`` (DomainBed's ``Fishr``).
    """
    anneal = int(method.hparams["anneal_frac"] * method.steps)
    if method.update_count == anneal and anneal > 0:
        method.reset_optimizer()
    return method.hparams["lambda"] if method.update_count >= anneal else before


def irm_penalty(
    logits: torch.Tensor, labels: torch.Tensor, domain_ids: torch.Tensor, num_domains: int
) -> torch.Tensor:
    """IRMv1's penalty (Arjovsky et al. 2019, the IRMv1 objective; DomainBed's ``_irm_penalty``).

    ``mean_k (dL_k^a/dw)(dL_k^b/dw)`` at ``w = 1``, where ``w`` scales the logits
    (B, T, V) and ``a``/``b`` are the even and odd examples of domain k (B = sum n_k):
    the unbiased two-half estimate of ``mean_k (dL_k/dw)^2``. A domain with a single
    example pairs it with itself. Differentiable in ``logits``.
    """
    scale = torch.ones((), dtype=logits.dtype, device=logits.device, requires_grad=True)
    ce, mask = completion_token_losses(logits * scale, labels)  # (B, T-1)
    penalty = logits.new_zeros((), dtype=ce.dtype)
    for k in range(num_domains):
        rows = torch.nonzero(domain_ids == k).squeeze(1)
        halves = (rows[0::2], rows[1::2]) if rows.numel() > 1 else (rows, rows)
        grads = []
        for h in halves:
            m = mask[h].to(ce.dtype)  # (n_h, T-1)
            loss_h = (ce[h] * m).sum() / m.sum().clamp_min(1.0)
            grads.append(torch.autograd.grad(loss_h, [scale], create_graph=True)[0])
        penalty = penalty + grads[0] * grads[1]
    return penalty / num_domains


def vrex_penalty(losses: torch.Tensor) -> torch.Tensor:
    """V-REx's penalty (Krueger et al. 2021): ``Var_k L_k`` with divisor K, (K,) -> ()."""
    return (losses - losses.mean()).square().mean()


def groupdro_weights(q: torch.Tensor, losses: torch.Tensor, eta: float) -> torch.Tensor:
    """One exponentiated-gradient step on the domain weights (Sagawa et al. 2020, Alg. 1):
    ``q_k <- q_k exp(eta L_k) / sum_j q_j exp(eta L_j)``; (K,), (K,) -> (K,), no gradient."""
    q = q * torch.exp(eta * losses.detach().to(q))
    return q / q.sum()


class IRMv1(Method):
    """IRMv1, Arjovsky et al. 2019, "Invariant Risk Minimization", arXiv 1907.02893.

    ``mean_k L_k + weight * irm_penalty``, weight 1 for ``anneal_frac`` of the run and
    ``lambda`` after (with an Adam reset), as DomainBed's ``IRM``: the penalty is the mean
    over domains (DomainBed and Arjovsky et al.'s code both average) and the objective is
    not divided by the weight (Arjovsky et al.'s code divides by it when it exceeds 1;
    DomainBed does not, and under Adam the two differ only through gradient clipping).
    """

    def _step(self, batch: Batch) -> dict[str, float]:
        weight = annealed_weight(self, before=1.0)
        ce, mask, logits = self.forward(batch, logits=True)  # the penalty scales the logits
        nll = per_domain_losses(ce, mask, batch["domain_ids"], self.num_domains).mean()
        penalty = irm_penalty(logits, batch["labels"], batch["domain_ids"], self.num_domains)
        loss = nll + weight * penalty
        loss.backward()
        return {
            "loss": nll.item(),
            "penalty": penalty.item(),
            "grad_norm": self._clip_and_step(),
        }


class VREx(Method):
    """V-REx, Krueger et al. 2021, "Out-of-Distribution Generalization via Risk
    Extrapolation (REx)", arXiv 2003.00688: ``mean_k L_k + weight * Var_k(L_k)``.

    DomainBed's ``VREx``: variance with divisor K, weight 1 for ``anneal_frac`` of the run
    then ``lambda`` with an Adam reset, objective not divided by the weight.
    """

    def _step(self, batch: Batch) -> dict[str, float]:
        weight = annealed_weight(self, before=1.0)
        ce, mask, _ = self.forward(batch)
        losses = per_domain_losses(ce, mask, batch["domain_ids"], self.num_domains)  # (K,)
        penalty = vrex_penalty(losses)
        loss = losses.mean() + weight * penalty
        loss.backward()
        return {
            "loss": losses.mean().item(),
            "penalty": penalty.item(),
            "grad_norm": self._clip_and_step(),
        }


class GroupDRO(Method):
    """GroupDRO, Sagawa et al. 2020, "Distributionally Robust Neural Networks for Group
    Shifts", arXiv 1911.08731, Algorithm 1 with domains as groups (DomainBed's ``GroupDRO``):
    ``q`` starts uniform, is updated by ``groupdro_weights`` with this step's losses, and
    the step minimises ``sum_k q_k L_k`` with the updated ``q`` (no gradient through ``q``).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.q = torch.full((self.num_domains,), 1.0 / self.num_domains)  # (K,)

    def _step(self, batch: Batch) -> dict[str, float]:
        ce, mask, _ = self.forward(batch)
        losses = per_domain_losses(ce, mask, batch["domain_ids"], self.num_domains)  # (K,)
        self.q = groupdro_weights(self.q, losses.cpu(), self.hparams["eta"])
        loss = (self.q.to(losses) * losses).sum()
        loss.backward()
        return {
            "loss": losses.mean().item(),
            "q_max": float(self.q.max()),
            "grad_norm": self._clip_and_step(),
        }
