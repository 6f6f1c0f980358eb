"""Invariant Gradient Alignment (IGA) for robust reasoning distillation (arXiv 2606.05025)."""

from iga.core.aligner import AlignResult, GradientAligner, LoRAFactors, align_gradients
from iga.core.capture import PerDomainGradients
from iga.core.config import IGAConfig
from iga.core.losses import domain_mean_loss
from iga.core.mask import conflict_mask, conflict_variance, masked_mean, split_conflict_variance
from iga.core.projection import LoRAGrads, lora_factor_grads, project_low_rank, tangent_project
from iga.core.step import IGAStep

__all__ = [
    "AlignResult",
    "GradientAligner",
    "IGAConfig",
    "LoRAFactors",
    "LoRAGrads",
    "align_gradients",
    "conflict_mask",
    "conflict_variance",
    "split_conflict_variance",
    "lora_factor_grads",
    "masked_mean",
    "project_low_rank",
    "tangent_project",
    "PerDomainGradients",
    "IGAStep",
    "domain_mean_loss",
    "IGATrainer",
    "IGATrainingArguments",
]

_LAZY = {"IGATrainer": "iga.distill.trainer", "IGATrainingArguments": "iga.distill.trainer"}


def __getattr__(name: str):
    # The Trainer classes import transformers (seconds); load them on first use only,
    # so `import iga` stays light for the operators, the command line and the theory.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'iga' has no attribute {name!r}")


__version__ = "0.1.0"
