"""Empirical figures from the JSONL records of ``iga experiments run`` (results/empirical/).

* ``ood_by_method``: OOD accuracy per method and benchmark, mean over seeds, 95% t-interval.
* ``ood_vs_k``: OOD accuracy of ERM and IGA (defaults) against the number of training domains.
* ``lcs_by_method``: Logical Consistency Score and answer consistency per method.
* ``ablation_tau`` / ``ablation_rank``: IGA's OOD accuracy across tau and LoRA rank.
* ``ablation_variants``: mask only, projection only, raw variance, tangent, factor space.
"""

from __future__ import annotations

import numpy as np

from empirical.stats import mean_ci
from paper_figures.groups import Groups, ablation_names, by, incomplete_note
from paper_figures.load import Empirical, MissingInput, Run, rel
from paper_figures.style import (
    ERM_COLOR,
    IGA_COLOR,
    FigureSpec,
    color,
    label,
    method_order,
    new_figure,
)

ALL = "mean of benchmarks"


def _cmd(emp: Empirical) -> str:
    return (
        f"iga experiments run --suite {emp.suite} --out {rel(emp.folder)} && "
        "python -m paper_figures --out figures"
    )


def _pct(x: float) -> float:
    return 100.0 * x


def seed_means(runs: list[Run], metric: str) -> dict[int, float]:
    """Per seed, the metric averaged over the benchmarks that seed ran (for 'all' cells)."""
    vals: dict[int, list[float]] = {}
    for r in runs:
        v = getattr(r, metric)
        if v is not None:
            vals.setdefault(r.seed, []).append(float(v))
    return {s: float(np.mean(v)) for s, v in vals.items()}


