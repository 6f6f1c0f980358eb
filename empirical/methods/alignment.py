"""Gradient-alignment baselines: Fish, Fishr and Koyama & Yamaguchi's gradient variance."""

from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from empirical.methods.base import Batch, Method
from iga.core.losses import completion_token_losses, per_domain_losses


class Fish(Method):
    """Fish, Shi et al. 2022, "Gradient Matching for Domain Generalization", arXiv 2104.09937.

    DomainBed's first-order algorithm: from the current LoRA weights, one inner Adam
    step per domain in turn (a fresh inner optimizer each outer step, the scheduled lr),
    then ``theta <- theta + meta_lr (theta_inner - theta)``. Its inner steps are
    sequential by design (the inner-product gradient comes from the order), so Fish
    runs K small forward/backward passes instead of the shared one-pass capture.
    """

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator().manual_seed(seed)

    def _step(self, batch: Batch) -> dict[str, float]:
        lr = self.optimizer.param_groups[0]["lr"]
        start = [p.detach().clone() for p in self.params]
        inner = torch.optim.Adam(self.params, lr=lr)
        ids, losses = batch["domain_ids"], []
        for k in torch.randperm(self.num_domains, generator=self.generator).tolist():
            rows = torch.nonzero(ids == k).squeeze(1)
            part = {name: batch[name][rows] for name in ("input_ids", "attention_mask", "labels")}
            inner.zero_grad(set_to_none=True)
            ce, mask, _ = self.forward(part)
            loss = (ce * mask).sum() / mask.sum().clamp_min(1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            inner.step()
            losses.append(loss.item())
        meta = self.hparams["meta_lr"]
        with torch.no_grad():
            for p, p0 in zip(self.params, start):
                p.copy_(p0 + meta * (p - p0))
        for p in self.params:
            p.grad = None
        return {"loss": sum(losses) / len(losses)}


class Fishr(Method):
    """Fishr, Rame et al. 2022, "Fishr: Invariant Gradient Variances for Out-of-Distribution
    Generalization", arXiv 2109.02934.

    Penalty ``mean_k ||v_k - mean_k v_k||^2`` on the within-domain variances ``v_k`` of
    per-example gradients, exponentially averaged over steps (``ema``), weight 1 until
    ``anneal_frac`` of training, then ``lambda`` (with an Adam reset), as in DomainBed.
    Which gradients: as Rame et al. restrict Fishr to the classifier, we use the
    per-example gradients of the LM head (V x d), ``sum_t (p_t - y_t) h_t^T / n_i``,
    computed in closed form from the final hidden states. The head itself is frozen;
    the penalty's gradient reaches the LoRA factors through ``h`` and ``p``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ema: list[torch.Tensor | None] = [None] * self.num_domains

    def penalty_weight(self) -> float:
        anneal = int(self.hparams["anneal_frac"] * self.steps)
        if self.update_count == anneal and anneal > 0:
            self.reset_optimizer()
        return self.hparams["lambda"] if self.update_count >= anneal else 1.0

    def _step(self, batch: Batch) -> dict[str, float]:
        weight = self.penalty_weight()
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
            if self.ema[k] is not None:
                v = self.hparams["ema"] * self.ema[k] + (1 - self.hparams["ema"]) * v
            self.ema[k] = v.detach()
            variances.append(v)
        v = torch.stack(variances)  # (K, V, d)
        penalty = (v - v.mean(dim=0)).square().sum(dim=(1, 2)).mean()
        loss = nll + weight * penalty
        if weight > 1.0:
            loss = loss / weight
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
    alignment objective ``mean_k L_k + lambda * mean_k ||grad L_k - mean_j grad L_j||^2``
    over all LoRA parameters (a penalty on the loss, differentiated through the per-domain
    gradients: K double-backward passes). Registered as ``ky-gradvar`` so that it is never
    mistaken for our IGA (a gradient edit, not a penalty)."""

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
        penalty = (flat - flat.mean(dim=0)).square().sum(dim=1).mean()
        loss = losses.mean() + self.hparams["lambda"] * penalty
        loss.backward()
        return {
            "loss": losses.mean().item(),
            "penalty": penalty.item(),
            "grad_norm": self._clip_and_step(),
        }
