"""Checks of Theorem 1 (the OOD bound) and Corollary 1.1 / Proposition 1.3 (THEOREMS.md 1).

* ``validity``: the bound holds for ERM's and IGA's learnt weights (coverage rule of
  ``theory.decisions.coverage_decision``), with the slack ``(R_Q - Rhat_K) / Dev_K``
  and the trivial predictor's certificate beside it.
* ``tightness``: IGA's bound and OOD excess risk are below ERM's by at least
  ``Settings.min_effect`` (relative, Fieller interval). This is an *empirical* claim:
  Theorem 1 bounds every predictor, it does not order two algorithms.
* ``k_scaling``: the bound term and the OOD excess shrink at least like ``K^-1/2``.
* ``transient``: Proposition 1.3, IGA's advantage decays with training time.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import iga
from theory import convergence as cv
from theory.common import (
    OOD_CONFIG,
    CheckResult,
    Settings,
    as_tuple,
    classification_problem,
    curve,
    fmt,
    gen,
    lora_problem,
    regression_problem,
)
from theory.decisions import coverage_decision, relative_gap
from theory.pairs import PairRun, mean_se, slack, train_pair, train_pair_linear
from theory.problems import DTYPE
from theory.stats import loglog_fit
from theory.trainers import linear_sample_oracle, make_aligner, run_linear

PROBLEMS = {
    "regression": regression_problem,
    "classification": classification_problem,
    "lora": lora_problem,
}


def validity(name: str, pair: PairRun, s: Settings) -> CheckResult:
    """Theorem 1 must hold for ERM's and IGA's weights at once in >= 1 - delta of draws."""
    holds = (pair.erm.ood <= pair.erm.bound) & (pair.iga.ood <= pair.iga.bound)
    cov = coverage_decision(holds.numpy(), s.delta, s.alpha)
    lo, hi = cov.ci
    slacks = {m: slack(getattr(pair, m), pair.squared) for m in ("erm", "iga")}
    bounds = {m: float(getattr(pair, m).bound.mean()) for m in ("erm", "iga")}
    return CheckResult(
        name=name,
        theorem="Theorem 1",
        claim=f"R_Q(W) <= Rhat_K(W) + Dev_K(W) for ERM and IGA weights w.p. >= {1 - s.delta:g}",
        numbers={
            "coverage": fmt(cov.covered / cov.n),
            "reps": cov.n,
            "bound_erm": fmt(bounds["erm"]),
            "ood_erm": fmt(float(pair.erm.ood.mean())),
            "bound_iga": fmt(bounds["iga"]),
            "ood_iga": fmt(float(pair.iga.ood.mean())),
            "slack_erm": fmt(float(slacks["erm"].nanmean())),
            "slack_iga": fmt(float(slacks["iga"].nanmean())),
            "slack_max": fmt(float(torch.cat(list(slacks.values())).nan_to_num(-math.inf).max())),
            "trivial": fmt(pair.trivial),
            "iga_beats_trivial": int(bounds["iga"] < pair.trivial),
            "erm_beats_trivial": int(bounds["erm"] < pair.trivial),
        },
        ci={"coverage": [fmt(lo), fmt(hi)]},
        test=f"Clopper-Pearson {1 - s.alpha:.0%} interval; fail iff upper limit < 1 - delta",
        p_value=None,
        passed=cov.passed,
        detail=f"{cov.covered}/{cov.n} covered; upper limit {hi:.4f} vs {1 - s.delta:g}; "
        f"slack (R_Q - Rhat_K)/Dev_K: IGA {float(slacks['iga'].nanmean()):.3g}, ERM "
        f"{float(slacks['erm'].nanmean()):.3g}; trivial predictor certifies {pair.trivial:.4g}",
    )


def tightness(name: str, pair: PairRun, s: Settings) -> CheckResult:
    """IGA's bound and OOD excess below ERM's by a relative gap > ``s.min_effect``."""
    gaps = {
        q: relative_gap(
            getattr(pair.erm, q).numpy(), getattr(pair.iga, q).numpy(), s.alpha, s.min_effect
        )
        for q in ("bound", "ood_excess")
    }
    mask = pair.mask_trace
    spu = mask[(slice(None), *as_tuple(pair.spurious))]
    inv_mean = (mask.flatten(1).sum(1) - spu.flatten(1).sum(1)) / (mask[0].numel() - spu[0].numel())
    b, o = gaps["bound"], gaps["ood_excess"]
    return CheckResult(
        name=name,
        theorem="Theorem 1 + Corollary 1.1 (empirical claim)",
        claim=f"IGA's bound and OOD excess risk are below ERM's by more than {s.min_effect:.0%}",
        numbers={
            "bound_erm": fmt(float(pair.erm.bound.mean())),
            "bound_iga": fmt(float(pair.iga.bound.mean())),
            "ood_erm": fmt(float(pair.erm.ood.mean())),
            "ood_iga": fmt(float(pair.iga.ood.mean())),
            "rel_gap_bound": fmt(b.estimate),
            "rel_gap_ood_excess": fmt(o.estimate),
            "spu_norm_erm": fmt(float(pair.erm.spurious_norm.mean())),
            "spu_norm_iga": fmt(float(pair.iga.spurious_norm.mean())),
            "p_bound": fmt(b.p_value),
            "p_ood": fmt(o.p_value),
        },
        ci={"rel_gap_bound": [fmt(x) for x in b.ci], "rel_gap_ood_excess": [fmt(x) for x in o.ci]},
        test=f"relative gaps 1 - mean(IGA)/mean(ERM), paired Fieller {1 - 2 * s.alpha:.0%} "
        f"intervals; pass iff both lower limits > {s.min_effect:g}",
        p_value=fmt(max(b.p_value, o.p_value)),
        passed=b.passed and o.passed,
        detail=f"bound gap {b.estimate:+.3g} [{b.ci[0]:+.3g}, {b.ci[1]:+.3g}], "
        f"OOD excess gap {o.estimate:+.3g} [{o.ci[0]:+.3g}, {o.ci[1]:+.3g}]",
        data={"mask_invariant": curve(inv_mean), "mask_spurious": curve(spu.flatten(1).mean(1))},
    )


def bound_checks(
    problem_name: str,
    s: Settings,
    seed: int,
    config: iga.IGAConfig = OOD_CONFIG,
    suffix: str = "",
    pair_kw: dict | None = None,
    **problem_kw,
) -> list[CheckResult]:
    """Validity and tightness of Theorem 1 on "regression", "classification" or "lora"."""
    problem = PROBLEMS[problem_name](**problem_kw)
    R = s.reps_lora if problem_name == "lora" else s.reps_bound
    pair = train_pair(problem_name, problem, s.K, R, s, seed, config, **(pair_kw or {}))
    return [
        validity(f"validity[{problem_name}{suffix}]", pair, s),
        tightness(f"tightness[{problem_name}{suffix}]", pair, s),
    ]


def k_sweep(problem_name: str, s: Settings, seed: int, config, grid, reps, pair_kw=None, **kw):
    """``[(K, PairRun), ...]`` over ``grid`` for one problem."""
    problem = PROBLEMS[problem_name](**kw)
    return [
        (K, train_pair(problem_name, problem, K, reps, s, seed, config, **(pair_kw or {})))
        for K in grid
    ]


def k_scaling_check(
    problem_name: str,
    s: Settings,
    seed: int,
    config: iga.IGAConfig = OOD_CONFIG,
    suffix: str = "",
    rows: list | None = None,
    **problem_kw,
) -> CheckResult:
    """log Dev_K(W_IGA) and log OOD excess of IGA on log K: slopes <= -1/2 + tol (Theorem 1).

    Shrinking with K holds for ERM as well (``eps_X ~ K^-1/2`` by construction); the
    IGA-specific part is the relative gap at the largest K (an empirical claim).
    Over 50 lines: most of it is the one CheckResult, whose fields are the report.
    """
    grid = s.k_grid if problem_name != "lora" else s.lora_k_grid
    reps = s.reps_k if problem_name != "lora" else s.reps_lora_k
    rows = rows or k_sweep(problem_name, s, seed, config, grid, reps, **problem_kw)
    grid = [K for K, _ in rows]
    ks = np.concatenate([np.full(len(p.erm.bound), K) for K, p in rows])
    fits = {}
    for method in ("iga", "erm"):
        dev = np.concatenate([getattr(p, method).deviation.numpy() for _, p in rows])
        exc = np.concatenate([getattr(p, method).ood_excess.numpy() for _, p in rows])
        fits[f"dev_{method}"] = loglog_fit(ks, dev, s.alpha)
        fits[f"excess_{method}"] = loglog_fit(ks, exc, s.alpha)
    limit = -0.5 + s.slope_tol
    k_max, top = rows[-1]
    gaps = {
        q: relative_gap(
            getattr(top.erm, q).numpy(), getattr(top.iga, q).numpy(), s.alpha, s.min_effect
        )
        for q in ("bound", "ood_excess")
    }
    tighter, better = gaps["bound"].passed, gaps["ood_excess"].passed
    slopes_ok = all(fits[k].ci[1] <= limit for k in ("dev_iga", "excess_iga"))
    return CheckResult(
        name=f"k_scaling[{problem_name}{suffix}]",
        theorem="Theorem 1 (eps_j ~ K^-1/2)",
        claim="IGA's bound term Dev_K and true OOD excess risk shrink at least like K^-1/2",
        numbers={
            **{f"slope_{k}": fmt(f.slope) for k, f in fits.items()},
            "K_min": int(min(grid)),
            "K_max": int(max(grid)),
            "rel_gap_bound_Kmax": fmt(gaps["bound"].estimate),
            "rel_gap_excess_Kmax": fmt(gaps["ood_excess"].estimate),
        },
        ci={f"slope_{k}": [fmt(f.ci[0]), fmt(f.ci[1])] for k, f in fits.items()},
        test=f"OLS of log y on log K, HC3 SEs; pass iff upper CI of IGA's slopes <= {limit:g} "
        f"and IGA's bound and OOD excess beat ERM's by > {s.min_effect:g} (Fieller) at "
        f"K = {k_max}",
        p_value=None,
        passed=bool(tighter and better and slopes_ok),
        detail=(
            f"IGA slopes dev {fits['dev_iga'].slope:.2f}, excess {fits['excess_iga'].slope:.2f}; "
            f"ERM {fits['dev_erm'].slope:.2f}, {fits['excess_erm'].slope:.2f} (theorem: <= -0.5); "
            f"at K = {k_max} IGA's bound lower: {tighter}, OOD excess lower: {better}"
        ),
        data={
            "per_K": {str(K): mean_se(p) for K, p in rows},
            "fits": {k: f.to_dict() for k, f in fits.items()},
        },
    )


def transient_check(s: Settings, seed: int, config: iga.IGAConfig = OOD_CONFIG) -> CheckResult:
    """Proposition 1.3: with the relative mask, M >= exp(-tau) > 0, so on a convex problem
    IGA-GD converges to ERM's minimizer and its OOD advantage decays with training time."""
    problem = regression_problem()
    g = gen(seed, "transient")
    mu = problem.sample_domains(s.reps_transient, s.K, g)
    X, y = problem.sample_data(mu, s.n_per_domain, g)
    top = float(torch.linalg.eigvalsh(X.mT @ X / s.n_per_domain).max())
    oracle = linear_sample_oracle(problem, X, y)
    w = {m: torch.zeros((len(mu), problem.d), dtype=DTYPE) for m in ("erm", "iga")}
    aligners = {m: make_aligner(m, config) for m in ("erm", "iga")}
    rows, done = [], 0
    for T in s.transient_T:
        for m in w:
            w[m] = run_linear(w[m], oracle, aligners[m], T - done, 1 / (2 * top)).w
        done = T
        gap = problem.ood_risk(w["erm"]) - problem.ood_risk(w["iga"])  # (R,)
        rows.append(
            {
                "T": T,
                "ood_gap": fmt(float(gap.mean())),
                "ood_gap_se": fmt(float(gap.std() / math.sqrt(len(gap)))),
                "spu_norm_iga": fmt(float(w["iga"][:, problem.spu].norm(dim=-1).mean())),
                "spu_norm_erm": fmt(float(w["erm"][:, problem.spu].norm(dim=-1).mean())),
            }
        )
    ratio = rows[-1]["ood_gap"] / rows[0]["ood_gap"]
    return CheckResult(
        name="transient[regression]",
        theorem="Proposition 1.3",
        claim="IGA's OOD advantage is transient: it decays towards 0 as training continues",
        numbers={
            "gap_first": rows[0]["ood_gap"],
            "gap_last": rows[-1]["ood_gap"],
            "ratio": fmt(ratio),
            "T_first": s.transient_T[0],
            "T_last": s.transient_T[-1],
            "m0": fmt(cv.mask_floor_bound(config)),
        },
        ci={},
        test="ratio of the mean OOD gaps (ERM - IGA) at the last and first T; pass iff < 0.05",
        p_value=None,
        passed=bool(0 <= ratio < 0.05),
        detail=f"OOD gap {rows[0]['ood_gap']:.4g} at T = {s.transient_T[0]} -> "
        f"{rows[-1]['ood_gap']:.3g} at T = {s.transient_T[-1]}",
        data={"per_T": rows},
    )


def shifted_validity(s: Settings, seed: int) -> CheckResult:
    """Fresh domains from another meta-distribution (shortcut mean flipped): outside Theorem 1."""
    train_problem = regression_problem(spu_mean=1.0, spu_scale=0.25)
    test_problem = regression_problem(spu_mean=-1.0, spu_scale=0.25)
    pair = train_pair_linear(
        train_problem,
        s.K,
        s.reps_bound,
        s.n_per_domain,
        s.train_steps,
        seed,
        OOD_CONFIG,
        s.delta,
        test_problem=test_problem,
    )
    return validity("validity[regression,shifted-test]", pair, s)
