"""IGA (ours) behind the common interface: ``iga.core.step.IGAStep`` does the edit."""

from __future__ import annotations

from dataclasses import fields

from empirical.methods.base import Batch, Method
from iga.core.config import IGAConfig
from iga.core.losses import IGNORE_INDEX, domain_mean_loss
from iga.core.step import IGAStep

# IGAConfig fields an hparam dict may set directly (one source: the config itself).
# warmup_steps comes from the run-length-free ``warmup_frac``; the seed from the job.
IGA_FIELDS = tuple(f.name for f in fields(IGAConfig) if f.name not in ("warmup_steps", "seed"))


class IGA(Method):
    """Invariant Gradient Alignment, arXiv 2606.05025 (this project's ``iga.IGAStep``).

    Per-domain gradients in one backward -> between-domain variance ``V`` (estimator
    ``batch``, ``split`` or ``ema``; raw or relative) -> mask ``exp(-tau V)`` on the
    mean gradient -> rank-r projection -> chain rule to the LoRA factors -> clip ->
    AdamW. Every ablation (mask only, projection only, estimator, variance kind, tau,
    space, rank, K) is a setting of ``hparams``.
    """

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        given = {name: self.hparams[name] for name in IGA_FIELDS if name in self.hparams}
        warmup = int(round(self.hparams.get("warmup_frac", 0.0) * self.steps))
        self.config = IGAConfig(**given, warmup_steps=warmup, seed=seed)
        self.iga = IGAStep(self.model, self.config, self.num_domains)

    def _step(self, batch: Batch) -> dict[str, float]:
        # Supervised tokens per example: each example's weight in its domain's token mean.
        weights = (batch["labels"][:, 1:] != IGNORE_INDEX).sum(dim=1)  # (B,)
        self.iga.set_domains(batch["domain_ids"], weights)
        ce, mask, _ = self.forward(batch)
        loss = domain_mean_loss(ce, mask, batch["domain_ids"], self.num_domains)
        loss.backward()
        stats = self.iga.step(self.optimizer, self.max_grad_norm)
        return {"loss": loss.item(), **{k.replace("iga/", ""): v for k, v in stats.items()}}

    def close(self) -> None:
        self.iga.remove()
