"""paper_figures: every figure and table builds from a tiny fixture of records in the real
formats (tests/fixtures/figures), every axis is labelled, missing inputs skip with a
message naming the file or field, and the output bytes are reproducible."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from paper_figures import theory_figs
from paper_figures.build import FIGURE_ORDER, TABLE_ORDER, Sources, build, write
from paper_figures.groups import group_runs
from paper_figures.load import MissingInput, load_empirical, load_theory
from paper_figures.readme import END, START, paste_main_table, shown_table
from paper_figures.style import save

FIXTURE = Path(__file__).parent / "fixtures" / "figures"
SOURCES = Sources(FIXTURE / "theory", FIXTURE / "empirical", FIXTURE / "bench_step.json")


@pytest.fixture(scope="module")
def built():
    return build(SOURCES, log=lambda *_: None)


def test_every_figure_and_table_builds_from_the_fixture(built):
    assert built.skipped == {}
    assert [f.name for f in built.figures] == list(FIGURE_ORDER)
    assert [t.name for t in built.tables] == list(TABLE_ORDER)


def test_every_axis_has_labels_and_a_legend(built):
    for spec in built.figures:
        axes = [ax for ax in spec.fig.axes if ax.get_visible()]
        assert axes, spec.name
        for ax in axes:
            where = f"{spec.name}: axis {ax.get_title()!r}"
            assert ax.get_xlabel().strip(), where + " has no x label"
            assert ax.get_ylabel().strip(), where + " has no y label"
            assert ax.get_legend() is not None, where + " has no legend"
            assert ax.get_legend().get_texts(), where + " has an empty legend"


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. a layout that collapsed an axis
def test_files_are_written_with_captions_naming_command_and_records(built, tmp_path):
    write(built, tmp_path, log=lambda *_: None)
    for spec in built.figures:
        for suffix in (".png", ".pdf", ".caption.md"):
            path = tmp_path / f"{spec.name}{suffix}"
            assert path.is_file() and path.stat().st_size > 0, path
        caption = (tmp_path / f"{spec.name}.caption.md").read_text()
        assert "Produced by: `" in caption and "paper_figures" in caption
        assert "fixtures/figures" in caption, f"{spec.name} caption names no record file"
    for name in TABLE_ORDER:
        assert (tmp_path / f"{name}.md").read_text().startswith("| ")
        assert "\\begin{tabular}" in (tmp_path / f"{name}.tex").read_text()
    readme = (tmp_path / "README.md").read_text()
    assert all(f"![{n}]({n}.png)" in readme for n in FIGURE_ORDER)


def test_main_table_has_every_method_and_bolds_the_best(built):
    table = next(t for t in built.tables if t.name == "main_table")
    assert [r[0] for r in table.rows] == ["ERM-SFT", "IRMv1", "IGA (ours)"]
    assert "OOD arithmetic" in table.header and "OOD deduction" in table.header
    assert table.bold and "**" in table.markdown() and "\\textbf{" in table.latex()
    assert all(r[-1] == "2" for r in table.rows)  # two seeds each


def test_runs_are_grouped_like_the_suite():
    emp = load_empirical(FIXTURE / "empirical")
    groups = group_runs(emp.runs)
    assert groups.k_default == 4
    irm = [r for r in groups.main if r.method == "irm"]
    assert {r.hp("lr") for r in irm} == {0.003}, "the one-seed search draw is not the main run"
    iga = [r for r in groups.main if r.method == "iga"]
    assert all(r.hp("tau") == 1.0 and r.hp("projection") == "svd" for r in iga)
    assert {k: len(v) for k, v in groups.ablations.items()} == {
        "defaults": 2,
        "tau": 4,
        "variant": 8,
        "rank": 4,
    }
    assert {r.K for r in groups.k_sweep} == {2, 3, 4}
    assert {r.method for r in groups.k_sweep} == {"erm", "iga"}, "IRM was never swept"


def test_a_benchmark_still_in_its_search_stage_is_left_out_and_named():
    """Deduction with one IRM seed: the main comparison shows arithmetic only, and the
    captions say deduction is not shown yet (no mixed coverage in means over benchmarks)."""
    from dataclasses import replace as dc_replace

    from paper_figures.groups import MIN_MAIN_SEEDS
    from paper_figures.tables import main_table

    emp = load_empirical(FIXTURE / "empirical")
    full = group_runs(emp.runs)
    assert full.incomplete == {} and full.benchmarks() == ["arithmetic", "deduction"]
    runs = [
        r
        for r in emp.runs
        if not (r.method == "irm" and r.benchmark == "deduction" and r.seed != 0)
    ]
    groups = group_runs(runs)
    assert MIN_MAIN_SEEDS == 2 and groups.incomplete == {"deduction": ["irm"]}
    assert groups.benchmarks() == ["arithmetic"]
    table = main_table(dc_replace(emp, runs=runs), groups)
    assert "Not shown, their runs still in progress: deduction (1 method" in table.caption
    assert not any("deduction" in h for h in table.header)


def test_bad_and_unfinished_records_are_skipped_with_a_note():
    emp = load_empirical(FIXTURE / "empirical")
    assert any("broken.jsonl:1" in n and "train_domains" in n for n in emp.notes)
    assert any("broken.jsonl:2" in n for n in emp.notes)
    assert 7 not in {r.seed for r in emp.runs}, "a run without its done marker was read"


def test_missing_folders_skip_only_their_figures(tmp_path):
    result = build(
        Sources(tmp_path / "nope", FIXTURE / "empirical", tmp_path / "x.json"), log=lambda *_: None
    )
    theory = {n for n in FIGURE_ORDER if n.startswith("theory_")}
    assert set(result.skipped) == theory
    assert all("figures.json" in result.skipped[n] for n in theory)
    assert any("x.json" in n for n in result.notes)
    assert "ood_by_method" in {f.name for f in result.figures}


def test_a_missing_field_is_named(tmp_path):
    shutil.copytree(FIXTURE / "theory", tmp_path / "theory")
    path = tmp_path / "theory" / "figures.json"
    data = json.loads(path.read_text())
    del data["k_scaling[regression]"]["per_K"]
    path.write_text(json.dumps(data))
    with pytest.raises(MissingInput, match=r"figures\.json:k_scaling\[regression\].*per_K"):
        theory_figs.k_scaling(load_theory(tmp_path / "theory"))
    result = build(Sources(tmp_path / "theory", None, None), log=lambda *_: None)
    assert "per_K" in result.skipped["theory_k_scaling"]
    assert "theory_convergence" in {f.name for f in result.figures}


def test_output_bytes_are_reproducible(tmp_path):
    theory = load_theory(FIXTURE / "theory")
    a = save(theory_figs.mask(theory), tmp_path / "a")
    b = save(theory_figs.mask(theory), tmp_path / "b")
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes(), x.name
    assert b"CreationDate" not in a[1].read_bytes()


def test_iga_figures_command(tmp_path, capsys):
    from iga.cli import main

    readme = tmp_path / "project.md"  # not README.md: that is the figure index in --out
    readme.write_text(f"intro\n{START}stale{END}\n")
    args = ["figures", "--out", str(tmp_path), "--theory", str(SOURCES.theory)]
    args += ["--empirical", str(SOURCES.empirical), "--bench", str(SOURCES.bench)]
    assert main([*args, "--readme", str(readme)]) == 0
    assert (tmp_path / "ood_by_method.png").is_file()
    out = capsys.readouterr().out
    assert "skipped 0" in out and "main table updated" in out
    assert shown_table(readme.read_text()) == (tmp_path / "main_table.md").read_text().strip()
    readme.write_text("no markers\n")
    assert main([*args, "--readme", str(readme)]) == 2
    assert "no main-table block" in capsys.readouterr().err
    assert readme.read_text() == "no markers\n"
    assert main([*args[:5], "--empirical", str(tmp_path / "none"), "--strict"]) == 1


def test_suites_are_never_mixed(tmp_path):
    shutil.copytree(FIXTURE / "empirical", tmp_path / "quick")
    one = next((FIXTURE / "empirical" / "runs").glob("*/done")).parent
    shutil.copytree(one, tmp_path / "full" / "runs" / one.name)
    (tmp_path / "full" / "suite.json").write_text('{"name": "full"}')
    emp = load_empirical(tmp_path)
    assert emp.folder == tmp_path / "quick" and len(emp.runs) > 1
    assert any("not mixed in: full (1 runs)" in n for n in emp.notes)


def test_readme_shows_the_committed_main_table():
    """The README's copy of the main table is the one `python -m paper_figures` built."""
    root = Path(__file__).resolve().parents[1]
    shown = shown_table((root / "README.md").read_text())
    built = (root / "figures" / "main_table.md").read_text().strip()
    assert shown == built, (
        "README.md's main table differs from figures/main_table.md: run "
        "`python -m paper_figures --out figures --readme README.md`."
    )


def test_readme_paste_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\ntext\n\n{START}| old |\n{END.strip()}\n\nafter\n")
    assert paste_main_table(readme, "| new |\n|---|\n\ncaption\n")
    text = readme.read_text()
    assert text == f"# title\n\ntext\n\n{START}| new |\n|---|\n\ncaption{END}\n\nafter\n"
    assert shown_table(text) == "| new |\n|---|\n\ncaption"
    assert not paste_main_table(readme, "| new |\n|---|\n\ncaption")  # already current
    assert readme.read_text() == text


def test_readme_paste_without_markers_is_an_error_and_writes_nothing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n{START}| old |\n")  # end marker lost
    with pytest.raises(ValueError, match="main-table:end"):
        paste_main_table(readme, "| new |")
    assert readme.read_text() == f"# title\n{START}| old |\n"
