"""``step_overhead``: the time of one training step relative to ERM.

Two sources, each a panel when present: the controlled benchmark (``iga bench
step --json``: methods round-robin on one small Llama, median and IQR over
rounds) and the experiment runs themselves (``train.seconds_per_step`` of every
main run divided by ERM's on the same benchmark and seed; the machine was shared,
so this panel is noisier).
"""

from __future__ import annotations

import numpy as np

from paper_figures.groups import Groups, by
from paper_figures.load import Bench, Empirical, MissingInput, need, rel
from paper_figures.style import FigureSpec, color, label, method_order, new_figure

BENCH_LABELS = {
    "erm": "ERM",
    "iga_full": "IGA, full space",
    "iga_full_rsvd": "IGA, full, randomized SVD",
    "iga_factor": "IGA, factor space",
    "naive_full": "naive K backward, full",
    "naive_factor": "naive K backward, factor",
}


def _bench_panel(ax, bench: Bench) -> None:
    results = need(bench.report, "results", where=rel(bench.path))
    erm = float(need(results, "erm", "median_s", where=rel(bench.path)))
    names = list(results)
    ratio = [float(need(results, n, "median_s", where=rel(bench.path))) / erm for n in names]
    half_iqr = [float(results[n].get("iqr_s", 0.0)) / 2 / erm for n in names]
    y = np.arange(len(names))[::-1]
    colors = [
        "#1f77b4" if n == "erm" else "#d62728" if n.startswith("iga") else "0.6" for n in names
    ]
    ax.barh(
        y, ratio, 0.6, xerr=half_iqr, color=colors, error_kw={"capsize": 2}, label="median step"
    )
    for yi, r, n in zip(y, ratio, names):
        ms = 1e3 * float(results[n]["median_s"])
        ax.text(r, yi, f"  {r:.2f}x ({ms:.0f} ms)", va="center", fontsize=7)
    ax.axvline(1.0, color="0.3", lw=0.8, ls="--", label="ERM = 1")
    ax.set_yticks(y, [BENCH_LABELS.get(n, n) for n in names])
    ax.set_xlabel("step time / ERM step time (ratio of medians)")
    ax.set_ylabel("implementation")
    cfg = bench.report.get("config", {})
    ax.set_title(
        f"iga bench step ({cfg.get('layers', '?')}-layer Llama, K = {cfg.get('domains', '?')}, "
        f"{cfg.get('threads', '?')} thread)"
    )
    ax.set_xlim(0, max(ratio) * 1.35)
    ax.legend(loc="upper right")


def _runs_panel(ax, groups: Groups) -> list:
    erm = {(r.benchmark, r.seed): r.seconds_per_step for r in groups.main if r.method == "erm"}
    ratios: dict[str, list[float]] = {}
    used = []
    for (m,), runs in by(groups.main, "method").items():
        for r in runs:
            base = erm.get((r.benchmark, r.seed))
            if base and r.seconds_per_step:
                ratios.setdefault(m, []).append(r.seconds_per_step / base)
                used.append(r)
    if not ratios:
        raise MissingInput("empirical records: no 'train.seconds_per_step' paired with ERM runs")
    methods = method_order(ratios)
    y = np.arange(len(methods))[::-1]
    med = [float(np.median(ratios[m])) for m in methods]
    q1 = [float(np.percentile(ratios[m], 25)) for m in methods]
    q3 = [float(np.percentile(ratios[m], 75)) for m in methods]
    err = np.array([np.subtract(med, q1), np.subtract(q3, med)])
    ax.barh(y, med, 0.6, xerr=err, color=[color(m) for m in methods], error_kw={"capsize": 2})
    ax.axvline(1.0, color="0.3", lw=0.8, ls="--", label="ERM = 1")
    ax.set_yticks(y, [f"{label(m)} (n = {len(ratios[m])})" for m in methods])
    ax.set_xlabel("s/step relative to ERM's (same benchmark, seed)")
    ax.set_ylabel("method")
    ax.set_title("experiment runs: median and IQR (shared machine)")
    ax.legend(loc="upper right")
    return used


def step_overhead(emp: Empirical | None, groups: Groups | None, bench: Bench | None) -> FigureSpec:
    panels = (bench is not None) + (groups is not None and bool(groups.main))
    if panels == 0:
        raise MissingInput(
            "no step-time data: pass --bench JSON (iga bench step --json) or records"
        )
    fig, axes = new_figure(1, panels, width=5.6 * panels, height=3.6)
    sources, parts, i = [], [], 0
    if bench is not None:
        _bench_panel(axes[0, i], bench)
        sources.append(rel(bench.path))
        parts.append(
            "Left: `iga bench step` (methods run round-robin; bars are the median step time "
            "over rounds relative to ERM's, whiskers half the IQR)."
        )
        i += 1
    if panels > i:
        try:
            used = _runs_panel(axes[0, i], groups)
        except MissingInput:
            if bench is None:
                raise
            axes[0, i].set_visible(False)
            used = []
        sources += emp.sources(used) if used else []
        parts.append(
            ("Right" if bench is not None else "The panel")
            + ": the experiment runs, seconds per training step relative to ERM-SFT's on the "
            "same benchmark and seed (median and IQR over runs; timings from a shared machine)."
        )
    return FigureSpec(
        "step_overhead",
        fig,
        "Step-time overhead against ERM. " + " ".join(parts),
        sources,
        "iga bench step --json results/bench/step.json && python -m paper_figures --out figures",
    )
