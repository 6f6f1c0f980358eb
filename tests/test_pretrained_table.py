"""The pretrained student's test table (paper_figures.pretrained_table) reads the points
scored by ``scripts/learning_curve.py --test-at``, puts an interval over isomer sets on
the means, refuses damaged records with their path, and the README shows the committed
table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy import stats

from paper_figures.pretrained_table import load_points, main, set_interval, table
from paper_figures.readme import shown_table

ROOT = Path(__file__).resolve().parents[1]


def _examples(correct_by_set: dict[str, list[bool]], domains: list[str]) -> list[dict]:
    return [
        {"set_id": s, "domain": d, "family": "deduction", "correct": c}
        for s, flags in correct_by_set.items()
        for d, c in zip(domains, flags)
    ]


def write_point(curves: Path, name: str, method: str, step: int, examples: list[dict]) -> None:
    folder = curves / name / "test" / f"step-{step}"
    folder.mkdir(parents=True)
    ev = {
        "accuracy_id": 0.5, "accuracy_ood": 0.25, "lcs": 0.61234, "answer_consistency": 0.75,
        "per_family": {"deduction": {"id": 0.5, "ood": 0.25}}, "n_examples": len(examples),
        "train_domains": ["a", "b"], "heldout_domains": ["c"], "examples": examples,
    }  # fmt: skip
    summary = {
        "method": method, "steps": step, "schedule_steps": 2000, "train_seconds": 7200.0,
        "seconds_per_step": 7200.0 / step, "eval": {k: v for k, v in ev.items() if k != "examples"},
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "eval.json").write_text(json.dumps(ev))


# Three sets over in-domain a, b and held-out c: per-set ID accuracy 1, 0.5, 0.
SETS = {"s1": [True, True, False], "s2": [True, False, True], "s3": [False, False, False]}


@pytest.fixture()
def curves(tmp_path):
    examples = _examples(SETS, ["a", "b", "c"])
    write_point(tmp_path, "iga-x", "iga", 600, examples)
    write_point(tmp_path, "erm-x", "erm", 600, examples)
    write_point(tmp_path, "erm-x", "erm", 100, examples)
    return tmp_path


def test_the_interval_is_over_isomer_sets_not_prompts():
    mean, half, n = set_interval(_examples(SETS, ["a", "b", "c"]), {"a", "b"})
    assert n == 3 and mean == pytest.approx(0.5)
    # per-set accuracies 1, 0.5, 0: sd 0.5, t(0.975, 2) * 0.5 / sqrt(3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * 0.5 / 3**0.5)
    assert set_interval(_examples(SETS, ["a", "b", "c"]), {"c"})[:2] == (pytest.approx(1 / 3),) + (
        pytest.approx(stats.t.ppf(0.975, 2) * (1 / 3) ** 0.5 / 3**0.5),
    )


def test_one_row_per_point_sorted_by_step_then_curve(curves):
    points = load_points(curves)
    assert [(p["curve"], p["steps"]) for p in points] == [
        ("erm-x", 100), ("erm-x", 600), ("iga-x", 600),
    ]  # fmt: skip
    rows = table(points).splitlines()
    assert rows[0].startswith("| curve | method | step | deduction | ID mean | held-out mean")
    assert rows[3].startswith("| erm-x | erm | 600 of 2000 | 50.0 / 25.0 | 50.0 ± 124.2 |")
    assert "| 0.6123 | 0.750 | 2.00 | 12.0 |" in rows[3]
    assert "3 isomer sets" in table(points)


def test_damaged_or_missing_records_are_named(tmp_path, capsys):
    assert main(["--curves", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert "no scored points" in capsys.readouterr().err
    write_point(tmp_path, "erm-x", "erm", 5, [])
    summary = tmp_path / "erm-x" / "test" / "step-5" / "summary.json"
    summary.write_text('{"method": "erm"')
    assert main(["--curves", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert f"{summary}: not JSON" in capsys.readouterr().err
    summary.write_text('{"method": "erm"}')
    assert main(["--curves", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert "not a --test-at summary (no eval, schedule_steps" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_the_readme_shows_the_committed_table():
    committed = ROOT / "figures" / "pretrained_test.md"
    assert committed.is_file(), "run python -m paper_figures.pretrained_table --readme README.md"
    readme = (ROOT / "README.md").read_text()
    assert shown_table(readme, name="pretrained-table") == committed.read_text().strip()
    built = table(load_points(ROOT / "results" / "pretrained" / "curves"))
    assert built == committed.read_text()


def test_ordering_is_split_by_question_kind(tmp_path):
    from paper_figures.pretrained_table import by_question_kind

    examples = [
        {"family": "ordering", "domain": "a", "answer": "F", "correct": True, "set_id": "o1"},
        {"family": "ordering", "domain": "a", "answer": "R", "correct": False, "set_id": "o2"},
        {"family": "ordering", "domain": "c", "answer": "R", "correct": True, "set_id": "o2"},
        {"family": "ordering", "domain": "a", "answer": "no", "correct": True, "set_id": "o3"},
        {"family": "rules", "domain": "a", "answer": "no", "correct": False, "set_id": "r1"},
    ]
    assert by_question_kind(examples, "ordering", {"a"}) == {
        "which one": (0.5, 2), "yes/no": (1.0, 1),
    }  # fmt: skip
    write_point(tmp_path, "erm-x", "erm", 600, examples)
    text = table(load_points(tmp_path))
    assert "Ordering in-domain by question kind: erm-x step 600: which one 50.0 % of 2" in text


def test_erm_and_another_method_at_one_step_are_paired_over_sets(tmp_path):
    from paper_figures.pretrained_table import paired_difference

    erm = _examples(SETS, ["a", "b", "c"])  # per-set ID accuracy 1, 0.5, 0
    other = _examples({"s1": [True, False, False], "s2": [False, False, True],
                       "s3": [False, False, False]}, ["a", "b", "c"])  # fmt: skip
    mean, half, p, n = paired_difference(erm, other, {"a", "b"})
    # ERM minus the other per set: 0.5, 0.5, 0 -> mean 1/3, sd 0.2887
    assert n == 3 and mean == pytest.approx(1 / 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * (1 / 12) ** 0.5 / 3**0.5)
    assert p == pytest.approx(stats.ttest_rel([1, 0.5, 0], [0.5, 0, 0]).pvalue)
    write_point(tmp_path, "erm-x", "erm", 600, erm)
    write_point(tmp_path, "iga-x", "iga", 600, other)
    write_point(tmp_path, "iga-x", "iga", 700, other)  # no ERM point at 700: no line
    text = table(load_points(tmp_path))
    assert text.count("ERM minus iga") == 1
    assert "ERM minus iga at step 600, paired over test sets: in-domain +33.3 ±" in text


def test_completions_are_split_by_the_teachers_first_line(tmp_path, capsys):
    """The split rebuilds the teacher's rationales from the curve's config: a completion
    that starts with the teacher's first line counts as such, any other does not, and a
    test example that is not among the config's test sets is refused with its key."""
    from iga.distill.config import DistillConfig
    from iga.distill.run import load_eval_sets

    config = DistillConfig(families=("ordering",), n_eval_sets=2)
    (tmp_path / "erm-x").mkdir()
    saved = tmp_path / "erm-x" / "curve_config.json"
    saved.write_text(json.dumps({"distill": config.to_dict()}))
    sets = load_eval_sets(config)
    a, b = config.train_domains[:2]
    first, second = sets[0], sets[1]
    examples = [  # set 1: teacher's chain in both domains, one right; set 2: another chain
        {"set_id": first.set_id, "domain": a, "family": "ordering", "answer": "x",
         "correct": True, "completion": first.isomers[a].rationale},
        {"set_id": first.set_id, "domain": b, "family": "ordering", "answer": "x",
         "correct": False, "completion": first.isomers[b].rationale.split("\n")[0] + "\nno"},
        {"set_id": second.set_id, "domain": a, "family": "ordering", "answer": "x",
         "correct": False, "completion": "Something else.\nAnswer: Q"},
    ]  # fmt: skip

    def point(step: int) -> None:  # a scored point whose training domains are a, b
        write_point(tmp_path, "erm-x", "erm", step, examples)
        folder = tmp_path / "erm-x" / "test" / f"step-{step}"
        for name in ("eval.json", "summary.json"):
            record = json.loads((folder / name).read_text())
            (record["eval"] if name == "summary.json" else record)["train_domains"] = [a, b]
            (folder / name).write_text(json.dumps(record))

    point(600)
    text = table(load_points(tmp_path))
    assert "erm-x step 600: ordering 2 of 3 (50 % right; the others 0 %)." in text

    examples[2]["set_id"] = "ordering-elsewhere-0"
    point(700)
    assert main(["--curves", str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert "('ordering-elsewhere-0', " in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
    saved.write_text("[]")
    with pytest.raises(ValueError, match="no 'distill' object"):
        load_points(tmp_path)


def test_a_curve_trained_on_restated_sets_is_compared_with_the_restated_teacher(tmp_path):
    """The training files' rationale style (ordering's ``restate``) is the teacher's."""
    from iga.distill.config import DistillConfig
    from iga.distill.run import EVAL_SEED_OFFSET
    from iga.isomers import generate_sets
    from iga.isomers.io import write_sets
    from paper_figures.pretrained_table import rationale_styles, teacher_first_lines

    train = tmp_path / "train.jsonl"
    write_sets(train, generate_sets("ordering", None, 2, seed=0, rationale="restate"))
    config = DistillConfig(families=("ordering",), n_eval_sets=6, sets=(str(train),))
    saved = tmp_path / "curve_config.json"
    saved.write_text(json.dumps({"distill": config.to_dict()}))
    lines = teacher_first_lines(saved)
    restated = generate_sets("ordering", None, 6, EVAL_SEED_OFFSET, rationale="restate")
    chained = generate_sets("ordering", None, 6, EVAL_SEED_OFFSET)
    keys = [(s.set_id, d) for s in restated for d in s.isomers]
    assert lines == {
        (s.set_id, d): iso.rationale.split("\n")[0]
        for s in restated
        for d, iso in s.isomers.items()
    }
    first = {
        (s.set_id, d): iso.rationale.split("\n")[0] for s in chained for d, iso in s.isomers.items()
    }
    assert any(lines[k] != first[k] for k in keys)  # the two teachers open differently

    mixed = tmp_path / "mixed.jsonl"
    write_sets(mixed, generate_sets("ordering", None, 1, seed=9))
    with pytest.raises(ValueError, match=r"\['ordering'\] mix rationale styles"):
        rationale_styles([str(train), str(mixed)], saved)
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl not found"):
        rationale_styles([str(tmp_path / "nowhere.jsonl")], saved)
