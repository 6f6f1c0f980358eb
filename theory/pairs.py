"""The one helper every Theorem-1 check trains through: ERM and IGA on the same draws.

``train_pair(name, problem, K, R, n, s, seed, config)`` samples R independent sets of
K training domains (and n examples per domain), trains ERM and IGA by full-batch GD
on identical data, and returns both sides of Theorem 1 for each method
(``theory.bound.BoundTerms``), IGA's mask over training, and the trivial
predictor's certificate (the bound at the reference ``W°``, where ``Dev_K = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import iga
from theory import bound as bd
from theory.common import Settings, fmt, gen
from theory.problems import DTYPE, LinearShortcut, LoRAShift
from theory.trainers import (
    SplitMask,
    linear_sample_oracle,
    lora_init,
    make_aligner,
    run_linear,
    split_oracle,
    train_linear,
    train_lora,
)


@dataclass
class PairRun:
    """ERM and IGA trained on the same domains and data, R replications."""

    erm: bd.BoundTerms
    iga: bd.BoundTerms
    mask_trace: torch.Tensor  # IGA's mask over training, (T, *param_shape)
    spurious: slice | tuple  # index of the spurious block of the mask
    trivial: float  # the bound (= the exact OOD risk) of the reference predictor W°
    squared: bool = True  # risks are squared losses (False: 0-1 error, slack undefined)


def random_rotation(d: int, seed: int) -> torch.Tensor:
    """A fixed orthogonal (d, d) matrix (QR of a seeded Gaussian, signs fixed)."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn((d, d), generator=g, dtype=DTYPE))
    return q * torch.sign(torch.diagonal(r))


def train_pair(
    name: str,
    problem: LinearShortcut | LoRAShift,
    K: int,
    R: int,
    s: Settings,
    seed: int,
    config: iga.IGAConfig,
    **kw,
) -> PairRun:
    """Dispatch to the linear or LoRA pair trainer with the sizes of ``s``."""
    if isinstance(problem, LoRAShift):
        return train_pair_lora(
            problem, K, R, s.n_per_domain, s.lora_steps, s.lora_lr, seed, config, s.delta, **kw
        )
    n = s.n_per_domain if problem.kind == "regression" else s.n_classification
    return train_pair_linear(problem, K, R, n, s.train_steps, seed, config, s.delta, **kw)


def train_pair_linear(
    problem: LinearShortcut,
    K: int,
    R: int,
    n: int,
    steps: int,
    seed: int,
    config: iga.IGAConfig,
    delta: float,
    test_problem: LinearShortcut | None = None,
    rotation: torch.Tensor | None = None,
    estimator: str = "batch",
) -> PairRun:
    """Train ERM and IGA by full-batch GD (lr = 1 / smoothness of the empirical risk).

    ``rotation`` Q (d, d): the learners see ``Q x`` (invariant and spurious features
    mixed on every coordinate, as in the scrambled unit tests of Aubin et al. 2021);
    the bound is evaluated on the equivalent predictor ``w Q`` in the original basis.
    ``estimator="split"``: IGA's mask from ``iga.split_conflict_variance`` on the two
    halves of each domain's examples (Lemma E); the step is the same full-batch mean.
    """
    g = gen(seed, f"linear-{problem.kind}-{K}")
    mu = problem.sample_domains(R, K, g)
    X, y = problem.sample_data(mu, n, g)
    X = X if rotation is None else X @ rotation.T
    top = float(torch.linalg.eigvalsh(X.mT @ X / n).max())
    lr = 1 / (2 * top) if problem.kind == "regression" else 1 / (0.25 * top)
    judge = test_problem or problem
    out = {}
    for method in ("erm", "iga"):
        if estimator == "split" and method == "iga":
            run = _train_split(problem, X, y, config, steps, lr)
        else:
            run = train_linear(problem, X, y, make_aligner(method, config), steps, lr)
        w = run.w if rotation is None else run.w @ rotation
        out[method] = (bd.linear_bound(judge, w, mu, delta), run.mask_trace)
    zero = torch.zeros((1, problem.d), dtype=DTYPE)
    trivial = (
        float(judge.ood_risk(zero)[0]) if problem.kind == "regression" else 0.5
    )  # w = 0: Dev = 0 and R_Q(0) = E y^2; classification: a fair coin errs half the time
    squared = problem.kind == "regression"
    return PairRun(out["erm"][0], out["iga"][0], out["iga"][1], problem.spu, trivial, squared)


def _train_split(problem, X, y, config, steps, lr):
    """Full-batch GD from zero with the split-estimator mask (halves of equal size)."""
    h = X.shape[2] // 2
    halves = [
        linear_sample_oracle(problem, X[:, :, s], y[:, :, s])
        for s in (slice(0, h), slice(h, 2 * h))
    ]
    split = SplitMask(config)
    w0 = torch.zeros((X.shape[0], problem.d), dtype=DTYPE)
    return run_linear(w0, split_oracle(halves, split), split, steps, lr)


def train_pair_lora(
    problem: LoRAShift,
    K: int,
    R: int,
    n: int,
    steps: int,
    lr: float,
    seed: int,
    config: iga.IGAConfig,
    delta: float,
    scale: float = 1.0,
) -> PairRun:
    """Both methods from peft's init (``B = 0``); ``scale`` is the LoRA scale ``s``
    (``dW = s B A``), the step size divided by ``s^2`` so the effective-weight step is
    the same for every ``s``."""
    g = gen(seed, f"lora-{problem.side}-{K}")
    shifts = problem.sample_domains(R, K, g)
    X, Y = problem.sample_data(shifts, n, g)
    init = lora_init(problem, R, problem.r_inv, scale, g)
    out = {}
    for method in ("erm", "iga"):
        aligner = make_aligner(method, config)
        run = train_lora(problem, X, Y, init, aligner, steps, lr / scale**2)
        W = run.state.effective(problem.W0)
        out[method] = (bd.lora_bound(problem, W, shifts, delta), run.mask_trace)
    trivial = float(problem.ood_risk(problem.W0[None])[0])  # W = W0: Dev = 0
    return PairRun(out["erm"][0], out["iga"][0], out["iga"][1], problem.spurious_index(), trivial)


def slack(terms: bd.BoundTerms, squared: bool = True) -> torch.Tensor:
    """``(R_Q - Rhat_K) / Dev_K`` per replication: the share of the deviation term used.

    NaN where ``Dev_K = 0`` and for the 0-1 error (``R_Q`` and ``Rhat_K`` are then a
    0-1 error and a squared surrogate, whose difference is not what ``Dev_K`` bounds).
    """
    dev = terms.deviation
    if not squared:
        return torch.full_like(dev, torch.nan)
    return torch.where(dev > 0, (terms.ood - terms.train) / dev.clamp_min(1e-300), torch.nan)


def mean_se(pair: PairRun) -> dict[str, float]:
    """Mean and standard error over replications of each side of Theorem 1 (table rows)."""
    out = {}
    for m in ("erm", "iga"):
        terms = getattr(pair, m)
        for q in ("bound", "deviation", "ood", "ood_excess", "train"):
            x = getattr(terms, q)
            out[f"{q}_{m}"] = fmt(float(x.mean()))
            out[f"{q}_{m}_se"] = fmt(float(x.std() / math.sqrt(len(x))))
        out[f"slack_{m}"] = fmt(float(slack(terms, pair.squared).nanmean()))
    out["trivial"] = fmt(pair.trivial)
    return out
