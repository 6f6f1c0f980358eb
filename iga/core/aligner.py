"""The IGA gradient edit on a set of named parameters (docs/design.md section 2).

Input: per-domain gradients, one tensor (K, *shape) per name. Names listed in
``lora`` hold per-domain gradients of a LoRA layer's effective weight
``dW = s B A`` (K, out, in) and come back as ``LoRAGrads(A, B)`` after mask,
projection and chain rule; every other name (a LoRA factor in ``space="factor"``,
or any plain parameter) gets the mask alone.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from iga.core.checks import check_finite, check_real_tensor
from iga.core.config import IGAConfig
from iga.core.mask import conflict_mask, masked_mean
from iga.core.projection import (
    LoRAFactors,
    LoRAGrads,
    check_lora_factors,
    lora_factor_grads,
    project_low_rank,
    tangent_project,
)


@dataclass
class AlignResult:
    """Edited gradients and the mask behind each of them."""

    grads: dict[str, torch.Tensor | LoRAGrads]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)


def _validate(per_domain: Mapping[str, torch.Tensor], lora: Mapping[str, LoRAFactors]) -> int:
    if not per_domain:
        raise ValueError("align_gradients got no gradients: the per-domain dict is empty.")
    ks = {name: g.shape[0] if g.dim() > 0 else 0 for name, g in per_domain.items()}
    k = next(iter(ks.values()))
    if k < 1 or any(v != k for v in ks.values()):
        raise ValueError(
            f"every entry needs the same number of domains K >= 1 on axis 0; got {ks}."
        )
    for name, g in per_domain.items():
        check_real_tensor(g, "align_gradients", f"the gradient of {name!r}")
        check_finite(g, "align_gradients", f"the gradient of {name!r}")
    dtypes = {name: g.dtype for name, g in per_domain.items()}
    for name, f in lora.items():
        if name not in per_domain:
            raise ValueError(f"LoRA entry {name!r} has factors but no per-domain gradient.")
        if not isinstance(f, LoRAFactors):
            raise TypeError(f"LoRA entry {name!r} must be iga.LoRAFactors, got {type(f).__name__}.")
        # LoRAFactors checks itself at construction; a dataclass can be bypassed, so again.
        check_lora_factors(f.B, f.A, f.scale, f"align_gradients: LoRA entry {name!r}")
        if f.A.dtype != dtypes[name]:
            raise TypeError(
                f"align_gradients: LoRA entry {name!r} has {f.A.dtype} factors but a "
                f"{dtypes[name]} gradient; cast them to one dtype."
            )
        out_in = (f.B.shape[0], f.A.shape[1])
        if per_domain[name].dim() != 3 or tuple(per_domain[name].shape[1:]) != out_in:
            raise ValueError(
                f"LoRA entry {name!r}: expected effective-weight gradients (K, {out_in[0]}, "
                f"{out_in[1]}), got {tuple(per_domain[name].shape)}."
            )
    return k


def _project(h: torch.Tensor, f: LoRAFactors, config: IGAConfig, gen: torch.Generator | None):
    if config.projection == "svd":
        return project_low_rank(h, config.rank or f.rank, config.svd_method, generator=gen)
    if config.projection == "tangent":
        return tangent_project(h, f.B, f.A)
    return h


def align_gradients(
    per_domain: Mapping[str, torch.Tensor],
    config: IGAConfig,
    lora: Mapping[str, LoRAFactors] | None = None,
    *,
    erm: bool = False,
    generator: torch.Generator | None = None,
    variances: Mapping[str, torch.Tensor] | None = None,
) -> AlignResult:
    """Apply the IGA edit to each entry of ``per_domain`` (K, *shape).

    With ``erm=True`` (warm-up) or K = 1 (with a warning) it returns the ERM
    gradient: the mean over domains, chain-ruled for LoRA entries, no mask and
    no projection. With ``config.mask_target="update"`` the returned gradients
    are unmasked and ``masks`` is for the caller to apply to the optimizer's
    update (plain and factor-space entries only).

    ``variances`` (name -> (*shape)) replaces the minibatch variance
    ``conflict_variance(G)`` behind each mask with another estimate of the
    between-domain variance (``iga.core.estimators``: split halves, EMA).
    """
    lora = dict(lora or {})
    k = _validate(per_domain, lora)
    if k == 1 and not erm:
        warnings.warn(
            "IGA got a single domain (K = 1): the cross-domain variance is undefined, "
            "so the step is plain ERM. Train on several domains to use the mask.",
            stacklevel=2,
        )
        erm = True
    if config.mask_target == "update" and lora:
        raise ValueError(
            "mask_target='update' needs per-coordinate updates of the parameters that step, "
            "so it works with space='factor' and plain parameters, not with full-space LoRA "
            f"entries ({sorted(lora)[:3]}...)."
        )
    grads: dict[str, torch.Tensor | LoRAGrads] = {}
    masks: dict[str, torch.Tensor] = {}
    for name, g in per_domain.items():
        if erm:
            h, mask = g.mean(dim=0), torch.ones_like(g[0])
        else:
            if variances is not None:
                mask = conflict_mask(variances[name], config.tau, floor=config.mask_floor)
                h = mask * g.mean(dim=0)  # (*shape)
            else:
                h, mask = masked_mean(g, config.tau, config.variance, config.eps, config.mask_floor)
            if config.mask_target == "update":
                h = g.mean(dim=0)
        masks[name] = mask
        if name in lora:
            f = lora[name]
            h = h if erm else _project(h, f, config, generator)
            grads[name] = lora_factor_grads(h, f.B, f.A, f.scale)
        else:
            grads[name] = h
    return AlignResult(grads=grads, masks=masks)


class GradientAligner:
    """Stateful wrapper of ``align_gradients`` that counts steps for the ERM warm-up.

    The first ``config.warmup_steps`` calls return the ERM gradient: early in
    training every domain disagrees, so a strong mask would freeze learning
    (docs/design.md section 8).
    """

    def __init__(self, config: IGAConfig) -> None:
        self.config = config
        self.steps = 0
        self._generator = torch.Generator().manual_seed(config.seed)

    @property
    def in_warmup(self) -> bool:
        return self.steps < self.config.warmup_steps

    def __call__(
        self,
        per_domain: Mapping[str, torch.Tensor],
        lora: Mapping[str, LoRAFactors] | None = None,
        variances: Mapping[str, torch.Tensor] | None = None,
    ) -> AlignResult:
        # Reseeded from (seed, step): a resumed run draws the same sketches as an
        # uninterrupted one without storing generator state.
        self._generator.manual_seed(self.config.seed * 1_000_003 + self.steps)
        result = align_gradients(
            per_domain,
            self.config,
            lora,
            erm=self.in_warmup,
            generator=self._generator,
            variances=variances,
        )
        self.steps += 1
        return result
