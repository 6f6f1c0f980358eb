"""Statistics over seeds: 95% intervals, paired IGA-vs-baseline tests, Holm, effect sizes.

Per cell (method, benchmark, metric): the mean over seeds and a 95% Student-t
interval. Per comparison (IGA vs one baseline on one benchmark): the paired
differences over the seeds both ran, their mean and 95% interval, a two-sided
paired t-test, and Cohen's d_z (mean difference / its standard deviation). The
p-values of all comparisons of one metric (every baseline x every benchmark) are
one family, Holm-corrected with ``statsmodels.stats.multitest.multipletests``.
A comparison is a *win* (loss) for IGA when its Holm-adjusted p < alpha and the
mean difference is positive (negative) in IGA's favour; otherwise a *tie*. One with
fewer than two paired seeds (a sweep still running) cannot be tested: it is
*untested* and stays out of the Holm family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

# Metrics where lower is better (the Logical Consistency Score).
LOWER_IS_BETTER = frozenset({"lcs"})


class Interval(NamedTuple):
    """A mean over seeds with the half-width of its Student-t interval and the count."""

    mean: float
    half: float  # nan for fewer than two values
    n: int


def mean_ci(values: Sequence[float | None], level: float = 0.95) -> Interval:
    """(mean, half-width of the Student-t interval, n) of the values that are not None/nan.

    The one definition of a cell's interval: ``empirical/table.py`` and ``paper_figures``
    both use it. The half-width is nan for one value, and everything is nan for none."""
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return Interval(float("nan"), float("nan"), 0)
    if x.size == 1:
        return Interval(float(x[0]), float("nan"), 1)
    half = sps.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return Interval(float(x.mean()), float(half), int(x.size))


@dataclass
class Comparison:
    metric: str
    benchmark: str
    baseline: str
    n: int  # paired seeds
    diff: float  # mean of (IGA - baseline); for LCS, (baseline - IGA): positive favours IGA
    ci: float  # 95% half-width of diff
    cohen_dz: float
    p: float
    p_holm: float = float("nan")
    verdict: str = "tie"

    def to_dict(self) -> dict:
        return asdict(self)


def paired(
    iga: dict[int, float], base: dict[int, float], metric: str, benchmark: str, baseline: str
) -> Comparison:
    """Paired comparison over the seeds present in both ``{seed: value}`` maps."""
    seeds = sorted(set(iga) & set(base))
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    d = np.asarray([sign * (iga[s] - base[s]) for s in seeds], dtype=float)
    if d.size < 2:
        return Comparison(metric, benchmark, baseline, int(d.size), *_single(d))
    mean, half, _ = mean_ci(d)
    sd = d.std(ddof=1)
    if sd == 0:
        dz, p = (0.0, 1.0) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
    else:
        dz, p = mean / sd, float(sps.ttest_1samp(d, 0.0).pvalue)
    return Comparison(metric, benchmark, baseline, int(d.size), mean, half, dz, p)


def _single(d: np.ndarray) -> tuple[float, float, float, float]:
    return (float(d[0]) if d.size else float("nan"), float("nan"), float("nan"), float("nan"))


def holm(comparisons: list[Comparison], alpha: float = 0.05) -> list[Comparison]:
    """Holm-adjust the p-values of one family in place and set each verdict."""
    testable = [c for c in comparisons if not math.isnan(c.p)]
    for c in comparisons:
        if math.isnan(c.p):
            c.verdict = "untested"
    if testable:
        _, adjusted, _, _ = multipletests([c.p for c in testable], alpha=alpha, method="holm")
        for c, p in zip(testable, adjusted):
            c.p_holm = float(p)
            if p < alpha:
                c.verdict = "win" if c.diff > 0 else "loss"
    return comparisons
