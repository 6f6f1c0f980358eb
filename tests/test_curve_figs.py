"""The pretrained student's learning-curve table and figure (paper_figures.curve_figs) read
the curve's records: constant-answer and top-prediction references from the stored
completions, one row per point, and the README shows the committed table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from paper_figures.curve_figs import constant_answer, figure, load_curve, main, table
from paper_figures.readme import markers, shown_table

ROOT = Path(__file__).resolve().parents[1]


def _example(family, set_id, answer, prediction):
    return {"family": family, "set_id": set_id, "answer": answer, "prediction": prediction}


def _point(step, ded, loss=None):
    return {
        "step": step, "train_loss": loss, "train_loss_step": step - 10 if loss else None,
        "seconds_per_step": 10.0, "eval_seconds": 100.0, "accuracy_id": ded,
        "accuracy_ood": 0.5, "id": {"deduction": ded}, "ood": {"deduction": 0.5},
        "n_val": 4, "n_heldout": 2, "loadavg_1m": 1.0,
    }  # fmt: skip


def write_curve(folder: Path, points, evals) -> Path:
    (folder / "evals").mkdir(parents=True)
    lines = [json.dumps(p) for p in points]
    (folder / "curve.jsonl").write_text("\n".join(lines) + '\n{"step": 3')  # a cut line
    for step, examples in evals.items():
        (folder / "evals" / f"step-{step}.json").write_text(json.dumps({"id": examples}))
    return folder


# Three sets, gold answers yes, yes, no (one isomer each here): constant answer 2/3.
GOLD = [("s1", "yes"), ("s2", "yes"), ("s3", "no")]


def _evals(predictions):
    return [_example("deduction", s, a, p) for (s, a), p in zip(GOLD, predictions)]


@pytest.fixture()
def curve(tmp_path):
    points = [_point(0, 0.0), _point(100, 2 / 3, loss=0.5), _point(100, 0.0)]  # 100 twice
    evals = {0: _evals([None, None, None]), 100: _evals(["yes", "yes", "yes"])}
    return write_curve(tmp_path / "c", points, evals)


def test_points_keep_the_first_record_of_a_step_and_skip_a_cut_line(curve):
    points, evals = load_curve(curve)
    assert [p["step"] for p in points] == [0, 100] and points[1]["accuracy_id"] == 2 / 3
    assert set(evals) == {0, 100}


def test_constant_answer_and_top_prediction_share(curve):
    points, evals = load_curve(curve)
    assert constant_answer(evals) == {"deduction": (2 / 3, 3)}
    text = table(points, evals)
    rows = text.splitlines()
    # step 0 wrote no answer line: no top-prediction share; step 100 always says yes
    assert rows[2].startswith("| 0 | — | 0.0 | 0.0 | 50.0 | — |")
    assert rows[3].startswith("| 100 | 0.500 (step 90) | 66.7 | 66.7 | 50.0 | 100.0 |")
    assert rows[4].startswith("| constant answer | — | 66.7 |")
    assert "3 sets per family" in text


def test_a_curve_whose_points_disagree_on_the_split_is_an_error(tmp_path):
    other = [_example("deduction", "s1", "no", "no")]
    folder = write_curve(tmp_path / "c", [_point(0, 0.0)], {0: _evals([None] * 3), 5: other})
    (folder / "curve.jsonl").write_text(
        json.dumps(_point(0, 0.0)) + "\n" + json.dumps(_point(5, 1.0))
    )
    with pytest.raises(ValueError, match="disagree on their validation split"):
        table(*load_curve(folder))


def test_figure_draws_a_line_per_family_and_its_reference(curve):
    fig = figure(*load_curve(curve))
    assert len(fig.axes[0].get_lines()) == 2  # accuracy and the constant-answer line


def test_cli_pastes_into_the_readme_and_refuses_one_without_markers(curve, tmp_path):
    start, end = markers("curve-table")
    readme = tmp_path / "project.md"
    readme.write_text(f"intro\n{start}stale{end}\nafter\n")
    out = tmp_path / "figs"
    assert main(["--curve", str(curve), "--out", str(out), "--readme", str(readme)]) == 0
    assert shown_table(readme.read_text(), name="curve-table") == (
        (out / "pretrained_curve.md").read_text().strip()
    )
    assert readme.read_text().endswith("after\n")
    readme.write_text("no markers\n")
    assert main(["--curve", str(curve), "--out", str(out), "--readme", str(readme)]) == 2
    assert readme.read_text() == "no markers\n"
    assert main(["--curve", str(tmp_path / "none"), "--out", str(out)]) == 2


@pytest.mark.parametrize(
    "name,built",
    [
        ("curve-table", "pretrained_curve.md"),
        ("curve-compare-table", "pretrained_curve_compare.md"),
        ("estimator-table", "estimator_ablation.md"),
    ],
)
def test_readme_shows_the_committed_tables(name, built):
    shown = shown_table((ROOT / "README.md").read_text(), name=name)
    assert shown == (ROOT / "figures" / built).read_text().strip(), (
        f"README.md's {name} differs from figures/{built}: rebuild it with --readme README.md."
    )


def test_compare_puts_curves_side_by_side_at_their_common_steps(tmp_path, capsys):
    a = write_curve(tmp_path / "erm", [_point(0, 0.0), _point(50, 0.25), _point(100, 0.5)], {})
    b = write_curve(tmp_path / "iga", [_point(0, 0.0), _point(100, 0.75)], {})
    out = tmp_path / "figs"
    assert main(["--compare", str(a), str(b), "--out", str(out)]) == 0
    rows = (out / "pretrained_curve_compare.md").read_text().splitlines()
    assert rows[0] == "| step | ID deduction | ID mean | held-out mean |"
    # step 50 is ERM's only: left out
    assert rows[2:4] == [
        "| 0 | 0.0 / 0.0 | 0.0 / 0.0 | 50.0 / 50.0 |",
        "| 100 | 50.0 / 75.0 | 50.0 / 75.0 | 50.0 / 50.0 |",
    ]
    assert "Each cell: erm / iga;" in rows[-1]
    assert (out / "pretrained_curve_compare.png").is_file()
    assert main(["--compare", str(a), "--out", str(out)]) == 2
    assert "two or more" in capsys.readouterr().err
