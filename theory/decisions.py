"""The decision rules of the checks (THEOREMS.md 4.1), each a pure function of outcomes.

* ``coverage_decision``: Theorem 1 claims coverage ``>= 1 - delta``; the data refute it
  only when the *upper* Clopper-Pearson limit lies below ``1 - delta``. (Asking the
  lower limit to clear ``1 - delta`` would fail a bound with exactly ``1 - delta``
  coverage almost always.)
* ``relative_gap``: "IGA is tighter than ERM" needs an effect of stated size: the
  relative gap ``g = 1 - mean(b) / mean(a)`` (``a`` ERM, ``b`` IGA, paired) with a
  Fieller interval (Fieller 1954), and ``g > min_effect`` at level ``alpha``.
* ``predicted_outcome``: a regime row's prediction counts as confirmed only when a
  test in the predicted direction is significant.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import t as student_t

from theory.stats import clopper_pearson, paired_test


@dataclass(frozen=True)
class Coverage:
    covered: int
    n: int
    ci: tuple[float, float]
    passed: bool  # False only when the upper limit is below 1 - delta


def coverage_decision(holds, delta: float, alpha: float) -> Coverage:
    """``holds`` (bools, one per replication): was the bound true in that draw?"""
    holds = np.asarray(holds, dtype=bool)
    k, n = int(holds.sum()), len(holds)
    lo, hi = clopper_pearson(k, n, alpha)
    return Coverage(k, n, (lo, hi), bool(hi >= 1 - delta))


@dataclass(frozen=True)
class RelativeGap:
    """``g = 1 - mean(b) / mean(a)``, its one-sided-``alpha`` limits and the decision."""

    estimate: float
    ci: tuple[float, float]  # two-sided 1 - 2 alpha Fieller interval (each side at alpha)
    p_value: float  # one-sided: H0 g <= min_effect against H1 g > min_effect
    min_effect: float
    passed: bool  # lower limit > min_effect

    def to_dict(self) -> dict:
        return asdict(self)


def fieller_ratio(a, b, alpha: float) -> tuple[float, float]:
    """Interval of ``rho = mean(b) / mean(a)`` for paired samples (Fieller's theorem).

    ``rho`` is in the interval iff the t-statistic of ``b - rho a`` is at most the
    one-sided ``alpha`` quantile in size: a quadratic inequality in ``rho``. When
    ``mean(a)`` is not significantly non-zero the set is unbounded: ``(-inf, inf)``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    q = student_t.ppf(1 - alpha, n - 1) ** 2 / n
    ma, mb = a.mean(), b.mean()
    saa, sbb = a.var(ddof=1), b.var(ddof=1)
    sab = float(np.cov(a, b, ddof=1)[0, 1])
    qa, qb, qc = ma**2 - q * saa, ma * mb - q * sab, mb**2 - q * sbb
    disc = qb**2 - qa * qc
    if qa <= 0 or disc < 0:
        return (-math.inf, math.inf)
    root = math.sqrt(disc)
    return ((qb - root) / qa, (qb + root) / qa)


def relative_gap(a, b, alpha: float, min_effect: float) -> RelativeGap:
    """Decide "``b`` is below ``a`` by more than ``min_effect`` of ``a``" (paired samples).

    The one-sided test of ``mean((1 - m) a - b) > 0`` (``m = min_effect``) is the same
    decision as "lower Fieller limit of ``g`` above ``m``"; both are reported.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))) or a.mean() == 0:
        return RelativeGap(math.nan, (math.nan, math.nan), 1.0, min_effect, False)
    estimate = 1 - b.mean() / a.mean()
    rho_lo, rho_hi = fieller_ratio(a, b, alpha)
    if a.mean() < 0:
        rho_lo, rho_hi = rho_hi, rho_lo
    ci = (1 - rho_hi, 1 - rho_lo)
    p = paired_test((1 - min_effect) * a, b, alpha).p_value
    return RelativeGap(float(estimate), ci, float(p), min_effect, bool(ci[0] > min_effect))


def predicted_outcome(kind: str, erm, iga, alpha: float, min_effect: float) -> tuple[str, str]:
    """``(outcome, evidence)`` of a prediction about paired ERM / IGA outcomes (lower = better).

    ``kind``: ``"iga_better"`` (IGA's gain exceeds ``min_effect``), ``"no_gain"`` (the gain
    is below ``min_effect``: the upper Fieller limit is below it), ``"erm_better"`` (IGA
    significantly worse). Confirmed only on a significant test in that direction;
    contradicted on one in the opposite direction; otherwise not confirmed.
    """
    gap = relative_gap(erm, iga, alpha, min_effect)
    worse = paired_test(iga, erm, alpha).p_value  # H1: IGA's mean is above ERM's
    better = paired_test(erm, iga, alpha).p_value  # H1: IGA's mean is below ERM's
    evidence = (
        f"gap {gap.estimate:+.3g} [{gap.ci[0]:+.3g}, {gap.ci[1]:+.3g}], "
        f"p(IGA better) {better:.2g}, p(IGA worse) {worse:.2g}"
    )
    if kind == "iga_better":
        outcome = "confirmed" if gap.passed else ("contradicted" if worse < alpha else "")
    elif kind == "no_gain":
        outcome = "confirmed" if gap.ci[1] < min_effect else ("contradicted" if gap.passed else "")
    elif kind == "erm_better":
        outcome = "confirmed" if worse < alpha else ("contradicted" if better < alpha else "")
    else:
        raise ValueError(f"unknown prediction kind {kind!r}.")
    return outcome or "not confirmed", evidence


def coverage_outcome(cov: Coverage, delta: float) -> str:
    """Prediction "the bound fails" (coverage below 1 - delta): confirmed iff the upper
    limit is below it, contradicted iff the lower limit clears it."""
    if cov.ci[1] < 1 - delta:
        return "confirmed"
    return "contradicted" if cov.ci[0] >= 1 - delta else "not confirmed"
