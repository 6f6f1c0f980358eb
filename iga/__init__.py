"""Invariant Gradient Alignment (IGA) for robust reasoning distillation (arXiv 2606.05025)."""

from iga.aligner import AlignResult, GradientAligner, LoRAFactors, align_gradients
from iga.capture import PerDomainGradients, domain_mean_loss
from iga.config import IGAConfig
from iga.mask import conflict_mask, conflict_variance, masked_mean
from iga.projection import LoRAGrads, lora_factor_grads, project_low_rank, tangent_project
from iga.step import IGAStep

__all__ = [
    "AlignResult",
    "GradientAligner",
    "IGAConfig",
    "LoRAFactors",
    "LoRAGrads",
    "align_gradients",
    "conflict_mask",
    "conflict_variance",
    "lora_factor_grads",
    "masked_mean",
    "project_low_rank",
    "tangent_project",
    "PerDomainGradients",
    "IGAStep",
    "domain_mean_loss",
]

__version__ = "0.1.0"
