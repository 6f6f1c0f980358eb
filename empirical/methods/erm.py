"""ERM-SFT: plain LoRA supervised fine-tuning on the pooled training domains."""

from __future__ import annotations

from empirical.methods.base import Batch, Method


class ERM(Method):
    """Empirical risk minimisation (Vapnik 1998), the baseline "ERM-SFT" of arXiv 2606.05025.

    The loss is the mean over domains of per-domain token means, exactly the loss
    IGA edits the gradient of, so ERM and IGA differ only in the gradient edit.
    """

    def _step(self, batch: Batch) -> dict[str, float]:
        loss = self.erm_loss(batch)
        loss.backward()
        return {"loss": loss.item(), "grad_norm": self._clip_and_step()}
