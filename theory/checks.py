"""The suite: which checks run, in which role, with which prediction (THEOREMS.md 4-5).

The checks live by theorem: ``theory.check_bound`` (Theorem 1 and its corollaries),
``theory.check_rate`` (Theorems 2 and 3), ``theory.check_reference`` (the step
itself) and ``theory.check_estimator`` (Lemma E, the mask's estimators); they
train through one helper, ``theory.pairs.train_pair``. Roles:

* ``claim``: must pass (exit status 1 otherwise);
* ``joint``: both claims (OOD tightness and the rate) in one IGA setting, side by
  side, for the verdict table; reported, never gating;
* ``regime`` (``--full``): a setting outside the theorems' assumptions with an outcome
  predicted in advance; "confirmed" only on a significant test in that direction.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace

import torch

import iga
from theory.check_bound import (
    bound_checks,
    k_scaling_check,
    k_sweep,
    shifted_validity,
    tightness,
    transient_check,
    validity,
)
from theory.check_estimator import estimator_check
from theory.check_rate import rate_linear_check, rate_lora_checks
from theory.check_reference import library_step, reference_check
from theory.common import (
    JOINT_CONFIGS,
    JOINT_ESTIMATORS,
    OOD_CONFIG,
    RATE_CONFIG,
    CheckResult,
    Settings,
)
from theory.decisions import coverage_decision, coverage_outcome, predicted_outcome
from theory.pairs import random_rotation, train_pair
from theory.sabotage import BROKEN_STEPS, sabotaged

__all__ = [
    "OOD_CONFIG",
    "RATE_CONFIG",
    "CheckResult",
    "Settings",
    "bound_checks",
    "claim_checks",
    "k_scaling_check",
    "rate_linear_check",
    "rate_lora_checks",
    "regime_checks",
    "run_checks",
    "shifted_validity",
    "transient_check",
    "validity",
]

Job = Callable[[], list[CheckResult]]


def _ckey(config: iga.IGAConfig) -> tuple:
    return tuple(sorted(config.to_dict().items()))


def _keep(memo: dict | None, key: tuple, results: list[CheckResult]) -> list[CheckResult]:
    """Remember ``results`` under ``key`` so a joint row with the same inputs reuses them."""
    if memo is not None:
        memo[key] = results
    return results


def claim_checks(
    s: Settings, seed: int, sabotage: str | None = None, memo: dict | None = None
) -> list[Job]:
    step = BROKEN_STEPS.get(sabotage, library_step)
    return [
        lambda: _keep(memo, ("ood", _ckey(OOD_CONFIG)), bound_checks("regression", s, seed)),
        lambda: bound_checks("classification", s, seed),
        lambda: bound_checks("lora", s, seed),
        lambda: [k_scaling_check("regression", s, seed)],
        *([lambda: [k_scaling_check("lora", s, seed)]] if s.lora_k_grid else []),
        lambda: _keep(memo, ("rate", _ckey(RATE_CONFIG)), [rate_linear_check(s, seed)]),
        lambda: rate_lora_checks(s, seed),
        lambda: [reference_check(s, seed, step)],
        lambda: [estimator_check(s, seed)],
        *([lambda: [transient_check(s, seed)]] if s.transient_T else []),
    ]


def joint_checks(s: Settings, seed: int, memo: dict | None = None) -> list[Job]:
    """Both claims under one IGA setting each (same tau, variance kind, estimator).

    A row whose inputs equal a claim check's (same config, batch estimator, same seed)
    is a renamed copy of that claim's result (``memo``), not a second identical run.
    """
    memo = {} if memo is None else memo
    sj = replace(s, reps_rate=s.reps_joint_rate)

    def both(label: str, config: iga.IGAConfig, estimator: str) -> list[CheckResult]:
        tag = label if estimator == "batch" else f"{label},split"
        pair_kw = {"estimator": estimator}
        if estimator == "batch" and ("ood", _ckey(config)) in memo:
            ood = copy.deepcopy(memo["ood", _ckey(config)][1])
            ood.name = f"tightness[regression,{tag}]"
        else:
            ood = bound_checks("regression", s, seed, config, f",{tag}", pair_kw)[1]
        if estimator == "batch" and ("rate", _ckey(config)) in memo and sj == s:
            rate = copy.deepcopy(memo["rate", _ckey(config)][0])
            rate.name = f"rate[linear,{tag}]"
        else:
            rate = rate_linear_check(sj, seed, config, suffix=f",{tag}", estimator=estimator)
        for r in (ood, rate):
            r.role = "joint"
        return [ood, rate]

    return [
        lambda label=label, e=e: both(label, JOINT_CONFIGS[label], e)
        for label, estimators in JOINT_ESTIMATORS.items()
        for e in estimators
    ]


def _regime_pair(name, problem_name, s, seed, kind, why, config=OOD_CONFIG, pair_kw=None, **kw):
    """A tightness row with a predicted direction on the OOD excess risk."""
    from theory.check_bound import PROBLEMS

    problem = PROBLEMS[problem_name](**kw)
    R = s.reps_lora if problem_name == "lora" else s.reps_bound
    pair = train_pair(problem_name, problem, s.K, R, s, seed, config, **(pair_kw or {}))
    result = tightness(name, pair, s)
    outcome, evidence = predicted_outcome(
        kind, pair.erm.ood_excess.numpy(), pair.iga.ood_excess.numpy(), s.alpha, s.min_effect
    )
    return [_mark(result, kind, why, outcome, f"OOD excess {evidence}")]


def _mark(r: CheckResult, kind: str, why: str, outcome: str, evidence: str) -> CheckResult:
    r.role, r.prediction, r.outcome = "regime", f"{kind}: {why}", outcome
    r.expect_pass = kind == "iga_better"
    r.detail += f" | predicted {kind} ({why}); {outcome}: {evidence}"
    return r


def _regime_k(name_suffix, s, seed, config, why, **kw):
    """k_scaling row predicted to fail at the largest K: IGA's excess above ERM's there."""
    rows = k_sweep("regression", s, seed, config, s.k_grid, s.reps_k, **kw)
    result = k_scaling_check("regression", s, seed, config, name_suffix, rows=rows)
    top = rows[-1][1]
    outcome, evidence = predicted_outcome(
        "erm_better",
        top.erm.ood_excess.numpy(),
        top.iga.ood_excess.numpy(),
        s.alpha,
        s.min_effect,
    )
    return [_mark(result, "erm_better", why, outcome, f"at K = {rows[-1][0]}: {evidence}")]


def _regime_shifted(s: Settings, seed: int) -> list[CheckResult]:
    r = shifted_validity(s, seed)
    k, n = int(r.numbers["coverage"] * r.numbers["reps"] + 0.5), int(r.numbers["reps"])
    cov = coverage_decision([True] * k + [False] * (n - k), s.delta, s.alpha)
    return [
        _mark(
            r,
            "uncovered",
            "fresh domains not drawn from Q: outside Theorem 1",
            coverage_outcome(cov, s.delta),
            f"coverage {k}/{n}",
        )
    ]


def _regime_rate(result: CheckResult, why: str, quantity: str) -> list[CheckResult]:
    """Rate rows predicted to break: ``"slope"`` (lower slope limit above -0.4, i.e. the rate
    is significantly slower) or ``"bound"`` (lower limit of measured / bound above 1)."""
    if quantity == "slope":
        lo, hi = result.ci["slope"]
        outcome = "confirmed" if lo > -0.4 else ("contradicted" if hi <= -0.4 else "not confirmed")
        evidence = f"slope interval [{lo:.3g}, {hi:.3g}]"
    else:
        lo, hi = result.numbers["masked_ratio_lo_max"], result.numbers["masked_ratio_hi_max"]
        outcome = "confirmed" if lo > 1 else ("contradicted" if hi < 1 else "not confirmed")
        evidence = f"largest measured/bound interval [{lo:.3g}, {hi:.3g}]"
    return [_mark(result, f"{quantity}_fails", why, outcome, evidence)]


def regime_checks(s: Settings, seed: int) -> list[Job]:
    """The claims outside the favourable settings, each with its predicted outcome.

    Over 50 lines because it is one list, one entry per row of THEOREMS.md section 5.
    """
    # Long on purpose (over 50 lines): a table of regimes, each a few lines of set-up and its
    # predicted outcome.
    wide = replace(s, k_grid=(4, 8, 16, 32, 64))
    rot = {"rotation": random_rotation(8, seed + 17)}
    # sigma = 16: at sigma = 2 the skewed bias floor stays under the bound up to T = 16384
    # (ratio 0.49); at 16 the average stalls (slope -0.06 vs -0.49 with Gaussian noise).
    skewed = replace(s, rate_noise=16.0, rate_T=(1024, 4096, 16384, 65536), reps_rate=8)
    return [
        lambda: _regime_pair(
            "tightness[regression,no-spurious]",
            "regression",
            s,
            seed,
            "iga_better",
            "no shortcut: IGA damps sampling noise only",
            spu_scale=0.0,
        ),
        lambda: _regime_pair(
            "tightness[regression,tau=1]",
            "regression",
            s,
            seed,
            "no_gain",
            "tau = 1: the mask barely acts within T = 300",
            config=replace(OOD_CONFIG, tau=1.0),
        ),
        lambda: _regime_k(
            ",tau=10",
            wide,
            seed,
            replace(OOD_CONFIG, tau=10.0),
            "tau too large: invariant weights stall",
        ),
        lambda: _regime_k(
            ",spu_mean=0.5", s, seed, OOD_CONFIG, "shortcut informative on average", spu_mean=0.5
        ),
        lambda: _regime_pair(
            "tightness[lora,side=in]",
            "lora",
            s,
            seed,
            "no_gain",
            "input-side shifts leak through peft's random A (Lemma 3.4)",
            side="in",
        ),
        lambda: _regime_pair(
            "tightness[lora,spu_scale=3]",
            "lora",
            s,
            seed,
            "no_gain",
            "weak shift: ERM's leak is small",
            spu_scale=3.0,
        ),
        lambda: _regime_pair(
            "tightness[regression,rotated]",
            "regression",
            s,
            seed,
            "erm_better",
            "rotated features: no coordinate is invariant",
            pair_kw=rot,
        ),
        lambda: _regime_pair(
            "tightness[lora,scale=2]",
            "lora",
            s,
            seed,
            "iga_better",
            "the mask acts on dW, so s only rescales the step",
            pair_kw={"scale": 2.0},
        ),
        lambda: _regime_shifted(s, seed),
        lambda: _regime_rate(
            rate_linear_check(skewed, seed, suffix=",skewed,sigma=16", noise="skewed"),
            "skewed noise breaks (N): the mask-noise correlation biases the step",
            "bound",
        ),
        lambda: _regime_rate(
            rate_lora_checks(s, seed, suffix=",init=peft", start="peft")[0],
            "from B = 0 the grid sits in the slow transient",
            "slope",
        ),
    ]


def run_checks(
    s: Settings, seed: int = 0, sabotage: str | None = None, progress: bool = False
) -> list[CheckResult]:
    """Run the claim and joint checks (and the regime checks when ``s.regimes``)."""
    memo: dict = {}
    jobs = claim_checks(s, seed, sabotage, memo) + joint_checks(s, seed, memo)
    jobs += regime_checks(s, seed) if s.regimes else []
    results: list[CheckResult] = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="theory checks", unit="check")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add contention
    try:
        with sabotaged(sabotage):
            _run_jobs(jobs, results, bar)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()
    return results


def _run_jobs(jobs, results: list[CheckResult], bar) -> None:
    for job in jobs:
        start = time.perf_counter()
        out = job()
        for r in out:
            r.seconds = round((time.perf_counter() - start) / len(out), 3)
        results.extend(out)
        if bar is not None:
            bar.update(1)
