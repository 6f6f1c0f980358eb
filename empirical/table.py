"""Records -> tables: the main comparison, IGA-vs-baseline tests and the ablations.

Everything is recomputed from the committed JSONL records and the suite definition
saved beside them (``suite.json``): the hyperparameter selection (training-domain
validation only), the cells (mean ± 95% interval over seeds), the paired tests.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from empirical.jobs import ALL_FAMILIES, families_of
from empirical.runner import load_records
from empirical.stats import Comparison, holm, mean_ci, paired
from empirical.suites import Suite, select

METRICS = {
    "ood": ("OOD accuracy (held-out domains, %)", lambda r: 100 * r["test"]["accuracy_ood"]),
    "id": ("In-domain accuracy (%)", lambda r: 100 * r["test"]["accuracy_id"]),
    "lcs": ("Logical Consistency Score (lower is better)", lambda r: r["test"]["lcs"]),
    "consistency": ("Answer consistency (%)", lambda r: 100 * r["test"]["answer_consistency"]),
    "sec_per_step": ("Seconds per training step", lambda r: r["train"]["seconds_per_step"]),
}
TESTED = ("ood", "id", "lcs")  # metrics with paired IGA-vs-baseline tests


def table_benchmarks(suite: Suite) -> list[str]:
    """The table's benchmark columns: the suite's, with "all" (one run over every family)
    expanded into its families."""
    return [f for b in suite.benchmarks for f in families_of(b)]


def family_view(record: dict, family: str) -> dict:
    """``record`` as if it were a run on ``family`` alone: its test metrics replaced by
    that family's (``EvalResult.per_family``); training and validation unchanged."""
    try:
        fam = record["test"]["per_family"][family]
        metrics = {
            "accuracy_id": fam["id"],
            "accuracy_ood": fam["ood"],
            "lcs": fam["lcs"],
            "answer_consistency": fam["answer_consistency"],
        }
    except KeyError as err:
        raise TableInputError(
            f"record {record.get('key')} has no per-family {err} for {family!r}: it was made "
            "before per-family scoring; rerun it."
        ) from err
    return {**record, "test": {**record["test"], **metrics}}


def main_cells(records: list[dict], suite: Suite) -> dict[tuple[str, str], dict[int, dict]]:
    """(method, benchmark) -> {seed: record} for the selected hyperparameters; a run over
    every family fills one cell per family (``family_view``).

    A cell appears only once its whole search has finished (``select(complete=True)``)."""
    by_key = {r["key"]: r for r in records}
    cells: dict[tuple[str, str], dict[int, dict]] = {}
    for b in suite.benchmarks:
        for m in suite.methods:
            hp = select(records, suite, m, b, complete=True)
            if hp is None:
                continue
            runs = {s: by_key.get(suite.job(m, b, s, hp).key()) for s in suite.seeds}
            done = {s: r for s, r in runs.items() if r is not None}
            if b == ALL_FAMILIES:
                for f in families_of(b):
                    cells[(m, f)] = {s: family_view(r, f) for s, r in done.items()}
            else:
                cells[(m, b)] = done
    return cells


def _main_rows(cells: dict, suite: Suite) -> dict[str, dict]:
    """metric -> method -> benchmark -> {mean, ci, n}, plus each row's mean over benchmarks."""
    main: dict[str, dict] = {}
    for name, (_, get) in METRICS.items():
        rows = {}
        for m in suite.methods:
            row = {}
            for b in table_benchmarks(suite):
                values = [get(r) for r in cells.get((m, b), {}).values()]
                mean, half, _ = mean_ci(values)
                row[b] = {"mean": mean, "ci": half, "n": len(values)}
            means = [row[b]["mean"] for b in table_benchmarks(suite)]
            complete = bool(means) and all(not math.isnan(x) for x in means)
            row["mean"] = {"mean": sum(means) / len(means) if complete else math.nan}
            rows[m] = row
        main[name] = rows
    return main