def cell_stats(groups: Groups, metric: str) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(method, benchmark or ALL) -> (mean, 95% half-width, n seeds) over the main runs."""
    out = {}
    for (m, b), runs in by(groups.main, "method", "benchmark").items():
        out[(m, b)] = mean_ci([getattr(r, metric) for r in runs])
    if len(groups.benchmarks()) > 1:
        for (m,), runs in by(groups.main, "method").items():
            out[(m, ALL)] = mean_ci(list(seed_means(runs, metric).values()))
    return out


def _grouped_bars(ax, stats, methods, columns, scale=1.0) -> None:
    width = 0.8 / len(methods)
    x = np.arange(len(columns))
    for i, m in enumerate(methods):
        mean = np.array([stats.get((m, c), (np.nan,) * 3)[0] for c in columns]) * scale
        half = np.array([stats.get((m, c), (np.nan,) * 3)[1] for c in columns]) * scale
        ax.bar(
            x - 0.4 + (i + 0.5) * width,
            mean,
            width,
            yerr=np.nan_to_num(half),
            color=color(m),
            edgecolor="black" if m == "iga" else "none",
            linewidth=0.8,
            error_kw={"elinewidth": 0.7, "capsize": 1.5},
            label=label(m),
        )
    ax.set_xticks(x, columns)


def _need_main(groups: Groups, what: str) -> None:
    if not groups.main:
        raise MissingInput(f"no main-comparison runs in the empirical records (needed for {what})")


def ood_by_method(emp: Empirical, groups: Groups) -> FigureSpec:
    _need_main(groups, "ood_by_method")
    stats = cell_stats(groups, "acc_ood")
    methods = method_order(groups.methods())
    columns = groups.benchmarks() + ([ALL] if len(groups.benchmarks()) > 1 else [])
    fig, axes = new_figure(width=max(8.5, 1.9 * len(columns) + 1.5), height=3.8)
    ax = axes[0, 0]
    _grouped_bars(ax, stats, methods, columns, scale=100)
    ax.set_xlabel("benchmark (isomer family), held-out domains")
    ax.set_ylabel("OOD accuracy (%)")
    ax.set_ylim(0, 105)  # accuracy is bounded: with few seeds a t-interval is not
    ax.legend(ncols=min(6, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.16))
    seeds = sorted({r.seed for r in groups.main})
    return FigureSpec(
        "ood_by_method",
        fig,
        "Answer accuracy on held-out domains (OOD) by method and benchmark: mean over "
        f"seeds ({', '.join(map(str, seeds))}) with 95% Student-t "
        "intervals; each method at the hparams selected on training-domain validation. "
        f"'{ALL}': per seed, the mean over benchmarks, then mean and interval over seeds. "
        "Whiskers are cut at the axis (0-105%); the main table gives them in full."
        + incomplete_note(groups),
        emp.sources(groups.main),
        _cmd(emp),
    )


def lcs_by_method(emp: Empirical, groups: Groups) -> FigureSpec:
    _need_main(groups, "lcs_by_method")
    runs = [r for r in groups.main if r.lcs is not None]
    if not runs:
        raise MissingInput("empirical records: no 'test.lcs' values in the main runs")
    methods = method_order(groups.methods())
    columns = groups.benchmarks() + ([ALL] if len(groups.benchmarks()) > 1 else [])
    fig, axes = new_figure(2, 1, width=max(8.5, 1.9 * len(columns) + 1.5), height=6.2)
    a, b = axes[0, 0], axes[1, 0]
    _grouped_bars(a, cell_stats(groups, "lcs"), methods, columns)
    a.set_ylabel("LCS (squared distance; lower is better)")
    _grouped_bars(b, cell_stats(groups, "consistency"), methods, columns, scale=100)
    b.set_ylabel("answer consistency (% of sets)")
    b.set_ylim(0, 105)
    a.set_ylim(bottom=0)
    for ax in (a, b):
        ax.set_xlabel("benchmark (isomer family)")
    a.set_ylim(top=a.get_ylim()[1] * 1.3)  # room for the legend above the bars
    a.legend(ncols=min(6, len(methods)), loc="upper right", fontsize=6)
    b.legend(ncols=min(6, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return FigureSpec(
        "lcs_by_method",
        fig,
        "Top: Logical Consistency Score (for each isomer set, the mean pairwise squared "
        "distance / 2 of the student's pooled, L2-normalized hidden states across the set's "
        "isomers, averaged over sets; lower is better). Bottom: answer consistency (share of "
        "sets whose isomers all get the same answer). Mean over seeds, 95% t-intervals; "
        "test sets on training and held-out domains." + incomplete_note(groups),
        emp.sources(runs),
        _cmd(emp),
    )


def ood_vs_k(emp: Empirical, groups: Groups) -> FigureSpec:
    if not groups.k_sweep:
        raise MissingInput("empirical records: no runs at more than one K (the K sweep)")
    cells = by(groups.k_sweep, "benchmark")
    fig, axes = new_figure(1, len(cells), width=4.0 * len(cells), height=3.4)
    for ax, ((bench,), runs) in zip(axes[0], cells.items()):
        for m in method_order({r.method for r in runs}):
            per_k = by([r for r in runs if r.method == m], "K")
            ks = [k for (k,) in per_k]
            st = [mean_ci([r.acc_ood for r in rs]) for rs in per_k.values()]
            ax.errorbar(
                ks,
                [_pct(s[0]) for s in st],
                yerr=[np.nan_to_num(_pct(s[1])) for s in st],
                fmt="o-",
                color=color(m),
                capsize=2,
                label=f"{label(m)} (defaults)",
            )
        ax.set_xticks(sorted({r.K for r in runs}))
        ax.set_xlabel("number of training domains K")
        ax.set_ylabel("OOD accuracy (%)")
        ax.set_title(bench)
        ax.legend(loc="best")
    return FigureSpec(
        "ood_vs_k",
        fig,
        "OOD accuracy against the number of training domains K (the first K of the sweep's "
        "domain list; held-out domains fixed), ERM and IGA at their default hparams: mean "
        "over seeds with 95% t-intervals.",
        emp.sources(groups.k_sweep),
        _cmd(emp),
    )


def _erm_reference(ax, groups: Groups, bench: str, seeds: set[int]) -> None:
    erm = [
        r
        for r in groups.main
        if r.method == "erm" and r.benchmark == bench and (not seeds or r.seed in seeds)
    ]
    if erm:
        m, h, n = mean_ci([r.acc_ood for r in erm])
        ax.axhline(_pct(m), color=ERM_COLOR, ls="--", lw=1, label=f"ERM-SFT OOD (n = {n})")
        if not np.isnan(h):
            ax.axhspan(_pct(m - h), _pct(m + h), color=ERM_COLOR, alpha=0.12, lw=0)


def _sweep(emp: Empirical, groups: Groups, kind: str, knob: str, default_key: str, **meta):
    runs = groups.ablations.get(kind, []) + groups.ablations.get("defaults", [])
    if not groups.ablations.get(kind):
        raise MissingInput(f"empirical records: no IGA {knob} ablation runs")
    cells = by(runs, "benchmark")
    fig, axes = new_figure(1, len(cells), width=4.6 * len(cells), height=3.9)
    for ax, ((bench,), rs) in zip(axes[0], cells.items()):
        default = groups.defaults["iga"][default_key]
        per = _by_hparam(rs, default_key, default)
        xs = sorted(per)
        for metric, style, name in (("acc_ood", "o-", "OOD"), ("acc_id", "s:", "in-domain")):
            st = [mean_ci([getattr(r, metric) for r in per[x]]) for x in xs]
            ax.errorbar(
                xs,
                [_pct(s[0]) for s in st],
                yerr=[np.nan_to_num(_pct(s[1])) for s in st],
                fmt=style,
                color=IGA_COLOR,
                mfc=IGA_COLOR if name == "OOD" else "none",
                capsize=2,
                label=f"IGA {name} accuracy",
            )
        ax.axvline(default, color="0.6", lw=0.8, ls="-.", label=f"default {meta['symbol']}")
        _erm_reference(ax, groups, bench, {r.seed for r in rs})
        ax.set_xscale("log", base=meta.get("base", 10))
        ax.set_xlabel(meta["xlabel"])
        ax.set_ylabel("accuracy (%)")
        ax.set_title(bench)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2)
    return fig, runs


def _by_hparam(runs: list[Run], name: str, default) -> dict[float, list[Run]]:
    out: dict[float, list[Run]] = {}
    for r in runs:
        value = r.hp(name, default)
        if value and value > 0:  # tau = 0 is "projection only": in the variants figure
            out.setdefault(float(value), []).append(r)
    return out


def ablation_tau(emp: Empirical, groups: Groups) -> FigureSpec:
    fig, runs = _sweep(
        emp, groups, "tau", "tau", "tau", symbol="tau", xlabel="mask temperature tau (log scale)"
    )
    return FigureSpec(
        "ablation_tau",
        fig,
        "IGA's mask temperature tau (relative variance, mask exp(-tau V), all else at the "
        "defaults): OOD and in-domain accuracy, mean over seeds with 95% t-intervals; the "
        "dashed line and band are ERM-SFT's OOD accuracy on the same seeds. tau = 0 "
        "(projection only) is in ablation_variants.",
        emp.sources(runs),
        _cmd(emp),
    )


def ablation_rank(emp: Empirical, groups: Groups) -> FigureSpec:
    fig, runs = _sweep(
        emp,
        groups,
        "rank",
        "LoRA rank",
        "lora_rank",
        symbol="rank",
        base=2,
        xlabel="LoRA rank r (log2 scale; projection rank = r)",
    )
    return FigureSpec(
        "ablation_rank",
        fig,
        "IGA with LoRA rank r (the projection onto the rank-r manifold follows the adapter's "
        "rank; all else at the defaults): OOD and in-domain accuracy, mean over seeds with "
        "95% t-intervals; dashed line and band: ERM-SFT's OOD accuracy (at its selected "
        "rank) on the same seeds.",
        emp.sources(runs),
        _cmd(emp),
    )


def ablation_variants(emp: Empirical, groups: Groups) -> FigureSpec:
    # Long on purpose (over 50 lines): one figure's layout, panel by panel.
    variants = groups.ablations.get("variant", [])
    defaults = groups.ablations.get("defaults", [])
    if not variants:
        raise MissingInput("empirical records: no IGA variant ablation runs (mask/projection only)")
    runs = defaults + variants
    cells = by(runs, "benchmark")
    fig, axes = new_figure(
        1,
        len(cells),
        width=6.8 * len(cells),
        height=0.45 * max(len(ablation_names(groups, rs)) for rs in cells.values()) + 2.2,
    )
    for ax, ((bench,), rs) in zip(axes[0], cells.items()):
        names = ablation_names(groups, rs)
        y = np.arange(len(names))[::-1]
        for metric, off, fill, name in (
            ("acc_ood", 0.18, True, "OOD"),
            ("acc_id", -0.18, False, "in-domain"),
        ):
            st = [
                mean_ci([getattr(r, metric) for r in rs if groups.labels[r.key] == n])
                for n in names
            ]
            ax.barh(
                y + off,
                [_pct(s[0]) for s in st],
                0.36,
                xerr=[np.nan_to_num(_pct(s[1])) for s in st],
                color=IGA_COLOR if fill else "white",
                edgecolor=IGA_COLOR,
                error_kw={"elinewidth": 0.7, "capsize": 1.5},
                label=f"IGA {name} accuracy",
            )
        erm = [r for r in groups.main if r.method == "erm" and r.benchmark == bench]
        if erm:
            m, _, n = mean_ci([r.acc_ood for r in erm if r.seed in {x.seed for x in rs}])
            ax.axvline(_pct(m), color=ERM_COLOR, ls="--", lw=1, label="ERM-SFT OOD accuracy")
        ax.set_yticks(y, names)
        ax.set_xlabel("accuracy (%)")
        ax.set_ylabel("IGA variant")
        ax.set_title(bench)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    return FigureSpec(
        "ablation_variants",
        fig,
        "IGA's components, one change from the defaults at a time: the mask without the "
        "projection, the projection without the mask (tau = 0), the raw instead of the "
        "relative variance, the tangent-space projection, and the factor-space mask. OOD "
        "(filled) and in-domain (open) accuracy, mean over seeds with 95% t-intervals; "
        "dashed: ERM-SFT's OOD accuracy on the same seeds.",
        emp.sources(runs),
        _cmd(emp),
    )


BUILDERS = {
    "ood_by_method": ood_by_method,
    "ood_vs_k": ood_vs_k,
    "lcs_by_method": lcs_by_method,
    "ablation_tau": ablation_tau,
    "ablation_rank": ablation_rank,
    "ablation_variants": ablation_variants,
}
