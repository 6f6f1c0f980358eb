"""Theory figures from ``results/theory/figures.json`` (written by ``iga theory --full --out``).

* ``theory_k_scaling``: Theorem 1's bound and the true OOD risk against K, and the
  bound's K-term Dev_K and the OOD excess risk with the log-log OLS fits the check made.
* ``theory_convergence``: Theorems 2-3, the average squared gradient norm against the
  horizon T with the explicit bound and the O(1/sqrt(T)) reference.
* ``theory_mask``: the mask on invariant vs spurious coordinates over training.
"""

from __future__ import annotations

import numpy as np
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

from paper_figures.load import MissingInput, Theory, need, rel
from paper_figures.style import ERM_COLOR, IGA_COLOR, FigureSpec, new_figure

THEORY_CMD = "iga theory --full --out results/theory"
_PROBLEM_LABELS = {
    "regression": "linear regression",
    "classification": "linear classification",
    "lora": "LoRA matrix problem",
    "linear": "linear problem (Theorem 2)",
}


def _title(check: str) -> str:
    inner = check[check.index("[") + 1 : -1] if "[" in check else check
    problem, _, rest = inner.partition(",")
    return _PROBLEM_LABELS.get(problem, problem) + (f" ({rest})" if rest else "")


def _caption_cmd() -> str:
    return f"{THEORY_CMD} && python -m paper_figures --out figures"


