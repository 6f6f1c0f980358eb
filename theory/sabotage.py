"""Deliberately broken operators, to show that each check can fail (docs/design.md section 7).

Each sabotage swaps one name that ``iga.core.aligner`` looks up at call time, so the
trainers (which go through ``iga.GradientAligner`` / ``iga.align_gradients``)
run the broken step while everything else, including the reference quantities
the checks compute, stays intact:

* ``mask_ones``: ``M = 1`` (IGA degenerates to ERM);
* ``mask_from_mean``: the mask is computed from the squared mean gradient
  relative to its second moment instead of the cross-domain variance, so it damps
  the *consistent* coordinates;
* ``sign_flip``: the edited gradient has the wrong sign (ascent);
* ``wrong_rank``: the low-rank projection keeps rank 1 whatever rank is asked.

``split_same_half`` replaces ``iga.split_conflict_variance`` by one that is given the
same half twice (so it estimates the noisy batch variance of a half, not the
between-domain variance); ``estimator[mask]`` must fail.

``BROKEN_STEPS`` are whole IGA steps built from ``iga``'s public operators with one
defect each, for the reference comparison (``theory.check_reference``), which must
catch every one: ``ddof1`` (variance with ddof = 1), ``exp_plus`` (``exp(+tau V)``),
``mask_after_projection``, ``scale_ignored`` (LoRA scale taken as 1) and ``rank_plus_one``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

import iga
import iga.core.aligner

PATCH_SABOTAGES = ("mask_ones", "mask_from_mean", "sign_flip", "wrong_rank", "split_same_half")
STEP_SABOTAGES = ("ddof1", "exp_plus", "mask_after_projection", "scale_ignored", "rank_plus_one")
SABOTAGES = PATCH_SABOTAGES + STEP_SABOTAGES


def _mask_ones(grads, tau, kind="raw", eps=0.0, floor=0.0):
    mean = grads.mean(dim=0)
    return mean, torch.ones_like(mean)


def _mask_from_mean(grads, tau, kind="raw", eps=0.0, floor=0.0):
    mean = grads.mean(dim=0)
    stat = mean.square() / (grads.square().mean(dim=0) + max(eps, 1e-300))  # (*shape), in [0, 1]
    mask = iga.conflict_mask(stat, tau, floor=floor)
    return mask * mean, mask


def _sign_flip(grads, tau, kind="raw", eps=0.0, floor=0.0):
    h, mask = iga.masked_mean(grads, tau, kind, eps, floor)
    return -h, mask


def _wrong_rank(matrix, rank, method="auto", generator=None):
    return iga.project_low_rank(matrix, 1, method, generator=generator)


_ORIGINAL_SPLIT = iga.split_conflict_variance


def _split_same_half(grads_a, grads_b, kind="raw", eps=0.0):
    return _ORIGINAL_SPLIT(grads_a, grads_a, kind, eps)


_PATCHES = {
    "mask_ones": ("masked_mean", _mask_ones),
    "mask_from_mean": ("masked_mean", _mask_from_mean),
    "sign_flip": ("masked_mean", _sign_flip),
    "wrong_rank": ("project_low_rank", _wrong_rank),
    "split_same_half": ("split_conflict_variance", _split_same_half),
}
_TARGET = {"split_same_half": iga}  # the public name the estimator check looks up


def _broken_step(defect: str):
    """``(per_domain, config, lora) -> AlignResult``: the IGA step with one ``defect``."""

    def step(per_domain, config, lora):
        grads, masks = {}, {}
        for name, g in per_domain.items():
            K = g.shape[0]
            V = iga.conflict_variance(g, config.variance, config.eps)
            if defect == "ddof1":
                V = V * K / (K - 1)
            if defect == "exp_plus":
                mask = config.mask_floor + (1 - config.mask_floor) * torch.exp(config.tau * V)
            else:
                mask = iga.conflict_mask(V, config.tau, floor=config.mask_floor)
            f = lora[name]
            rank = f.rank + (defect == "rank_plus_one")
            if defect == "mask_after_projection":
                h = mask * iga.project_low_rank(g.mean(0), rank, config.svd_method)
            else:
                h = iga.project_low_rank(mask * g.mean(0), rank, config.svd_method)
            scale = 1.0 if defect == "scale_ignored" else f.scale
            grads[name] = iga.lora_factor_grads(h, f.B, f.A, scale)
            masks[name] = mask
        return iga.AlignResult(grads=grads, masks=masks)

    return step


BROKEN_STEPS = {name: _broken_step(name) for name in STEP_SABOTAGES}


@contextlib.contextmanager
def sabotaged(name: str | None) -> Iterator[None]:
    """Run the block with operator ``name`` broken (``None``: no sabotage)."""
    if name is None or name in STEP_SABOTAGES:  # step sabotages act through BROKEN_STEPS
        yield
        return
    if name not in _PATCHES:
        raise ValueError(f"unknown sabotage {name!r}; choose one of {SABOTAGES}.")
    attr, broken = _PATCHES[name]
    target = _TARGET.get(name, iga.core.aligner)
    original = getattr(target, attr)
    setattr(target, attr, broken)
    try:
        yield
    finally:
        setattr(target, attr, original)
