"""The statistics that decide every check (statsmodels; scipy only for Wilcoxon).

* ``clopper_pearson``: exact binomial interval for a coverage rate.
* ``paired_test``: one-sided paired t-test of ``mean(a - b) > 0`` (Wilcoxon
  signed-rank p-value reported beside it as a robustness check).
* ``loglog_fit``: OLS of ``log y`` on ``log x`` with HC3 heteroskedasticity-
  robust standard errors (MacKinnon & White 1985), slope CI and R^2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import statsmodels.api as sm
from scipy.stats import wilcoxon
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW


def clopper_pearson(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` Clopper-Pearson interval of a binomial proportion."""
    lo, hi = proportion_confint(successes, n, alpha=alpha, method="beta")
    return float(lo), float(hi)


@dataclass
class PairedTest:
    """One-sided paired test of H1: mean(a - b) > 0."""

    n: int
    mean_diff: float
    ci: tuple[float, float]
    t_stat: float
    p_value: float
    wilcoxon_p: float

    def to_dict(self) -> dict:
        return asdict(self)


def paired_test(a, b, alpha: float = 0.05) -> PairedTest:
    """Paired t-test that ``a`` exceeds ``b`` on average; ``a``, ``b`` are paired samples.

    All-equal differences (e.g. a method compared with itself) carry no evidence
    of a positive mean unless every difference is positive: p = 1 (or 0).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if not np.all(np.isfinite(d)):
        return PairedTest(len(d), float("nan"), (float("nan"),) * 2, float("nan"), 1.0, 1.0)
    mean = float(d.mean())
    if float(d.std()) == 0.0:
        p = 0.0 if mean > 0 else 1.0
        return PairedTest(
            len(d), mean, (mean, mean), math.copysign(math.inf, mean) if mean else 0.0, p, p
        )
    stats = DescrStatsW(d)
    t_stat, p_value, _ = stats.ttest_mean(0.0, alternative="larger")
    lo, hi = stats.tconfint_mean(alpha=alpha)
    nonzero = d[d != 0]
    w_p = float(wilcoxon(nonzero, alternative="greater").pvalue) if len(nonzero) > 0 else 1.0
    return PairedTest(len(d), mean, (float(lo), float(hi)), float(t_stat), float(p_value), w_p)


@dataclass
class SlopeFit:
    """``log y = intercept + slope * log x``, OLS with HC3 standard errors."""

    slope: float
    intercept: float
    se: float
    ci: tuple[float, float]
    r2: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def loglog_fit(x, y, alpha: float = 0.05) -> SlopeFit:
    """Fit ``log y`` on ``log x`` (both positive); the slope interval is two-sided ``1 - alpha``."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if np.any(~np.isfinite(y)) or np.any(y <= 0) or np.any(x <= 0):
        nan = float("nan")
        return SlopeFit(nan, nan, nan, (nan, nan), nan, len(y))
    design = sm.add_constant(np.log(x))
    fit = sm.OLS(np.log(y), design).fit(cov_type="HC3")
    lo, hi = fit.conf_int(alpha=alpha)[1]
    return SlopeFit(
        float(fit.params[1]),
        float(fit.params[0]),
        float(fit.bse[1]),
        (float(lo), float(hi)),
        float(fit.rsquared),
        len(y),
    )