def _comparisons(cells: dict, suite: Suite, alpha: float) -> dict[str, list[Comparison]]:
    """Per tested metric: IGA vs every baseline on every benchmark, Holm over the family."""
    comparisons: dict[str, list[Comparison]] = {}
    if "iga" not in suite.methods:
        return comparisons
    for name in TESTED:
        get = METRICS[name][1]
        family = []
        for b in table_benchmarks(suite):
            iga = {s: get(r) for s, r in cells.get(("iga", b), {}).items()}
            for m in suite.methods:
                if m != "iga" and (m, b) in cells:
                    base = {s: get(r) for s, r in cells[(m, b)].items()}
                    family.append(paired(iga, base, name, b, m))
        comparisons[name] = holm(family, alpha)
    return comparisons


def _ablations(records: list[dict], suite: Suite) -> list[dict]:
    """One row per ablation setting: its finished runs' mean ± CI of four metrics."""
    by_key = {r["key"]: r for r in records}
    grouped = defaultdict(list)
    for a, job in suite.ablation_jobs():
        grouped[a.name].append(by_key.get(job.key()))
    rows = []
    for name, runs in grouped.items():
        done = [r for r in runs if r is not None]
        stats = {
            m: dict(zip(("mean", "ci"), mean_ci([METRICS[m][1](r) for r in done])[:2]))
            for m in ("id", "ood", "lcs", "sec_per_step")
        }
        rows.append({"name": name, "n": len(done), **stats})
    return rows


class TableInputError(ValueError):
    """The records folder cannot give a table; the message names the file."""


def load_suite(records_dir: Path) -> Suite:
    """``records_dir/suite.json``; a missing or corrupt file is a ``TableInputError``."""
    path = Path(records_dir) / "suite.json"
    if not path.is_file():
        raise TableInputError(
            f"{path} not found; point --records at a folder written by 'iga experiments run'."
        )
    try:
        return Suite.load(records_dir)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise TableInputError(
            f"{path} is corrupt ({type(err).__name__}: {err}); restore it, or rerun "
            "'iga experiments run' with the same suite to rewrite it."
        ) from err


def build(records_dir: Path, alpha: float = 0.05) -> dict:
    """Everything the tables show, recomputed from ``records_dir`` (records + suite.json).

    Corrupt records are left out and listed in ``result["skipped"]`` (the table says
    so); a missing or corrupt ``suite.json`` is a ``TableInputError`` naming it.
    """
    records_dir = Path(records_dir)
    suite = load_suite(records_dir)
    skipped: list[str] = []
    records = load_records(records_dir, skipped)
    cells = main_cells(records, suite)
    comparisons = _comparisons(cells, suite, alpha)
    expected = len(suite.methods) * len(table_benchmarks(suite)) * len(suite.seeds)
    present = sum(len(v) for v in cells.values())
    return {
        "suite": suite.name,
        "scale": suite.to_dict()["scale"],
        "coverage": {"main_runs": present, "main_expected": expected, "records": len(records)},
        "selected_hparams": {
            f"{m}/{b}": select(records, suite, m, b)
            for m in suite.methods
            for b in suite.benchmarks
        },
        "main": _main_rows(cells, suite),
        "comparisons": {k: [c.to_dict() for c in v] for k, v in comparisons.items()},
        "ablations": _ablations(records, suite),
        "benchmarks": table_benchmarks(suite),
        "methods": list(suite.methods),
        "alpha": alpha,
        "skipped": skipped,
    }


def _fmt(cell: dict, digits: int) -> str:
    if cell.get("n", 1) == 0 or math.isnan(cell["mean"]):
        return "–"
    text = f"{cell['mean']:.{digits}f}"
    if "ci" in cell and not math.isnan(cell["ci"]):
        text += f" ± {cell['ci']:.{digits}f}"
    return text


def _digits(metric: str) -> int:
    return 4 if metric == "lcs" else (2 if metric == "sec_per_step" else 1)


