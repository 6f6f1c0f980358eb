"""Gradient-alignment baselines: Fish, Fishr and Koyama & Yamaguchi's gradient variance."""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from empirical.methods.base import Batch, Method
from empirical.methods.penalties import annealed_weight
from iga.core.losses import completion_token_losses, per_domain_losses


def fishr_moving_average(
    state: torch.Tensor | None, value: torch.Tensor, ema: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """DomainBed's ``MovingAverage(ema, oneminusema_correction=True)`` on one tensor.

    ``state <- ema * state + (1 - ema) * value`` from ``state = 0`` (no bias correction),
    and the returned average is ``state / (1 - ema)``, so that the gradient reaching
    ``value`` is independent of ``ema``. Returns ``(new state, detached; average)``.
    """
    previous = torch.zeros_like(value) if state is None else state
    new = ema * previous + (1 - ema) * value
    return new.detach(), new / (1 - ema)


def fishr_penalty(variances: torch.Tensor) -> torch.Tensor:
    """Fishr's penalty (Rame et al. 2022, with DomainBed's scaling), (K, *shape) -> ():
    ``(1/K) sum_k mean_coords (v_k - mean_j v_j)^2``, the squared distance averaged over
    the coordinates as DomainBed's ``l2_between_dicts`` does."""
    return (variances - variances.mean(dim=0)).square().mean()


def gradient_variance_penalty(flat: torch.Tensor) -> torch.Tensor:
    """Koyama & Yamaguchi's ``trace Var_k(grad L_k)`` (divisor K): (K, P) -> ()."""
    return (flat - flat.mean(dim=0)).square().sum(dim=1).mean()


class Fish(Method):
    """Fish, Shi et al. 2022, "Gradient Matching for Domain Generalization", arXiv 2104.09937.

    DomainBed's first-order algorithm: from the current LoRA weights, one inner Adam
    step per domain in turn, then ``theta <- theta + meta_lr (theta_inner - theta)``.
    The inner Adam keeps its moments and step count across outer steps, as DomainBed's
    ``optimizer_inner_state`` does. Its inner steps are sequential by design (the
    inner-product gradient comes from the order), so Fish runs K small forward/backward
    passes instead of the shared one-pass capture.

    Where it differs from DomainBed's ``Fish``, and why: the domains come in a fresh
    random order each step (Shi et al.'s algorithm permutes them; DomainBed keeps the
    loader's fixed order); the inner rate is the shared cosine schedule's current rate
    (DomainBed: the constant ``lr``) and each inner gradient is clipped like every other
    method's step, so that Fish trains under the same recipe as the rest.
    """

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator().manual_seed(seed)
        self.inner = torch.optim.Adam(self.params, lr=self.hparams["lr"])

    def _step(self, batch: Batch) -> dict[str, float]:
        for group in self.inner.param_groups:
            group["lr"] = self.optimizer.param_groups[0]["lr"]
        start = [p.detach().clone() for p in self.params]
        ids, losses = batch["domain_ids"], []
        for k in self.domain_order():
            rows = torch.nonzero(ids == k).squeeze(1)
            part = {name: batch[name][rows] for name in ("input_ids", "attention_mask", "labels")}
            self.inner.zero_grad(set_to_none=True)
            ce, mask, _ = self.forward(part)
            loss = (ce * mask).sum() / mask.sum().clamp_min(1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            self.inner.step()
            losses.append(loss.item())
        meta = self.hparams["meta_lr"]
        with torch.no_grad():
            for p, p0 in zip(self.params, start):
                p.copy_(p0 + meta * (p - p0))
        for p in self.params:
            p.grad = None
        return {"loss": sum(losses) / len(losses)}

    def domain_order(self) -> list[int]:
        """This step's order of the domains: a fresh permutation from the run's generator."""
        return torch.randperm(self.num_domains, generator=self.generator).tolist()


class Fishr(Method):
    """Fishr, Rame et al. 2022, "Fishr: Invariant Gradient Variances for Out-of-Distribution
    Generalization", arXiv 2109.02934.

    ``mean_k L_k + weight * fishr_penalty(v)``, ``v_k`` the within-domain variance
    (divisor n_k) of per-example gradients, averaged over steps by
    ``fishr_moving_average``; weight 0 for ``anneal_frac`` of the run, then ``lambda``
    with an Adam reset, and no division by the weight: DomainBed's ``Fishr``.
    Which gradients: as Rame et al. restrict Fishr to the classifier, we use the
    per-example gradients of the LM head (V x d), ``sum_t (p_t - y_t) h_t^T / n_i``,
    computed in closed form from the final hidden states (``head_gradients``). The head
    itself is frozen; the penalty's gradient reaches the LoRA factors through ``h`` and
    ``p``. Differences from DomainBed: an example's loss is its mean token cross-entropy
    and the NLL is the mean of the per-domain losses (DomainBed pools the examples),
    the loss every method here minimises.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ema_state: list[torch.Tensor | None] = [None] * self.num_domains

    def _step(self, batch: Batch) -> dict[str, float]:
        weight = annealed_weight(self, before=0.0)
        out = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_hidden_states=True,
        )
        ce, mask = completion_token_losses(out.logits, batch["labels"])  # (B, T-1)
        ids = batch["domain_ids"]
        nll = per_domain_losses(ce, mask, ids, self.num_domains).mean()
        grads = self.head_gradients(out.logits, out.hidden_states[-1], batch["labels"], mask)
        variances = []
        for k in range(self.num_domains):
            g = grads[ids == k]  # (n_k, V, d)
            v = g.var(dim=0, unbiased=False)  # (V, d)
            self.ema_state[k], v = fishr_moving_average(self.ema_state[k], v, self.hparams["ema"])
            variances.append(v)
        penalty = fishr_penalty(torch.stack(variances))  # (K, V, d) -> ()
        loss = nll + weight * penalty
        loss.backward()
        return {"loss": nll.item(), "penalty": penalty.item(), "grad_norm": self._clip_and_step()}

    @staticmethod
    def head_gradients(logits, hidden, labels, mask) -> torch.Tensor:
        """Per-example gradients of the mean token CE w.r.t. the LM head weight, (B, V, d)."""
        target = labels[:, 1:].clamp_min(0)  # (B, T-1)
        err = torch.softmax(logits[:, :-1].float(), dim=-1)  # (B, T-1, V)
        err = err - torch.nn.functional.one_hot(target, err.shape[-1]).to(err.dtype)
        m = mask.to(err.dtype)  # (B, T-1)
        err = err * (m / m.sum(dim=1, keepdim=True).clamp_min(1.0)).unsqueeze(-1)
        return torch.einsum("btv,btd->bvd", err, hidden[:, :-1].float())  # (B, V, d)


class KYGradVar(Method):
    """Koyama & Yamaguchi 2020, "When is invariance useful in an Out-of-Distribution
    Generalization problem?", arXiv 2008.01883: their inter-environmental gradient
    alignment objective ``mean_k L_k + lambda * trace Var_k(grad L_k)``, i.e.
    ``lambda * mean_k ||grad L_k - mean_j grad L_j||^2`` (``gradient_variance_penalty``)
    over all LoRA parameters (a penalty on the loss, differentiated through the per-domain
    gradients: K double-backward passes). Registered as ``ky-gradvar`` so that it is never
    mistaken for our IGA (a gradient edit, not a penalty).

    DomainBed's ``IGA`` sums over the domains instead of averaging and stops the gradient
    through the mean gradient. The stop changes nothing (``sum_k (g_k - mean g) = 0``, so
    the mean's Jacobian term cancels); the sum is K times our mean, so DomainBed's
    ``penalty`` equals our ``lambda / K``. We keep Koyama & Yamaguchi's variance and our own
    ``lambda`` range (``empirical.hparams``): DomainBed's 10..1e5 was set for ResNet
    gradients, not for LoRA factors of a language model.
    """

    def _step(self, batch: Batch) -> dict[str, float]:
        # The fused attention kernels have no double backward; the math kernel does.
        with sdpa_kernel(SDPBackend.MATH):
            return self._penalized_step(batch)

    def _penalized_step(self, batch: Batch) -> dict[str, float]:
        ce, mask, _ = self.forward(batch)
        losses = per_domain_losses(ce, mask, batch["domain_ids"], self.num_domains)  # (K,)
        per_domain = [
            torch.autograd.grad(losses[k], self.params, create_graph=True, allow_unused=True)
            for k in range(self.num_domains)
        ]
        flat = torch.stack(
            [
                torch.cat(
                    [
                        (g if g is not None else torch.zeros_like(p)).reshape(-1)
                        for g, p in zip(gs, self.params)
                    ]
                )
                for gs in per_domain
            ]
        )  # (K, P)
        penalty = gradient_variance_penalty(flat)
        loss = losses.mean() + self.hparams["lambda"] * penalty
        loss.backward()
        return {
            "loss": losses.mean().item(),
            "penalty": penalty.item(),
            "grad_norm": self._clip_and_step(),
        }
