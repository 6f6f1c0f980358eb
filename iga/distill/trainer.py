"""``IGATrainer``: distillation with Invariant Gradient Alignment on ``transformers.Trainer``.

The TRL pattern (``XConfig(TrainingArguments)`` + ``XTrainer(Trainer)``): only the
loss and the gradient edit are ours. The loss is completion-only cross-entropy,
the mean over domains of per-domain token means (docs/design.md section 2), with
optional token-level KD against a teacher that shares the vocabulary. With
``method="iga"`` an ``IGAStep`` captures per-domain gradients during the one
backward and replaces ``.grad`` before clipping and the optimizer step;
``method="erm"`` is the same pipeline without the edit (ERM-SFT).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from iga.core.config import TRAINER_METHODS as METHODS
from iga.core.config import IGAConfig
from iga.core.losses import (
    completion_token_losses,
    domain_mean_loss,
    kd_token_losses,
    supervised_token_losses,
)
from iga.core.step import IGAStep


@dataclass
class IGATrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus the IGA step (see ``iga.IGAConfig`` for each field)."""

    method: str = field(default="iga", metadata={"help": "'iga' or 'erm' (plain LoRA SFT)."})
    iga_tau: float = field(default=5.0, metadata={"help": "Mask temperature tau."})
    iga_variance: str = field(default="relative", metadata={"help": "'raw' or 'relative'."})
    iga_projection: str = field(default="svd", metadata={"help": "'svd', 'tangent' or 'none'."})
    iga_rank: int | None = field(default=None, metadata={"help": "Projection rank (LoRA rank)."})
    iga_space: str = field(default="full", metadata={"help": "'full' or 'factor'."})
    iga_mask_target: str = field(default="gradient", metadata={"help": "'gradient' or 'update'."})
    iga_mask_floor: float = field(default=0.0, metadata={"help": "Lower bound of the mask."})
    iga_warmup_steps: int = field(default=0, metadata={"help": "ERM steps before the mask."})
    kd_weight: float = field(default=0.0, metadata={"help": "Weight of token-level KD in [0, 1]."})
    kd_temperature: float = field(default=1.0, metadata={"help": "Softmax temperature of KD."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep domain_ids."})
    report_to: str | list[str] | None = field(default="none")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is unknown; choose one of {METHODS}.")
        if not 0.0 <= self.kd_weight <= 1.0 or self.kd_temperature <= 0:
            raise ValueError(
                f"kd_weight must lie in [0, 1] and kd_temperature be > 0; got {self.kd_weight}, "
                f"{self.kd_temperature}."
            )
        self.iga_config()  # validates the IGA fields now, not at the first step

    def iga_config(self) -> IGAConfig:
        return IGAConfig(
            tau=self.iga_tau,
            variance=self.iga_variance,
            projection=self.iga_projection,
            rank=self.iga_rank,
            space=self.iga_space,
            mask_target=self.iga_mask_target,
            mask_floor=self.iga_mask_floor,
            warmup_steps=self.iga_warmup_steps,
            seed=self.seed,
        )


class _SyncWarmup(TrainerCallback):
    """On (re)start, the aligner's step counter follows ``global_step`` so that a resumed
    run leaves the ERM warm-up at the same step as an uninterrupted one."""

    def __init__(self, iga_step: IGAStep) -> None:
        self.iga_step = iga_step

    def on_train_begin(self, args, state, control, **kwargs):
        self.iga_step.aligner.steps = state.global_step
        self.iga_step.capture.enabled = not self.iga_step.aligner.in_warmup


class IGATrainer(Trainer):
    """``Trainer`` for LoRA distillation over isomer sets with the IGA gradient step.

    ``num_domains`` is the number of training domains (batches carry ``domain_ids``);
    ``teacher_model`` (optional) enables token-level KD with ``args.kd_weight``.
    """

    def __init__(self, *args, num_domains: int, teacher_model=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if num_domains < 1:
            raise ValueError(f"num_domains must be >= 1, got {num_domains}.")
        self.num_domains = num_domains
        self.teacher_model = teacher_model
        self.model_accepts_loss_kwargs = False  # our loss is a domain mean; Trainer scales GA
        self.iga_step: IGAStep | None = None
        if self.args.method == "iga":
            self.iga_step = IGAStep(self.model, self.args.iga_config(), num_domains)
            self.add_callback(self.iga_step.trainer_callback())
            self.add_callback(_SyncWarmup(self.iga_step))
        if teacher_model is not None:
            teacher_model.eval().requires_grad_(False)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        domain_ids = inputs.pop("domain_ids")
        labels = inputs.pop("labels")
        if self.iga_step is not None and model.training:
            self.iga_step.set_domains(domain_ids)
        use_kd = self.teacher_model is not None and self.args.kd_weight > 0
        if use_kd:  # KD compares full distributions at every position
            outputs = model(**inputs)
            ce, mask = completion_token_losses(outputs.logits, labels)
        else:  # the LM head on supervised positions only: same loss, less work
            ce, mask, outputs = supervised_token_losses(model, inputs, labels)
        loss = domain_mean_loss(ce, mask, domain_ids, self.num_domains)
        if use_kd:
            with torch.no_grad():
                teacher_logits = self.teacher_model(**inputs).logits
            kd = kd_token_losses(outputs.logits, teacher_logits, self.args.kd_temperature)
            kd_loss = domain_mean_loss(kd, mask, domain_ids, self.num_domains)
            loss = (1 - self.args.kd_weight) * loss + self.args.kd_weight * kd_loss
        return (loss, outputs) if return_outputs else loss

    def _clip_grad_norm(self, model):
        # Edit .grad before the Trainer clips, so clipping sees the IGA gradient.
        if self.iga_step is not None:
            self.iga_step.apply()
        return super()._clip_grad_norm(model)

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.iga_step is not None and "loss" in logs:
            logs = {**logs, **self.iga_step.last_stats}
        super().log(logs, *args, **kwargs)