def _comparison_lines(metric: str, comps: list[dict], alpha: float) -> list[str]:
    """The markdown section of one metric's IGA-vs-baseline tests."""
    unit = "" if metric == "lcs" else " (pp)"
    tested = [c for c in comps if c["verdict"] != "untested"]
    untested = sorted(
        f"{c['baseline']} on {c['benchmark']}" for c in comps if c["verdict"] == "untested"
    )
    lines = [
        f"### IGA vs each baseline: {METRICS[metric][0]}",
        "",
        f"Diff{unit} > 0 favours IGA{' (baseline − IGA)' if metric == 'lcs' else ''}; "
        f"paired t-test over seeds, Holm over the {len(tested)} comparisons with 2+ "
        f"paired seeds, alpha = {alpha}.",
        "",
        "| benchmark | baseline | n | diff ± 95% CI | Cohen's d_z | p | p (Holm) | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    d = _digits(metric)
    for c in tested:
        lines.append(
            f"| {c['benchmark']} | {c['baseline']} | {c['n']} | "
            f"{_fmt({'mean': c['diff'], 'ci': c['ci']}, d)} | {c['cohen_dz']:.2f} | "
            f"{c['p']:.3g} | {c['p_holm']:.3g} | {c['verdict']} |"
        )
    tally = {v: sum(c["verdict"] == v for c in comps) for v in ("win", "tie", "loss")}
    lines += ["", f"IGA: {tally['win']} wins, {tally['tie']} ties, {tally['loss']} losses."]
    if untested:
        lines += [
            f"Not tested yet (fewer than 2 paired seeds): {len(untested)} comparisons "
            f"({', '.join(untested)})."
        ]
    return [*lines, ""]


def _ablation_lines(ablations: list[dict]) -> list[str]:
    lines = [
        "### Ablations (IGA defaults unless named; ERM rows for the K sweep)",
        "",
        "| setting | n | in-domain % | OOD % | LCS | s/step |",
        "|---|---|---|---|---|---|",
    ]
    for a in ablations:
        lines.append(
            f"| {a['name']} | {a['n']} | {_fmt(a['id'], 1)} | {_fmt(a['ood'], 1)} | "
            f"{_fmt(a['lcs'], 4)} | {_fmt(a['sec_per_step'], 2)} |"
        )
    return [*lines, ""]


def markdown(result: dict) -> str:
    b = result["benchmarks"]
    cov = result["coverage"]
    lines = [
        f"Suite `{result['suite']}`: {cov['main_runs']}/{cov['main_expected']} main runs "
        f"({cov['records']} records in all). Cells: mean ± 95% t-interval over seeds "
        "(n per cell in the JSON).",
        "",
    ]
    if result.get("skipped"):
        lines += [
            f"Skipped {len(result['skipped'])} corrupt record(s), not in any cell: "
            + "; ".join(result["skipped"]),
            "",
        ]
    for metric, rows in result["main"].items():
        d = _digits(metric)
        lines += [f"### {METRICS[metric][0]}", "", "| method | " + " | ".join(b) + " | mean |"]
        lines.append("|---" * (len(b) + 2) + "|")
        for m, row in rows.items():
            cells = [_fmt(row[x], d) for x in b] + [_fmt(row["mean"], d)]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    for metric, comps in result["comparisons"].items():
        if comps:
            lines += _comparison_lines(metric, comps, result["alpha"])
    if result["ablations"]:
        lines += _ablation_lines(result["ablations"])
    return "\n".join(lines)


def latex(result: dict) -> str:
    """The OOD and LCS tables as LaTeX tabulars (booktabs)."""
    b = result["benchmarks"]
    out = []
    for metric in ("ood", "lcs"):
        d = _digits(metric)
        out += [
            f"% {METRICS[metric][0]}: mean $\\pm$ 95\\% CI over seeds",
            "\\begin{tabular}{l" + "c" * (len(b) + 1) + "}",
            "\\toprule",
            "Method & " + " & ".join(b) + " & Mean \\\\",
            "\\midrule",
        ]
        for m, row in result["main"][metric].items():
            cells = [_fmt(row[x], d).replace("±", "$\\pm$") for x in b]
            cells.append(_fmt(row["mean"], d))
            out.append(f"{m.replace('-', '--')} & " + " & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)


def write_json(result: dict, path: Path) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str))
