"""Issue 14's ablation: the estimator of V (batch, split, ema) across K, and tau for split.

``python -m paper_figures.estimator_figs --records results/empirical/estimator --out
figures --readme README.md`` writes ``estimator_ablation.md`` (the table, also pasted
into the README's estimator-table block) and ``estimator_vs_k.png`` (mask mean and OOD
accuracy vs K per estimator) from the records of ``iga experiments run --suite
estimator``. The mask mean of a run is the mean of its logged ``mask_mean`` over the
second half of training; its pure-noise reference is ``exp(-tau (K - 1) / K)``. Every
cell is a mean over seeds with its 95% Student-t half-width; selection reads the
training-domain validation accuracy only.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import defaultdict
from pathlib import Path

from empirical.stats import mean_ci
from paper_figures.readme import paste_and_report
from paper_figures.style import FigureSpec, new_figure, save

ESTIMATORS = ("batch", "split", "ema")
COLORS = {"batch": "#d62728", "split": "#1f77b4", "ema": "#2ca02c"}


def late_mask_mean(record: dict) -> float:
    """Mean logged mask over the second half of training (nan if none was logged)."""
    history = record["train"]["history"]
    last = max(h["step"] for h in history)
    late = [h["mask_mean"] for h in history if h["step"] >= last / 2 and "mask_mean" in h]
    return sum(late) / len(late) if late else float("nan")


def rows(records: list[dict]) -> dict[tuple[str, float, int], dict]:
    """(estimator, tau, K) -> per-seed lists of the metrics, IGA records only."""
    out: dict[tuple[str, float, int], dict] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["job"]["method"] != "iga":
            continue
        hp = r["job"]["hparams"]
        key = (hp.get("estimator", "batch"), float(hp["tau"]), int(r["num_domains"]))
        cell = out[key]
        cell["seed"].append(r["job"]["seed"])
        cell["mask"].append(late_mask_mean(r))
        cell["ood"].append(r["test"]["accuracy_ood"])
        cell["id"].append(r["test"]["accuracy_id"])
        cell["val"].append(r["val"]["accuracy"])
        snr = [h["snr"] for h in r["train"]["history"] if "snr" in h]
        cell["snr"].append(sum(snr) / len(snr) if snr else float("nan"))
    return dict(out)


def _cell(values: list[float], pct: bool = False) -> str:
    mean, half, n = mean_ci(values)
    if n == 0:
        return "—"
    s = 100.0 if pct else 1.0
    return f"{s * mean:.1f}" if math.isnan(half) else f"{s * mean:.1f} ± {s * half:.1f}"


def _cell3(values: list[float]) -> str:
    mean, half, n = mean_ci(values)
    if n == 0 or math.isnan(mean):
        return "—"
    return f"{mean:.3f}" if math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def table(records: list[dict]) -> str:
    """Markdown: one row per (estimator, tau, K), sorted by tau, K, estimator."""
    cells = rows(records)
    order = {e: i for i, e in enumerate(ESTIMATORS)}
    lines = [
        "| estimator | tau | K | mask mean (2nd half) | pure-noise mask | OOD acc (%) "
        "| ID acc (%) | val acc (%) | SNR | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (est, tau, k), c in sorted(
        cells.items(), key=lambda kv: (kv[0][1], kv[0][2], order.get(kv[0][0], 9))
    ):
        noise = math.exp(-tau * (k - 1) / k)
        lines.append(
            f"| {est} | {tau:g} | {k} | {_cell3(c['mask'])} | {noise:.3f} "
            f"| {_cell(c['ood'], True)} | {_cell(c['id'], True)} | {_cell(c['val'], True)} "
            f"| {_cell3(c['snr'])} | {len(c['seed'])} |"
        )
    return "\n".join(lines) + "\n"


def select(records: list[dict], k: int = 4) -> tuple[tuple[str, float], float] | None:
    """The (estimator, tau) with the best mean validation accuracy at K = ``k``."""
    cells = {(e, t): c for (e, t, kk), c in rows(records).items() if kk == k}
    if not cells:
        return None
    best = max(cells, key=lambda et: sum(cells[et]["val"]) / len(cells[et]["val"]))
    return best, sum(cells[best]["val"]) / len(cells[best]["val"])


def figure(records: list[dict], tau: float = 5.0):
    """Two panels vs K: late mask mean (with the pure-noise reference) and OOD accuracy."""
    cells = {key: c for key, c in rows(records).items() if key[1] == tau}
    fig, axes = new_figure(1, 2, width=7.0, height=2.8)
    ax_mask, ax_ood = axes[0]
    ks = sorted({k for _, _, k in cells})
    if ks:
        grid = [ks[0] + i * (ks[-1] - ks[0]) / 50 for i in range(51)]
        ax_mask.plot(grid, [math.exp(-tau * (k - 1) / k) for k in grid], "k:", label="pure noise")
    for est in ESTIMATORS:
        pts = sorted((k, c) for (e, _, k), c in cells.items() if e == est)
        if not pts:
            continue
        for ax, metric, scale in ((ax_mask, "mask", 1.0), (ax_ood, "ood", 100.0)):
            stats = [mean_ci(c[metric]) for _, c in pts]
            x = [k for k, _ in pts]
            y = [scale * m for m, _, _ in stats]
            err = [0.0 if math.isnan(h) else scale * h for _, h, _ in stats]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=COLORS[est], label=est)
    ax_mask.set(
        xlabel="training domains K", ylabel="mask mean, 2nd half", title=f"mask (tau {tau:g})"
    )
    ax_ood.set(xlabel="training domains K", ylabel="OOD accuracy (%)", title="held-out domains")
    for ax in (ax_mask, ax_ood):
        ax.set_xticks(ks)
    ax_mask.legend()
    return fig


def build(records_dir: Path, out: Path) -> list[Path]:
    from empirical.runner import load_records

    records = load_records(records_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "estimator_ablation.md"
    best = select(records)
    note = (
        ""
        if best is None
        else f"\nBest mean training-domain validation accuracy at K = 4: {best[0][0]}, "
        f"tau {best[0][1]:g} ({100 * best[1]:.1f} %).\n"
    )
    md.write_text(table(records) + note)
    spec = FigureSpec(
        "estimator_vs_k",
        figure(records),
        "Mask mean over the second half of training (left; dotted: the mask pure noise "
        "gives, exp(-tau (K-1)/K)) and OOD accuracy (right) vs the number of training "
        "domains K, per estimator of V; deduction, tau 5, mean and 95% t interval over seeds.",
        sources=[str(records_dir)],
        command=f"python -m paper_figures.estimator_figs --records {records_dir} --out {out}",
    )
    return [md, *save(spec, out)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--records", type=Path, default=Path("results/empirical/estimator"), help="suite folder"
    )
    p.add_argument("--out", type=Path, default=Path("figures"), help="where the files go")
    p.add_argument(
        "--readme",
        type=Path,
        help="also paste the table into this file's estimator-table block (e.g. README.md)",
    )
    args = p.parse_args(argv)
    if args.readme is not None and not args.readme.is_file():
        print(f"error: --readme {args.readme}: no such file.", file=sys.stderr)
        return 2
    paths = build(args.records, args.out)
    for path in paths:
        print(path)
    if args.readme is not None:
        md = paths[0].read_text()
        if not paste_and_report(args.readme, md, "estimator-table", "estimator table"):
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
