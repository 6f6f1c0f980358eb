"""The training contract shared by ``iga distill`` and the empirical loop: schedule and batching.

``iga distill`` trains with ``transformers.Trainer`` (``iga/distill/run.py`` sets
``lr_scheduler_type="cosine"`` and ``warmup_steps=warmup_steps(steps)``); the
empirical loop (``empirical/execute.py``) trains the same student with its own
loop. Both follow the definitions below, so a method compared in ``empirical``
trains exactly as ``iga distill`` would (README, "Distilling your own student";
docs/design.md section 5):

* **learning rate**: linear warm-up from 0 over ``warmup_steps(total)`` steps, then
  cosine decay to 0 at ``total``; step ``s`` (0-based, the ``s``-th optimizer step)
  uses ``lr * lr_factor(s, warmup, total)``. This is transformers' ``"cosine"``
  schedule term for term (so the first step has learning rate 0, as in the Trainer).
* **batches**: whole isomer sets, ``batch_sets`` per step; epoch ``e`` visits every
  set once in the order ``torch.randperm(n)`` drawn from a generator seeded with
  ``seed + e``, and its last batch keeps the remainder (fewer sets). This is what the
  Trainer's data loader does with ``data_seed=seed`` (accelerate's seedable sampler,
  ``dataloader_drop_last=False``).

``tests/test_training_contract.py`` checks both against transformers itself and
that ERM through ``IGATrainer`` equals ERM through the empirical loop.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

WARMUP_FRACTION = 20  # warm-up lasts 1/20 = 5% of the steps, at least one step


def warmup_steps(total_steps: int) -> int:
    """Number of linear warm-up steps for a run of ``total_steps`` (5%, at least 1)."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}.")
    return max(1, total_steps // WARMUP_FRACTION)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Multiplier of the base learning rate at 0-based optimizer step ``step``.

    ``step / warmup`` during warm-up, then ``(1 + cos(pi * progress)) / 2`` with
    ``progress = (step - warmup) / (total - warmup)``, never below 0.
    """
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` of ``lr_factor``; call ``step()`` after each optimizer step."""
    warmup = warmup_steps(total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total_steps))


def epoch_order(n_items: int, seed: int, epoch: int) -> list[int]:
    """The order in which epoch ``epoch`` visits items ``0 .. n_items-1``."""
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n_items, generator=generator).tolist()


def batch_indices(n_items: int, batch_size: int, steps: int, seed: int) -> Iterator[list[int]]:
    """The item indices of each of ``steps`` batches, epoch by epoch (see the module doc)."""
    if n_items < 1 or batch_size < 1 or steps < 0:
        raise ValueError(
            f"batch_indices needs n_items >= 1, batch_size >= 1 and steps >= 0; got "
            f"{n_items}, {batch_size}, {steps}."
        )
    done, epoch = 0, 0
    while done < steps:
        order = epoch_order(n_items, seed, epoch)
        for start in range(0, n_items, batch_size):
            if done == steps:
                return
            yield order[start : start + batch_size]
            done += 1
        epoch += 1