def _k_rows(data: dict, where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    per_k = need(data, "per_K", where=where)
    ks = sorted(per_k, key=float)
    cols = ("bound_erm", "bound_iga", "ood_erm", "ood_iga", "deviation_erm", "deviation_iga")
    cols += ("ood_excess_erm", "ood_excess_iga")
    values = {c: np.array([float(need(per_k, k, c, where=where)) for k in ks]) for c in cols}
    return np.array([float(k) for k in ks]), values


def _log_k_axis(ax, ks) -> None:
    """Log x axis with a plain tick at each K of the grid (no 2x10^0 labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ks))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_locator(NullLocator())


def _fit_line(ax, ks, fit: dict, color, style: str, what: str, method: str) -> None:
    slope, intercept = fit["slope"], fit["intercept"]
    lo, hi = fit.get("ci", [np.nan, np.nan])
    grid = np.geomspace(ks.min(), ks.max(), 50)
    ax.plot(
        grid,
        np.exp(intercept) * grid**slope,
        style,
        color=color,
        lw=1.0,
        label=f"{method} {what} fit: slope {slope:.2f} [{lo:.2f}, {hi:.2f}]",
    )


def k_scaling(theory: Theory) -> FigureSpec:
    """Top row: bound and true OOD risk; bottom row: Dev_K and OOD excess with fits."""
    checks = [n for n in theory.names("k_scaling[") if "," not in n]
    if not checks:
        raise _missing(theory, "k_scaling[...]")
    fig, axes = new_figure(2, len(checks), width=4.2 * len(checks), height=6.6)
    for j, name in enumerate(checks):
        where = f"{rel(theory.figures_path)}:{name}"
        data = theory.check(name)
        ks, v = _k_rows(data, where)
        fits = need(data, "fits", where=where)
        top, bottom = axes[0, j], axes[1, j]
        for m, c, lab in (("erm", ERM_COLOR, "ERM"), ("iga", IGA_COLOR, "IGA")):
            top.plot(ks, v[f"bound_{m}"], "o-", color=c, label=f"{lab} bound (Theorem 1)")
            top.plot(ks, v[f"ood_{m}"], "s--", color=c, mfc="none", label=f"{lab} true OOD risk")
            bottom.plot(ks, v[f"deviation_{m}"], "o", color=c, label=f"{lab} Dev_K (mean)")
            bottom.plot(
                ks, v[f"ood_excess_{m}"], "s", color=c, mfc="none", label=f"{lab} OOD excess"
            )
            _fit_line(bottom, ks, need(fits, f"dev_{m}", where=where), c, "-", "Dev_K", lab)
            _fit_line(bottom, ks, need(fits, f"excess_{m}", where=where), c, ":", "excess", lab)
        ref = v["deviation_erm"][0] * (ks / ks[0]) ** -0.5
        bottom.plot(ks, ref, color="0.5", lw=0.8, ls="-.", label="K^-1/2 reference")
        for ax in (top, bottom):
            _log_k_axis(ax, ks)
            ax.set_yscale("log")
            ax.set_xlabel("number of training domains K (log scale)")
        top.set_ylabel("risk (squared loss)")
        bottom.set_ylabel("Dev_K / OOD excess risk (squared loss)")
        top.set_title(f"{_title(name)}: bound and OOD risk")
        bottom.set_title(f"{_title(name)}: log-log OLS fits")
        top.legend(loc="upper right", fontsize=6)
        bottom.legend(loc="lower left", fontsize=5.5)
    return FigureSpec(
        "theory_k_scaling",
        fig,
        "Theorem 1 against the number of training domains K (log-log). Top: the bound "
        "and the true OOD risk of ERM and IGA (mean over replications). Bottom: the "
        "bound's K-dependent term Dev_K and the OOD excess risk, with the OLS fits of "
        "log y on log K (HC3, 95% CI of the slope in the legend) computed by the check "
        "on every replication; the theorem predicts slopes <= -1/2.",
        theory.sources(),
        _caption_cmd(),
    )


def _missing(theory: Theory, what: str) -> MissingInput:
    return MissingInput(f"{rel(theory.figures_path)}: no entry {what}")


_RATE_Y = {  # check -> (average column, bound column, y label)
    "rate[linear]": ("avg_grad_sq", "bound_grad_sq", "(1/T) sum_t ||grad F(w_t)||^2"),
    "rate[lora]": ("avg_grad_sq", "bound_directional", "(1/T) sum_t ||grad_(A,B) f||^2"),
}


def convergence(theory: Theory) -> FigureSpec:
    """Per problem: the average over T steps against T (top) and one run's curve (bottom)."""
    # Long on purpose (over 50 lines): one figure's layout, panel by panel.
    checks = [n for n in theory.names("rate[") if n in _RATE_Y]
    if not checks:
        raise _missing(theory, "rate[linear] or rate[lora]")
    fig, axes = new_figure(2, len(checks), width=4.2 * len(checks), height=6.4)
    for j, name in enumerate(checks):
        where = f"{rel(theory.figures_path)}:{name}"
        data = theory.check(name)
        avg_col, bound_col, ylab = _RATE_Y[name]
        rows = need(data, "per_T", where=where)
        T = np.array([float(need(r, "T", where=where)) for r in rows])
        avg = np.array([float(need(r, avg_col, where=where)) for r in rows])
        bound = np.array([float(need(r, bound_col, where=where)) for r in rows])
        fit = need(data, "fit", where=where)
        top = axes[0, j]
        top.plot(T, avg, "o", color=IGA_COLOR, label="IGA-SGD, eta = c/sqrt(T) (mean)")
        lo, hi = fit.get("ci", [np.nan, np.nan])
        top.plot(
            T,
            np.exp(fit["intercept"]) * T ** fit["slope"],
            "-",
            color=IGA_COLOR,
            lw=1.0,
            label=f"OLS fit: slope {fit['slope']:.3f} [{lo:.3f}, {hi:.3f}]",
        )
        top.plot(T, bound, "^--", color="0.3", label=f"explicit bound ({bound_col})")
        top.plot(T, avg[0] * np.sqrt(T[0] / T), ":", color="0.5", label="O(1/sqrt(T)) reference")
        top.set_xlabel("horizon T (SGD steps)")
        top.set_ylabel(ylab)
        top.set_title(f"{_title(name)}: average over T steps")
        curve = np.array(need(data, "curve_largest_T", where=where), dtype=float)  # (n, 2)
        bottom = axes[1, j]
        t = curve[:, 0] + 1  # step 0 on a log axis
        bottom.plot(
            t, curve[:, 1], "-", color=IGA_COLOR, label=f"||grad||^2 at step t, T = {T[-1]:g}"
        )
        # one run uses eta = c/sqrt(T) throughout, so its curve flattens at the noise floor;
        # the reference shows the rate the average must beat.
        bottom.plot(t, curve[0, 1] / np.sqrt(t), ":", color="0.5", label="O(1/sqrt(t)) reference")
        bottom.set_xlabel("step t (SGD steps, log scale)")
        bottom.set_ylabel("squared gradient norm (mean over replications)")
        bottom.set_title(f"{_title(name)}: the longest run")
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_yscale("log")
        _log_k_axis(top, T)
        top.legend(loc="lower left", fontsize=6)
        bottom.legend(loc="lower left", fontsize=6)
    return FigureSpec(
        "theory_convergence",
        fig,
        "Convergence at the SGD rate (Theorems 2 and 3), log-log. Top: the average squared "
        "gradient norm over a run of T steps with step size c/sqrt(T), against T, with the "
        "OLS fit of its slope (95% CI), the theorem's explicit bound and an O(1/sqrt(T)) "
        "reference line. Bottom: the squared gradient norm along the longest run.",
        theory.sources(),
        _caption_cmd(),
    )


def _mask_panels(theory: Theory, names: list[str], fig_name: str, caption: str) -> FigureSpec:
    ncols = min(3, len(names))
    nrows = -(-len(names) // ncols)
    fig, axes = new_figure(nrows, ncols, width=3.6 * ncols, height=2.9 * nrows)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        where = f"{rel(theory.figures_path)}:{name}"
        data = theory.check(name)
        inv = np.array(need(data, "mask_invariant", where=where), dtype=float)  # (n, 2)
        spu = np.array(need(data, "mask_spurious", where=where), dtype=float)
        ax.plot(inv[:, 0], inv[:, 1], "-", color="tab:blue", label="invariant coordinates")
        ax.plot(spu[:, 0], spu[:, 1], "-", color=IGA_COLOR, label="spurious coordinates")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training step")
        ax.set_ylabel("mask value M = exp(-tau V) (mean)")
        ax.set_title(_title(name))
        ax.legend(loc="best")
    return FigureSpec(fig_name, fig, caption, theory.sources(), _caption_cmd())


def mask(theory: Theory) -> FigureSpec:
    names = [n for n in theory.names("tightness[") if "," not in n]
    if not names:
        raise _missing(theory, "tightness[...]")
    return _mask_panels(
        theory,
        names,
        "theory_mask",
        "The conflict mask over training on the synthetic problems of Theorem 1: mean mask "
        "value on the invariant coordinates and on the spurious ones (mean over replications; "
        "mask 1 keeps a coordinate's gradient, 0 removes it). IGA as in the OOD checks "
        "(relative variance, tau = 5).",
    )


def mask_regimes(theory: Theory) -> FigureSpec:
    names = [n for n in theory.names("tightness[") if "," in n]
    if not names:
        raise _missing(theory, "tightness[...,...] (regime rows, written by --full)")
    return _mask_panels(
        theory,
        names,
        "theory_mask_regimes",
        "The conflict mask in the regime rows of THEOREMS.md section 5 (settings where the "
        "theorems predict the claim fails or barely holds): mean mask value on invariant "
        "vs spurious coordinates over training.",
    )


def transient(theory: Theory) -> FigureSpec:
    name = "transient[regression]"
    where = f"{rel(theory.figures_path)}:{name}"
    rows = need(theory.check(name), "per_T", where=where)
    T = np.array([float(need(r, "T", where=where)) for r in rows])
    gap = np.array([float(need(r, "ood_gap", where=where)) for r in rows])
    se = np.array([float(r.get("ood_gap_se", 0.0)) for r in rows])
    fig, axes = new_figure(1, 2, width=8.0, height=3.2)
    a, b = axes[0]
    a.errorbar(T, gap, yerr=1.96 * se, fmt="o-", color=IGA_COLOR, capsize=2, label="ERM - IGA")
    a.axhline(0, color="0.4", lw=0.8, label="no advantage")
    a.set_xscale("log")
    a.set_xlabel("training steps T (full-batch GD)")
    a.set_ylabel("OOD risk gap, ERM - IGA (squared loss)")
    a.set_title("IGA's OOD advantage (95% CI)")
    a.legend(loc="best")
    for m, c, lab in (("erm", ERM_COLOR, "ERM"), ("iga", IGA_COLOR, "IGA")):
        vals = [float(need(r, f"spu_norm_{m}", where=where)) for r in rows]
        b.plot(T, vals, "o-", color=c, label=lab)
    b.set_xscale("log")
    b.set_xlabel("training steps T (full-batch GD)")
    b.set_ylabel("spurious-weight norm ||w_spu||")
    b.set_title("weight on spurious features")
    b.legend(loc="best")
    return FigureSpec(
        "theory_transient",
        fig,
        "Proposition 1.3: with the relative mask, M >= exp(-tau) > 0, so on a convex problem "
        "IGA converges to ERM's minimizer and its OOD advantage decays with training time. "
        "Left: the mean OOD risk gap ERM - IGA with a 95% normal interval; right: the norm "
        "of the spurious weights.",
        theory.sources(),
        _caption_cmd(),
    )


BUILDERS = {
    "theory_k_scaling": k_scaling,
    "theory_convergence": convergence,
    "theory_mask": mask,
    "theory_mask_regimes": mask_regimes,
    "theory_transient": transient,
}
