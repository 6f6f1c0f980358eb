"""The main table (and the ablation table) in markdown and LaTeX.

Main table: one row per method; OOD accuracy per benchmark and averaged over
benchmarks (mean ± 95% t half-width over seeds, in %), the gap to ERM-SFT in
points, in-domain accuracy, LCS and answer consistency. The best mean of each
column is bold (lowest for LCS).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from empirical.stats import mean_ci
from paper_figures.empirical_figs import ALL, cell_stats
from paper_figures.groups import Groups, ablation_names, by, incomplete_note
from paper_figures.load import Empirical, MissingInput
from paper_figures.style import label, method_order


@dataclass
class Table:
    name: str
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]]  # (row, column) cells to emphasise
    caption: str
    sources: list[str]

    def markdown(self) -> str:
        def cell(i, j, text):
            return f"**{text}**" if (i, j) in self.bold else text

        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        for i, row in enumerate(self.rows):
            lines.append("| " + " | ".join(cell(i, j, t) for j, t in enumerate(row)) + " |")
        return "\n".join(lines) + f"\n\n{self.caption}\n"

    def latex(self) -> str:
        def esc(text: str) -> str:
            for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_")):
                text = text.replace(a, b)
            return text.replace("±", "$\\pm$").replace("—", "--")

        def cell(i, j, text):
            return f"\\textbf{{{esc(text)}}}" if (i, j) in self.bold else esc(text)

        cols = "l" + "r" * (len(self.header) - 1)
        body = [
            " & ".join(cell(i, j, t) for j, t in enumerate(r)) + " \\\\"
            for i, r in enumerate(self.rows)
        ]
        return "\n".join(
            [
                "\\begin{table}[t]",
                "\\centering\\small",
                f"\\caption{{{esc(self.caption)}}}",
                f"\\label{{tab:{self.name}}}",
                f"\\begin{{tabular}}{{{cols}}}",
                "\\toprule",
                " & ".join(esc(h) for h in self.header) + " \\\\",
                "\\midrule",
                *body,
                "\\bottomrule",
                "\\end{tabular}",
                "\\end{table}",
                "",
            ]
        )

    def save(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        md, tex = out / f"{self.name}.md", out / f"{self.name}.tex"
        md.write_text(self.markdown())
        tex.write_text(self.latex())
        return [md, tex]


def _fmt(stat, scale: float = 100.0, digits: int = 1) -> str:
    mean, half, _ = stat
    if math.isnan(mean):
        return "—"
    text = f"{scale * mean:.{digits}f}"
    return text if math.isnan(half) else f"{text} ± {scale * half:.{digits}f}"


def _bold_best(rows_means: list[list[float]], lower: set[int]) -> set[tuple[int, int]]:
    bold = set()
    for j in range(len(rows_means[0]) if rows_means else 0):
        col = [(r[j], i) for i, r in enumerate(rows_means) if not math.isnan(r[j])]
        if col:
            best = min(col)[0] if j in lower else max(col)[0]
            bold |= {(i, j + 1) for v, i in col if v == best}
    return bold


def main_table(emp: Empirical, groups: Groups) -> Table:
    if not groups.main:
        raise MissingInput("no main-comparison runs in the empirical records (main table)")
    benches = groups.benchmarks()
    ood = cell_stats(groups, "acc_ood")
    idd, lcs, cons = (cell_stats(groups, m) for m in ("acc_id", "lcs", "consistency"))
    avg = ALL if len(benches) > 1 else benches[0]
    erm_seed = _seed_avg(groups, "erm")
    header = ["method", *[f"OOD {b}" for b in benches]]
    header += (["OOD mean"] if len(benches) > 1 else []) + ["Δ OOD vs ERM (pp)"]
    header += ["ID acc", "LCS ↓", "answer consistency", "seeds"]
    rows, means = [], []
    for m in method_order(groups.methods()):
        cols = [ood.get((m, b), (math.nan,) * 3) for b in benches]
        cols += [ood[(m, ALL)]] if len(benches) > 1 else []
        delta = _delta(_seed_avg(groups, m), erm_seed) if m != "erm" else (math.nan,) * 3
        rest = [idd.get((m, avg)), lcs.get((m, avg)), cons.get((m, avg))]
        rest = [s or (math.nan,) * 3 for s in rest]
        n = len({r.seed for r in groups.main if r.method == m})
        rows.append(
            [label(m)]
            + [_fmt(c) for c in cols]
            + [_fmt(delta, digits=1) if m != "erm" else "—"]
            + [_fmt(rest[0]), _fmt(rest[1], scale=1.0, digits=3), _fmt(rest[2]), str(n)]
        )
        means.append([c[0] for c in cols] + [delta[0]] + [s[0] for s in rest] + [math.nan])
    lcs_col = len(cols) + 2
    seeds = sorted({r.seed for r in groups.main})
    caption = (
        "OOD accuracy (%) on held-out domains per benchmark, mean ± 95% t half-width over "
        f"seeds ({', '.join(map(str, seeds))}); Δ: paired difference to ERM-SFT over "
        "seeds (points, mean of benchmarks); ID accuracy, LCS (lower is better) and "
        "answer consistency (%) are "
        "averaged over benchmarks. Best mean per column in bold. Built by "
        "`python -m paper_figures --out figures` from the records of "
        f"`iga experiments run --suite {emp.suite}`." + incomplete_note(groups)
    )
    return Table(
        "main_table", header, rows, _bold_best(means, {lcs_col}), caption, emp.sources(groups.main)
    )


def _seed_avg(groups: Groups, method: str) -> dict[int, float]:
    """Per seed, OOD accuracy averaged over the benchmarks (only seeds with all of them)."""
    runs = [r for r in groups.main if r.method == method]
    need_n = len(groups.benchmarks())
    out = {}
    for (seed,), rs in by(runs, "seed").items():
        if len({r.benchmark for r in rs}) == need_n:
            out[seed] = sum(r.acc_ood for r in rs) / len(rs)
    return out


def _delta(a: dict[int, float], b: dict[int, float]):
    common = sorted(set(a) & set(b))
    return mean_ci([a[s] - b[s] for s in common])


def ablation_table(emp: Empirical, groups: Groups) -> Table:
    runs = [
        r for kind in ("defaults", "variant", "tau", "rank") for r in groups.ablations.get(kind, [])
    ]
    if not [r for r in runs if groups.labels[r.key] != "IGA defaults"]:
        raise MissingInput("empirical records: no IGA ablation runs (ablation table)")
    header = ["benchmark", "IGA setting", "OOD acc", "ID acc", "LCS ↓", "seeds"]
    rows = []
    for (bench,), rs in by(runs, "benchmark").items():
        for name in ablation_names(groups, rs):
            sel = [r for r in rs if groups.labels[r.key] == name]
            rows.append(
                [
                    bench,
                    name,
                    _fmt(mean_ci([r.acc_ood for r in sel])),
                    _fmt(mean_ci([r.acc_id for r in sel])),
                    _fmt(mean_ci([r.lcs for r in sel]), scale=1.0, digits=3),
                    str(len({r.seed for r in sel})),
                ]
            )
    caption = (
        "IGA ablations, one change from the defaults at a time: accuracy (%) and LCS, mean "
        "± 95% t half-width over seeds."
    )
    return Table("ablation_table", header, rows, set(), caption, emp.sources(runs))


TABLES = {"main_table": main_table, "ablation_table": ablation_table}
