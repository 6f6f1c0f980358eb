"""Build every figure and table from the stored results; skip (with a note) what lacks data.

``build(sources)`` returns the figures (matplotlib ``Figure`` objects, unsaved) and
tables, plus one note per skipped item; ``write(result, out)`` saves them and the
``README.md`` index. A missing file or field skips only the figures that need
it; nothing is ever drawn from invented numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from paper_figures import cost_figs, empirical_figs, tables, theory_figs
from paper_figures.groups import Groups, group_runs
from paper_figures.load import (
    Bench,
    Empirical,
    MissingInput,
    Theory,
    load_bench,
    load_empirical,
    load_theory,
)
from paper_figures.paths import DEFAULT_BENCH, DEFAULT_EMPIRICAL, DEFAULT_THEORY
from paper_figures.style import FigureSpec, save

# Output order: the main claims first (this is also the README order).
FIGURE_ORDER = (
    "ood_by_method",
    "ood_vs_k",
    "theory_k_scaling",
    "theory_convergence",
    "theory_mask",
    "lcs_by_method",
    "ablation_tau",
    "ablation_rank",
    "ablation_variants",
    "step_overhead",
    "theory_transient",
    "theory_mask_regimes",
)
TABLE_ORDER = ("main_table", "ablation_table")


@dataclass
class Sources:
    theory: Path | None = DEFAULT_THEORY
    empirical: Path | None = DEFAULT_EMPIRICAL
    bench: Path | None = None  # None: the first of DEFAULT_BENCH that exists


@dataclass
class Inputs:
    theory: Theory | None = None
    empirical: Empirical | None = None
    groups: Groups | None = None
    bench: Bench | None = None
    notes: dict[str, str] = field(default_factory=dict)  # input -> why it is missing


@dataclass
class Result:
    figures: list[FigureSpec]
    tables: list[tables.Table]
    skipped: dict[str, str]  # figure or table name -> reason
    notes: list[str]


def load_inputs(sources: Sources) -> Inputs:
    inputs = Inputs()
    try:
        inputs.theory = load_theory(sources.theory) if sources.theory else None
    except MissingInput as e:
        inputs.notes["theory"] = str(e)
    try:
        if sources.empirical:
            inputs.empirical = load_empirical(sources.empirical)
            emp = inputs.empirical
            inputs.groups = group_runs(emp.runs, emp.search_seed, emp.candidates)
    except MissingInput as e:
        inputs.notes["empirical"] = str(e)
    bench = sources.bench or next((p for p in DEFAULT_BENCH if p.is_file()), None)
    try:
        inputs.bench = load_bench(bench) if bench else None
    except MissingInput as e:
        inputs.notes["bench"] = str(e)
    return inputs


def _builders(inputs: Inputs) -> dict[str, Callable[[], object]]:
    """name -> a thunk building it; the thunk raises MissingInput when its input is absent."""

    def theory(fn):
        def run():
            if inputs.theory is None:
                raise MissingInput(inputs.notes.get("theory", "no theory results given"))
            return fn(inputs.theory)

        return run

    def empirical(fn):
        def run():
            if inputs.empirical is None:
                raise MissingInput(inputs.notes.get("empirical", "no empirical records given"))
            return fn(inputs.empirical, inputs.groups)

        return run

    def overhead():
        if inputs.bench is None and inputs.empirical is None:
            reasons = [inputs.notes.get(k) for k in ("bench", "empirical")]
            raise MissingInput("; ".join(r for r in reasons if r) or "no bench report or records")
        return cost_figs.step_overhead(inputs.empirical, inputs.groups, inputs.bench)

    out: dict[str, Callable[[], object]] = {"step_overhead": overhead}
    out |= {n: theory(f) for n, f in theory_figs.BUILDERS.items()}
    out |= {n: empirical(f) for n, f in empirical_figs.BUILDERS.items()}
    out |= {n: empirical(f) for n, f in tables.TABLES.items()}
    return out


def build(sources: Sources, log=print) -> Result:
    inputs = load_inputs(sources)
    notes = [f"{k}: {v}" for k, v in inputs.notes.items()]
    if inputs.empirical is not None:
        notes += inputs.empirical.notes
    result = Result([], [], {}, notes)
    builders = _builders(inputs)
    for name in (*FIGURE_ORDER, *TABLE_ORDER):
        try:
            item = builders[name]()
        except MissingInput as e:
            result.skipped[name] = str(e)
            log(f"skipped {name}: {e}")
            continue
        (result.tables if isinstance(item, tables.Table) else result.figures).append(item)
    return result


def _clear(out: Path, name: str) -> None:
    """Remove what an earlier build wrote for ``name``, so a skipped item leaves no stale file."""
    for suffix in (".png", ".pdf", ".caption.md", ".md", ".tex"):
        (out / f"{name}{suffix}").unlink(missing_ok=True)


def write(result: Result, out: Path, log=print) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in result.skipped:
        _clear(out, name)
    for spec in result.figures:
        written += save(spec, out)
        log(f"wrote {spec.name}.png/.pdf/.caption.md")
    for table in result.tables:
        written += table.save(out)
        log(f"wrote {table.name}.md/.tex")
    readme = out / "README.md"
    readme.write_text(index_markdown(result))
    return written + [readme]


def index_markdown(result: Result) -> str:
    lines = [
        "# Figures and tables",
        "",
        "Rebuilt from the committed results by `python -m paper_figures --out figures`",
        "(or `iga figures --out figures`); each figure has a PNG, a PDF and a caption file",
        "naming the command and the record files it came from.",
        "",
    ]
    for t in result.tables:
        lines += [f"## Table `{t.name}` ([md]({t.name}.md), [tex]({t.name}.tex))", "", t.markdown()]
    for spec in result.figures:
        lines += [
            f"## `{spec.name}` ([pdf]({spec.name}.pdf), [caption]({spec.name}.caption.md))",
            "",
            f"![{spec.name}]({spec.name}.png)",
            "",
            spec.caption,
            "",
        ]
    if result.skipped:
        lines += ["## Not built (missing inputs)", ""]
        lines += [f"- `{n}`: {why}" for n, why in result.skipped.items()] + [""]
    return "\n".join(lines)
