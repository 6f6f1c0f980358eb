"""Estimators of the between-domain variance ``V`` behind the mask (issue 14; Lemma E of
theory/THEOREMS.md; docs/design.md section 2).

The target is ``V_between = var_k(mu_k)`` per coordinate, where ``mu_k`` is domain k's
expected gradient. With ``n_k`` examples per domain in a step, the minibatch gradient is
``G_k = mu_k + e_k`` with noise ``E[e_k^2] = sigma_k^2 / n_k``, so

    E[conflict_variance(G)] = V_between + ((K - 1) / K^2) sum_k sigma_k^2 / n_k.

* ``batch``: ``conflict_variance(G)``, the paper's literal V. Biased up by the noise
  term, which dominates when ``n_k`` is small: for pure noise the relative variance
  tends to ``(K - 1) / K`` and the mask to ``exp(-tau (K - 1) / K)``.
* ``split``: ``split_conflict_variance(a, b)`` from two disjoint halves of each
  domain's examples (products of independent pieces): unbiased for ``V_between``
  before its clamp at 0; its variance grows like the batch estimator's noise term,
  so it is noisy but centred.
* ``ema``: ``conflict_variance`` of bias-corrected exponential moving averages
  ``m_k <- beta m_k + (1 - beta) G_k``, ``m_hat_k = m_k / (1 - beta^t)``. If the
  ``mu_k`` move slowly, ``m_hat_k = mu_k + e'_k`` with ``E[e'_k^2] =
  sigma_k^2 / n_k * (1 - beta)(1 + beta^t) / ((1 + beta)(1 - beta^t))``, which tends to
  ``(1 - beta) / (1 + beta)`` times the batch noise (0.053 at beta = 0.9): the noise
  bias shrinks by that factor, and in exchange ``m_hat`` lags a drifting ``mu_k`` by
  about ``beta / (1 - beta)`` steps (the trade-off, set by ``ema_beta``).

Each estimator maps the step's per-domain gradients (and halves, for ``split``) to one
``V`` per key; the mask ``M = m0 + (1 - m0) exp(-tau V)`` and the masked mean are the
aligner's. ``state_dict``/``load_state_dict`` carry the EMA across checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from iga.core.config import IGAConfig
from iga.core.mask import conflict_variance

Halves = Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # key -> (pairs, scale)


class BatchEstimator:
    """``V = conflict_variance(G)`` of the step's minibatch gradients (biased by noise)."""

    needs_halves = False

    def __init__(self, config: IGAConfig) -> None:
        self.config = config

    def variances(
        self, per_domain: Mapping[str, torch.Tensor], halves: Halves | None = None
    ) -> dict[str, torch.Tensor]:
        c = self.config
        return {name: conflict_variance(g, c.variance, c.eps) for name, g in per_domain.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"estimator": self.config.estimator}

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Nothing to restore (the batch and split estimators are stateless)."""


class SplitEstimator(BatchEstimator):
    """``V = split_conflict_variance(a, b)`` from two halves of each domain's examples.

    ``halves`` maps each key to ``(pairs, scale)``: the capture's raw buffer viewed as
    (K, 2, *shape) and the (K, 2) factors ``F_k / F_h`` that make each half an unbiased
    estimate of ``mu_k`` (``PerDomainGradients.half_pairs``); ``split_variance_fused``
    computes the same number as ``split_conflict_variance`` without copying the halves.
    """

    needs_halves = True

    def variances(
        self, per_domain: Mapping[str, torch.Tensor], halves: Halves | None = None
    ) -> dict[str, torch.Tensor]:
        if halves is None:
            raise ValueError("the split estimator needs the two halves of every domain.")
        c = self.config
        return {
            name: split_variance_fused(*halves[name], kind=c.variance, eps=c.eps)
            for name in per_domain
        }


@torch.no_grad()
def split_variance_fused(
    pairs: torch.Tensor, scale: torch.Tensor, kind: str = "raw", eps: float = 0.0
) -> torch.Tensor:
    """``split_conflict_variance(scale_a * pairs[:, 0], scale_b * pairs[:, 1])`` in fewer
    full-size passes: (K, 2, *shape) and (K, 2) -> (*shape).

    Same algebra (``iga.core.mask.split_conflict_variance``): shifted by domain 0's
    mean ``r``, ``V_hat = ((K - 1) sum a'b' - (T^2 - sum g'^2)) / K^2`` with
    ``g' = (a' + b') / 2`` and ``T = sum g'``; the relative variance's denominator
    ``(1/K) sum a b`` comes from the same sums, ``sum a'b' + 2 r T + K r^2``, so no
    unshifted product is formed.
    """
    k = pairs.shape[0]
    if k == 1:
        return torch.zeros_like(pairs[0, 0])
    s = scale.to(pairs.device, pairs.dtype).view(k, 2, *([1] * (pairs.dim() - 2)))
    ref = 0.5 * (pairs[0, 0] * s[0, 0] + pairs[0, 1] * s[0, 1])  # (*shape)
    a = torch.mul(pairs[:, 0], s[:, 0]).sub_(ref)  # (K, *shape)
    b = torch.mul(pairs[:, 1], s[:, 1]).sub_(ref)  # (K, *shape)
    same = torch.einsum("k...,k...->...", a, b)  # (*shape): sum_k a'_k b'_k
    g = a.add_(b).mul_(0.5)  # (K, *shape), in a's storage: g'_k
    total = g.sum(dim=0)  # (*shape)
    cross = total.square() - torch.einsum("k...,k...->...", g, g)  # sum_{k != j} g'_k g'_j
    v_hat = ((k - 1) * same - cross).div_(k * k).clamp_min_(0.0)  # (*shape)
    if kind == "raw":
        return v_hat
    signal = (same + 2.0 * ref * total + k * ref.square()) / k + eps  # (1/K) sum_k a_k b_k
    denom = torch.maximum(signal, v_hat)
    positive = denom > 0
    safe = torch.where(positive, denom, torch.ones_like(denom))
    return torch.where(positive, v_hat / safe, torch.zeros_like(v_hat))


class EMAEstimator(BatchEstimator):
    """``V = conflict_variance(m_hat)`` of bias-corrected moving averages of the ``G_k``.

    One average (K, *shape) and one update count per key; a key whose layer did not
    run in a step keeps its average. Updated from the all-reduced ``G_k`` under DDP,
    so every rank holds the same averages (the rank mean of the per-rank ones).
    """

    def __init__(self, config: IGAConfig) -> None:
        super().__init__(config)
        self.averages: dict[str, torch.Tensor] = {}  # key -> (K, *shape)
        self.counts: dict[str, int] = {}

    @torch.no_grad()
    def variances(
        self, per_domain: Mapping[str, torch.Tensor], halves: Halves | None = None
    ) -> dict[str, torch.Tensor]:
        beta, c = self.config.ema_beta, self.config
        out = {}
        for name, g in per_domain.items():
            m = self.averages.get(name)
            if m is None:
                m = self.averages[name] = torch.zeros_like(g)
            elif m.shape != g.shape:
                raise ValueError(
                    f"IGA ema estimator: the saved average of {name!r} has shape "
                    f"{tuple(m.shape)} but the gradient has {tuple(g.shape)}; the checkpoint "
                    "belongs to another model or number of domains."
                )
            elif m.device != g.device or m.dtype != g.dtype:
                m = self.averages[name] = m.to(g.device, g.dtype)
            m.mul_(beta).add_(g, alpha=1.0 - beta)  # (K, *shape)
            t = self.counts[name] = self.counts.get(name, 0) + 1
            m_hat = m / (1.0 - beta**t)  # (K, *shape): bias-corrected
            out[name] = conflict_variance(m_hat, c.variance, c.eps)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "estimator": "ema",
            "ema_beta": self.config.ema_beta,
            "averages": {k: v.detach().cpu().clone() for k, v in self.averages.items()},
            "counts": dict(self.counts),
        }

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        if not state or state.get("estimator") != "ema" or "averages" not in state:
            raise ValueError(
                "IGA estimator='ema' cannot resume: the checkpoint holds no EMA state (it was "
                "written by another estimator or an older version). Resume with the "
                "estimator the run was trained with, or start a fresh run (another --out)."
            )
        self.averages = {k: v.clone() for k, v in state["averages"].items()}
        self.counts = {k: int(v) for k, v in state["counts"].items()}


ESTIMATOR_CLASSES = {"batch": BatchEstimator, "split": SplitEstimator, "ema": EMAEstimator}


def make_estimator(config: IGAConfig) -> BatchEstimator:
    """The estimator named by ``config.estimator`` (validated by ``IGAConfig``)."""
    return ESTIMATOR_CLASSES[config.estimator](config)
