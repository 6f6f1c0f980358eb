"""Input checks shared by the IGA operators (docs/style.md, "Ours": errors say what was
wrong, where, and what to do).

The operators of docs/design.md section 2 are defined on real-valued gradients: a NaN
gradient must not read as perfect agreement (V = 0, M = 1), an integer tensor would
truncate the maths, and a meta tensor has no values at all.
"""

from __future__ import annotations

import math

import torch


def check_real_tensor(x, where: str, what: str) -> None:
    """``TypeError``/``ValueError`` unless ``x`` is a floating-point tensor holding data.

    ``where`` names the function, ``what`` the argument: the message says which and what
    to do. Integer dtypes would silently truncate the maths; meta tensors have no values.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{where}: {what} must be a torch.Tensor, got {type(x).__name__}.")
    if not x.dtype.is_floating_point:
        raise TypeError(
            f"{where}: {what} has dtype {x.dtype}; pass a floating-point tensor (e.g. .float())."
        )
    if x.is_meta:
        raise ValueError(
            f"{where}: {what} is a meta tensor (shape only, no values); materialise it "
            "(e.g. model.to_empty(device=...) and load weights) before the IGA step."
        )


def check_finite(x: torch.Tensor, where: str, what: str) -> None:
    """``ValueError`` naming ``what`` if ``x`` holds NaN or Inf values."""
    # One reduction first (a finite sum proves every entry finite); the elementwise
    # test only runs when the sum is not finite (NaN/Inf, or an overflowing sum).
    if x.numel() and not math.isfinite(float(x.detach().sum())):
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            raise ValueError(
                f"{where}: {what} holds {int(bad.sum())} NaN or Inf value(s) of {x.numel()}; "
                "the IGA step cannot weigh a coordinate it cannot measure. Fix the loss or "
                "lower the learning rate (a diverged step), or skip this batch."
            )
