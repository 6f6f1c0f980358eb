"""IGA hyperparameters, validated once at construction (docs/design.md sections 2 and 8)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from iga.core import configio

VARIANCE_KINDS = ("raw", "relative")
PROJECTIONS = ("svd", "tangent", "none")
SPACES = ("auto", "full", "factor")  # "auto": iga.core.step.resolve_space
SVD_METHODS = ("auto", "exact", "randomized")
MASK_TARGETS = ("gradient", "update")
ESTIMATORS = ("batch", "split", "ema")
TRAINER_METHODS = ("iga", "erm")  # IGATrainer's gradient steps; empirical/ registers baselines


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"IGAConfig.{name}={value!r} is unknown; choose one of {choices}.")


@dataclass
class IGAConfig:
    """Everything that defines one IGA step.

    The step (docs/design.md section 2): per-domain gradients ``G_k`` -> cross-domain
    variance ``V`` -> Continuous Gradient Conflict Mask ``M = exp(-tau * V)`` ->
    masked mean ``H = M * mean_k G_k`` -> rank-r projection onto the LoRA manifold
    -> chain rule to the LoRA factors.
    """

    # tau 1 with the split estimator: chosen on training-domain validation accuracy at
    # K = 4 by the estimator ablation (README "Choosing the estimator"; issue 14) over
    # tau 1, 5, 25, 125. With the relative variance (V < 1) the mask never drops below
    # exp(-tau).
    tau: float = field(default=1.0, metadata={"help": "Mask temperature; 0 turns the mask off."})
    variance: str = field(
        default="relative",
        metadata={
            "help": "'raw' (the paper's V) or 'relative' (V / mean_k G_k^2, in [0, 1], so "
            "tau is free of the gradient's scale).",
            "choices": VARIANCE_KINDS,
        },
    )
    projection: str = field(
        default="svd",
        metadata={
            "help": "Projection of the masked gradient onto the LoRA manifold: 'svd' (rank-r "
            "truncated SVD), 'tangent' (tangent space at B A) or 'none'.",
            "choices": PROJECTIONS,
        },
    )
    rank: int | None = field(
        default=None,
        metadata={"help": "Rank of the SVD projection; unset uses each LoRA layer's rank."},
    )
    space: str = field(
        default="auto",
        metadata={
            "help": "Where per-domain gradients are taken: 'full' (the effective weight "
            "s B A, out x in), 'factor' (A and B; cheaper, no full-size matrices) or "
            "'auto' (full while its per-domain buffers fit in 256 MiB, else factor).",
            "choices": SPACES,
        },
    )
    svd_method: str = field(
        default="auto",
        metadata={
            "help": "SVD of the projection: 'exact', 'randomized' (torch.svd_lowrank) or "
            "'auto' (a size threshold decides).",
            "choices": SVD_METHODS,
        },
    )
    eps: float = field(
        default=1e-12, metadata={"help": "Added to mean_k G_k^2 in the relative variance."}
    )
    mask_floor: float = field(
        default=0.0, metadata={"help": "Lower bound m0 of the mask: M = m0 + (1 - m0) exp(-tau V)."}
    )
    mask_target: str = field(
        default="gradient",
        metadata={
            "help": "Mask the gradient fed to the optimizer ('gradient') or the optimizer's "
            "update ('update'; needs --space factor).",
            "choices": MASK_TARGETS,
        },
    )
    estimator: str = field(
        default="split",
        metadata={
            "help": "How V is estimated: 'split' (unbiased, from two halves of each domain's "
            "examples; needs 2 or more examples of every domain per step), 'batch' (the "
            "paper's literal variance of this step's minibatch gradients; biased up by "
            "sampling noise), 'ema' (variance of moving averages of the per-domain "
            "gradients across steps).",
            "choices": ESTIMATORS,
        },
    )
    ema_beta: float = field(
        default=0.9,
        metadata={
            "help": "Decay of the 'ema' estimator's moving averages, in [0, 1); the noise "
            "variance in V shrinks by (1 - beta) / (1 + beta)."
        },
    )
    warmup_steps: int = field(
        default=0, metadata={"help": "Plain ERM steps before the mask switches on."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the randomized SVD's sketch."})

    def __post_init__(self) -> None:
        if not math.isfinite(self.tau) or self.tau < 0:
            raise ValueError(f"IGAConfig.tau must be a finite number >= 0, got {self.tau!r}.")
        _check_choice("variance", self.variance, VARIANCE_KINDS)
        _check_choice("projection", self.projection, PROJECTIONS)
        _check_choice("space", self.space, SPACES)
        _check_choice("svd_method", self.svd_method, SVD_METHODS)
        _check_choice("mask_target", self.mask_target, MASK_TARGETS)
        _check_choice("estimator", self.estimator, ESTIMATORS)
        if not (isinstance(self.ema_beta, (int, float)) and 0.0 <= self.ema_beta < 1.0):
            raise ValueError(
                f"IGAConfig.ema_beta must lie in [0, 1) (1 would never update the moving "
                f"average), got {self.ema_beta!r}."
            )
        if self.rank is not None and (not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"IGAConfig.rank must be an integer >= 1 or None, got {self.rank!r}.")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ValueError(f"IGAConfig.eps must be finite and >= 0, got {self.eps!r}.")
        if not 0.0 <= self.mask_floor < 1.0:
            raise ValueError(f"IGAConfig.mask_floor must lie in [0, 1), got {self.mask_floor!r}.")
        if self.warmup_steps < 0:
            raise ValueError(f"IGAConfig.warmup_steps must be >= 0, got {self.warmup_steps!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> IGAConfig:
        return configio.from_dict(cls, data, where or cls.__name__)
