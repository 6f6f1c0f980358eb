"""Evaluation metrics of docs/design.md section 6, as pure functions.

* Accuracy: share of examples whose extracted answer equals the gold answer.
* Logical Consistency Score (LCS): for an isomer set with pooled hidden states
  ``h_1..h_n`` (one per domain), normalise ``u_i = h_i / ||h_i||`` and take the
  mean pairwise squared distance over 2,
  ``LCS_set = 1/(n(n-1)) sum_{i != j} ||u_i - u_j||^2 / 2``, which for unit
  vectors equals ``n/(n-1) (1 - ||mean_i u_i||^2)`` and the mean of ``1 - cos``.
  The score averages over sets; 0 means every isomer looks the same to the
  student, lower is better.
* Answer consistency: share of sets whose isomers all receive the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch


def set_spread(reps: torch.Tensor) -> torch.Tensor:
    """LCS of one set: ``reps`` (n_isomers, d) -> scalar; needs n >= 2."""
    n = reps.shape[0]
    if reps.dim() != 2 or n < 2:
        raise ValueError(f"set_spread needs (n >= 2, d) representations, got {tuple(reps.shape)}.")
    u = torch.nn.functional.normalize(reps.double(), dim=-1)  # (n, d)
    return n / (n - 1) * (1.0 - u.mean(dim=0).square().sum())


def logical_consistency_score(sets: Iterable[torch.Tensor]) -> float:
    """Mean of ``set_spread`` over sets with at least two isomers."""
    spreads = [set_spread(r) for r in sets if r.shape[0] >= 2]
    if not spreads:
        raise ValueError("LCS needs at least one isomer set with two or more domains.")
    return float(torch.stack(spreads).mean().clamp_min(0.0))


def answer_consistency(answers_by_set: Mapping[str, Sequence[str | None]]) -> float:
    """Share of sets whose isomers all got the same (non-missing) answer."""
    usable = [a for a in answers_by_set.values() if len(a) >= 2]
    if not usable:
        raise ValueError("answer consistency needs sets with two or more isomers.")
    same = [a[0] is not None and all(x == a[0] for x in a) for a in usable]
    return sum(same) / len(same)


def accuracy(predictions: Sequence[str | None], golds: Sequence[str]) -> float:
    if len(predictions) != len(golds) or not golds:
        raise ValueError(
            f"accuracy needs equal, non-empty lists; got {len(predictions)}, {len(golds)}."
        )
    return sum(p == g for p, g in zip(predictions, golds)) / len(golds)
