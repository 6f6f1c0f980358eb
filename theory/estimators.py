"""Estimators of the between-domain variance and their moments (THEOREMS.md, Lemma E).

On plain tensors, for per-domain pieces ``a``, ``b`` (K, ...): two independent unbiased
estimates of each domain's mean gradient ``mu_k`` (disjoint halves of its batch),
each with per-coordinate noise variance ``2 v_k`` where ``v_k = sigma_k^2 / n_k`` is the
noise variance of the full-batch mean ``G_k = (a_k + b_k) / 2``.

* ``split_unclamped``: ``V_hat = ((K-1)/K^2) sum_k a_k b_k - (1/K^2) sum_{k != j} G_k G_j``
  (Lemma E (ii); ``iga.split_conflict_variance`` returns it clamped at 0).
* ``ema_pieces``: exponential moving averages ``m_k <- beta m_k + (1 - beta) G_k`` of
  per-domain batch gradients over fresh batches (Lemma E (iii)).
* ``batch_mean``, ``split_variance``, ``ema_mean``: the lemma's closed forms.
"""

from __future__ import annotations

import torch


def between(mu: torch.Tensor) -> torch.Tensor:
    """``V_between = (1/K) sum_k (mu_k - mubar)^2``, (K, ...) -> (...)."""
    return (mu - mu.mean(0)).square().mean(0)


def split_unclamped(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Lemma E (ii): the unbiased split estimator before the clamp at 0."""
    K = a.shape[0]
    g = 0.5 * (a + b)
    cross = g.sum(0).square() - g.square().sum(0)  # sum_{k != j} G_k G_j
    return ((K - 1) * (a * b).sum(0) - cross) / K**2


def batch_mean(mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Lemma E (i): ``E V_batch = V_between + ((K-1)/K^2) sum_k v_k``; v (K,) or (K, ...)."""
    K = mu.shape[0]
    v = v.reshape(v.shape + (1,) * (mu.dim() - v.dim()))
    return between(mu) + (K - 1) / K**2 * v.sum(0)


def split_variance(mu: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Lemma E (ii), Gaussian noise: ``Var V_hat`` per coordinate.

    ``(4/K^2) sum_k (mu_k - mubar)^2 v_k + (4/K^4) [(K-1)^2 sum_k v_k^2 + sum_{k<j} v_k v_j]``.
    """
    K = mu.shape[0]
    v = v.reshape(v.shape + (1,) * (mu.dim() - v.dim())).expand_as(mu)
    lin = 4 / K**2 * ((mu - mu.mean(0)).square() * v).sum(0)
    pairs = 0.5 * (v.sum(0).square() - v.square().sum(0))  # sum_{k<j} v_k v_j
    return lin + 4 / K**4 * ((K - 1) ** 2 * v.square().sum(0) + pairs)


def ema_factor(beta: float, steps: int) -> float:
    """Variance of the EMA of ``steps + 1`` iid batch means (started at the first) over ``v``:
    ``(1 - beta)/(1 + beta) (1 - beta^(2 steps)) + beta^(2 steps)``."""
    return (1 - beta) / (1 + beta) * (1 - beta ** (2 * steps)) + beta ** (2 * steps)


def ema_mean(mu: torch.Tensor, v: torch.Tensor, beta: float, steps: int) -> torch.Tensor:
    """Lemma E (iii), fixed ``mu``: ``E V_ema = V_between + ((K-1)/K^2) f sum_k v_k``."""
    K = mu.shape[0]
    v = v.reshape(v.shape + (1,) * (mu.dim() - v.dim()))
    return between(mu) + (K - 1) / K**2 * ema_factor(beta, steps) * v.sum(0)


def ema_pieces(draw, beta: float, steps: int) -> torch.Tensor:
    """``m`` after ``steps`` updates ``m <- beta m + (1 - beta) G`` from ``m = G_0``;
    ``draw()`` returns a fresh batch of per-domain gradients (K, ...)."""
    m = draw()
    for _ in range(steps):
        m = beta * m + (1 - beta) * draw()
    return m
