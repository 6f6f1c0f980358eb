"""The shared part of every method: one optimizer, one loss, one update interface.

DomainBed's contract: ``update(per_domain_batches) -> dict of floats``, where
``per_domain_batches`` holds K batches (one per training domain, each a dict of
``input_ids``, ``attention_mask`` and ``labels``, right-padded to one width).
Every method trains the same LoRA student with the same AdamW optimizer,
cosine schedule and gradient clipping as ``iga distill`` (the training contract,
iga/distill/schedule.py); only ``_step`` differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from iga.core.losses import completion_token_losses, domain_mean_loss, supervised_token_losses
from iga.distill.schedule import cosine_with_warmup

Batch = Mapping[str, torch.Tensor]


def concat_domains(per_domain_batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
    """One batch holding all K domain batches, plus ``domain_ids`` (B,) sorted by domain."""
    width = max(b["input_ids"].shape[1] for b in per_domain_batches)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    ids, att, labels, dom = [], [], [], []
    for k, b in enumerate(per_domain_batches):
        ids.append(pad(b["input_ids"], 0))
        att.append(pad(b["attention_mask"], 0))
        labels.append(pad(b["labels"], -100))
        dom.append(torch.full((b["input_ids"].shape[0],), k, device=b["input_ids"].device))
    return {
        "input_ids": torch.cat(ids),  # (B, T)
        "attention_mask": torch.cat(att),  # (B, T)
        "labels": torch.cat(labels),  # (B, T)
        "domain_ids": torch.cat(dom),  # (B,)
    }


class Method:
    """Base class: ERM's forward, the optimizer, and the step bookkeeping.

    ``hparams`` always holds ``lr``; subclasses read their own names from it.
    """

    max_grad_norm = 1.0

    def __init__(self, model: nn.Module, num_domains: int, hparams: Mapping, steps: int) -> None:
        self.model = model
        self.num_domains = num_domains
        self.hparams = dict(hparams)
        self.steps = steps
        self.update_count = 0
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = self._make_optimizer()
        self.scheduler = cosine_with_warmup(self.optimizer, steps)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.params, lr=self.hparams["lr"], weight_decay=0.0)

    def reset_optimizer(self) -> None:
        """Fresh Adam moments, same schedule position (IRM/V-REx/Fishr after annealing)."""
        lr_now = [g["lr"] for g in self.optimizer.param_groups]
        self.optimizer = self._make_optimizer()
        self.scheduler = cosine_with_warmup(self.optimizer, self.steps)
        # Move the schedule to where it was without calling step() before any
        # optimizer.step() (torch warns that this skips the first learning rate).
        self.scheduler.last_epoch = self.update_count
        for g, lr in zip(self.optimizer.param_groups, lr_now):
            g["lr"] = lr

    def forward(
        self, batch: Batch, logits: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-token CE (B, T-1), its mask (B, T-1) and, with ``logits``, the logits
        (B, T, V). Without them (every method but IRMv1) the LM head runs on the
        supervised positions only (``iga.core.losses.supervised_token_losses``, what
        ``iga distill`` does: the same loss and gradients, 1.47x faster per ERM step on
        SmolLM2-135M's 49,152-word head) and the third item is None."""
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if logits:
            out = self.model(**inputs).logits  # (B, T, V)
            ce, mask = completion_token_losses(out, batch["labels"])
            return ce, mask, out
        ce, mask, _ = supervised_token_losses(self.model, inputs, batch["labels"])
        return ce, mask, None

    def erm_loss(self, batch: Batch) -> torch.Tensor:
        ce, mask, _ = self.forward(batch)
        return domain_mean_loss(ce, mask, batch["domain_ids"], self.num_domains)

    def update(self, per_domain_batches: Sequence[Batch]) -> dict[str, float]:
        """One optimizer step on one batch per training domain."""
        if len(per_domain_batches) != self.num_domains:
            raise ValueError(
                f"{type(self).__name__}.update got {len(per_domain_batches)} domain batches, "
                f"expected {self.num_domains}."
            )
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        stats = self._step(concat_domains(per_domain_batches))
        self.scheduler.step()
        self.update_count += 1
        return stats

    def _step(self, batch: Batch) -> dict[str, float]:
        raise NotImplementedError

    def _clip_and_step(self) -> float:
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        return float(norm)

    def close(self) -> None:
        """Remove hooks (gradient-capturing methods override)."""
