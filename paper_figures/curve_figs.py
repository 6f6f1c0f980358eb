"""Learning curves of the pretrained student (issue 15), from ``scripts/learning_curve.py``.

``python -m paper_figures.curve_figs --curve results/pretrained/curves/erm-r16-lr5e-4
--out figures --readme README.md`` writes ``pretrained_curve.md`` (one row per
evaluation point, also pasted into the README's curve-table block) and
``pretrained_curve.png`` (training-domain validation accuracy per family vs steps)
from the curve's ``curve.jsonl`` and ``evals/step-N.json``. With ``--compare DIR DIR
...`` it writes ``pretrained_curve_compare.md`` (the curves side by side at the steps
all of them evaluated; README block curve-compare-table) and its figure instead.

Two references are read from the stored completions, because accuracy alone hides a
student that writes one answer whatever the problem: the **constant-answer accuracy**
(the share of the most frequent gold answer of a family in the validation split: what
always giving that answer scores) and the **top-prediction share** (the share of the
student's most frequent prediction among its completions with an answer line; 100 %
is a constant answer). Each
isomer set's domains share one answer, so a family's validation split holds only as
many independent problems as it has sets.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from paper_figures.readme import paste_and_report
from paper_figures.style import FigureSpec, new_figure, save

FAMILY_COLORS = {
    "arithmetic": "#1f77b4",
    "deduction": "#d62728",
    "ordering": "#2ca02c",
    "rules": "#9467bd",
}


def load_curve(folder: Path) -> tuple[list[dict], dict[int, dict]]:
    """(evaluation points sorted by step, step -> stored completions of that point).

    A point recorded twice (a resumed curve re-evaluating a step) keeps its first
    record, as ``scripts/learning_curve.py`` skips recorded steps; a line cut short by a
    kill is skipped.
    """
    path = folder / "curve.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (run scripts/learning_curve.py first).")
    points: dict[int, dict] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        points.setdefault(int(row["step"]), row)
    evals = {}
    for step in points:
        file = folder / "evals" / f"step-{step}.json"
        if file.is_file():
            evals[step] = json.loads(file.read_text())
    return [points[s] for s in sorted(points)], evals


def _shares(examples: list[dict], key: str) -> dict[str, tuple[float, int]]:
    """family -> (share of the most frequent ``key`` value, number of distinct sets), over
    the examples whose ``key`` is not None."""
    by_family: dict[str, Counter] = {}
    sets: dict[str, set] = {}
    for e in examples:
        if e[key] is None:  # no answer line: neither a constant nor any answer
            continue
        by_family.setdefault(e["family"], Counter())[e[key]] += 1
        sets.setdefault(e["family"], set()).add(e["set_id"])
    return {
        f: (c.most_common(1)[0][1] / sum(c.values()), len(sets[f])) for f, c in by_family.items()
    }


def constant_answer(evals: dict[int, dict]) -> dict[str, tuple[float, int]]:
    """family -> (constant-answer accuracy on the training-domain split, sets), read from
    any stored point: the split is fixed, so every point must agree (else ValueError)."""
    found = {step: _shares(ev["id"], "answer") for step, ev in evals.items()}
    distinct = {json.dumps(v, sort_keys=True) for v in found.values()}
    if len(distinct) > 1:
        raise ValueError(
            f"the curve's evaluation points disagree on their validation split: {found}"
        )
    return next(iter(found.values()), {})


def table(points: list[dict], evals: dict[int, dict]) -> str:
    """Markdown: one row per point, the constant-answer row last."""
    families = sorted({f for p in points for f in p["id"]})
    yes_no = [f for f in families if f in ("deduction", "rules")]
    head = ["step", "train loss", *(f"ID {f}" for f in families), "ID mean", "held-out mean"]
    head += [f"top-prediction share {f}" for f in yes_no]
    head += ["s/step", "eval s", "load 1m"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def pct(v) -> str:
        return "—" if v is None else f"{100 * v:.1f}"

    for p in points:
        loss = p.get("train_loss")
        loss_cell = "—" if loss is None else f"{loss:.3f} (step {p['train_loss_step']})"
        top = _shares(evals[p["step"]]["id"], "prediction") if p["step"] in evals else {}
        cells = [str(p["step"]), loss_cell, *(pct(p["id"].get(f)) for f in families)]
        cells += [pct(p["accuracy_id"]), pct(p["accuracy_ood"])]
        cells += [pct(top[f][0]) if f in top else "—" for f in yes_no]
        cells += [f"{p['seconds_per_step']:.0f}", f"{p['eval_seconds']:.0f}"]
        cells.append(f"{p['loadavg_1m']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    const = constant_answer(evals)
    if const:
        cells = ["constant answer", "—"]
        cells += [pct(const[f][0]) if f in const else "—" for f in families]
        cells += ["—"] * (len(head) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    n_sets = sorted({n for _, n in const.values()})
    note = (
        f"\nValidation: {points[-1]['n_val']} training-domain prompts "
        f"({', '.join(map(str, n_sets))} sets per family; a set's domains share one answer) "
        f"and {points[-1]['n_heldout']} held-out prompts; accuracies in %.\n"
        if points
        else ""
    )
    return "\n".join(lines) + "\n" + note


def figure(points: list[dict], evals: dict[int, dict]):
    """Training-domain validation accuracy per family vs steps; dotted: constant answer."""
    fig, axes = new_figure(1, 1, width=4.5, height=2.8)
    ax = axes[0][0]
    const = constant_answer(evals)
    families = sorted({f for p in points for f in p["id"]})
    steps = [p["step"] for p in points]
    for f in families:
        color = FAMILY_COLORS.get(f, "#7f7f7f")
        ys = [100 * p["id"][f] if p["id"].get(f) is not None else None for p in points]
        ax.plot(steps, ys, marker="o", color=color, label=f)
        if f in const and steps:
            ax.plot([steps[0], steps[-1]], [100 * const[f][0]] * 2, ":", color=color)
    ax.set(xlabel="optimizer steps", ylabel="ID validation accuracy (%)", ylim=(0, 110))
    ax.set_title("dotted: accuracy of a constant answer")
    ax.legend(ncol=4, loc="upper center")
    return fig


def compare_table(curves: dict[str, list[dict]]) -> str:
    """Markdown: several curves at the steps all of them have evaluated, one row per
    step, each family's and the mean's in-domain accuracy per curve, then held-out."""
    names = list(curves)
    by_step = {n: {p["step"]: p for p in points} for n, points in curves.items()}
    steps = sorted(set.intersection(*(set(v) for v in by_step.values())))
    families = sorted({f for points in curves.values() for p in points for f in p["id"]})
    head = ["step", *(f"ID {f}" for f in families), "ID mean", "held-out mean"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(row, get) -> str:
        return " / ".join("—" if get(p) is None else f"{100 * get(p):.1f}" for p in row)

    for step in steps:
        row = [by_step[n][step] for n in names]
        cells = [str(step), *(cell(row, lambda p, f=f: p["id"].get(f)) for f in families)]
        cells += [cell(row, lambda p: p["accuracy_id"]), cell(row, lambda p: p["accuracy_ood"])]
        lines.append("| " + " | ".join(cells) + " |")
    note = f"\nEach cell: {' / '.join(names)}; steps evaluated by every curve; accuracies in %.\n"
    return "\n".join(lines) + "\n" + note


def compare_figure(curves: dict[str, list[dict]]):
    """In-domain (solid) and held-out (dashed) validation accuracy of several curves."""
    fig, axes = new_figure(1, 1, width=4.5, height=2.8)
    ax = axes[0][0]
    for i, (name, points) in enumerate(curves.items()):
        color = f"C{i}"
        steps = [p["step"] for p in points]
        ax.plot(steps, [100 * p["accuracy_id"] for p in points], "-o", color=color, label=name)
        ood = [100 * p["accuracy_ood"] for p in points]
        ax.plot(steps, ood, "--", color=color, label=f"{name} held-out")
    ax.set(xlabel="optimizer steps", ylabel="validation accuracy (%)", ylim=(0, 105))
    ax.legend(ncol=1, loc="lower right")
    return fig


def build_compare(folders: list[Path], out: Path) -> list[Path]:
    curves = {f.name: load_curve(f)[0] for f in folders}
    if len(curves) < 2:
        raise ValueError("--compare: give two or more distinct curve folders.")
    out.mkdir(parents=True, exist_ok=True)
    md = out / "pretrained_curve_compare.md"
    md.write_text(compare_table(curves))
    spec = FigureSpec(
        "pretrained_curve_compare",
        compare_figure(curves),
        "Training-domain (solid) and held-out (dashed) validation accuracy vs optimizer "
        f"steps of the curves {', '.join(curves)} (greedy decoding, all families).",
        sources=[str(f / "curve.jsonl") for f in folders],
        command=f"python -m paper_figures.curve_figs --compare {' '.join(map(str, folders))} "
        f"--out {out}",
    )
    return [md, *save(spec, out)]


def build(folder: Path, out: Path) -> list[Path]:
    points, evals = load_curve(folder)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "pretrained_curve.md"
    md.write_text(table(points, evals))
    command = f"python -m paper_figures.curve_figs --curve {folder} --out {out}"
    spec = FigureSpec(
        "pretrained_curve",
        figure(points, evals),
        f"Training-domain validation accuracy per family vs optimizer steps of the curve "
        f"{folder.name} (greedy decoding; dotted: the accuracy of always giving a family's "
        "most frequent answer).",
        sources=[str(folder / "curve.jsonl"), str(folder / "evals")],
        command=command,
    )
    return [md, *save(spec, out)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--curve",
        type=Path,
        default=Path("results/pretrained/curves/erm-r16-lr5e-4"),
        help="curve folder written by scripts/learning_curve.py",
    )
    p.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        help="instead: compare these curve folders (table and figure pretrained_curve_compare)",
    )
    p.add_argument("--out", type=Path, default=Path("figures"), help="where the files go")
    p.add_argument(
        "--readme",
        type=Path,
        help="also paste the table into this file's curve-table block (e.g. README.md)",
    )
    args = p.parse_args(argv)
    if args.readme is not None and not args.readme.is_file():
        print(f"error: --readme {args.readme}: no such file.", file=sys.stderr)
        return 2
    try:
        paths = (
            build_compare(args.compare, args.out) if args.compare else build(args.curve, args.out)
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    block = "curve-compare-table" if args.compare else "curve-table"
    if args.readme is not None:
        if not paste_and_report(args.readme, paths[0].read_text(), block, block.replace("-", " ")):
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
