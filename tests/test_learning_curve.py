"""scripts/learning_curve.py (issue 15, item 3): a curve trains through the same
``build_trainer`` as ``iga distill``, records one validation point per evaluation step,
resumes without repeating a point, and refuses another configuration under its name."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from iga.distill.student import StudentConfig, build_default_student, train_tokenizer
from iga.isomers import DEFAULT_TRAIN_DOMAINS, generate_sets

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "learning_curve.py"


@pytest.fixture()
def curve(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("learning_curve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "CURVES", tmp_path / "curves")
    return module


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> str:
    """A random 1-layer Llama with a trained BPE, saved as a local HF folder."""
    sets = generate_sets("deduction", list(DEFAULT_TRAIN_DOMAINS), 4, seed=3)
    texts = [i.prompt + "\n" + i.rationale for s in sets for i in s.isomers.values()]
    tokenizer = train_tokenizer(texts, 1000)
    config = StudentConfig(
        vocab_size=1000, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=4
    )
    folder = tmp_path_factory.mktemp("student") / "tiny"
    build_default_student(tokenizer, config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def _argv(student: str, **over) -> list[str]:
    flags = {
        "--name": "tiny", "--student": student, "--families": "deduction", "--steps": "2",
        "--batch-sets": "1", "--n-sets": "4", "--lr": "1e-2", "--lora-rank": "2",
        "--eval-every": "1", "--eval-at": "", "--n-val-sets": "1", "--n-heldout-sets": "1",
        "--eval-batch": "4", **over,
    }  # fmt: skip
    return [x for k, v in flags.items() for x in (k, v)]


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "curve.jsonl").read_text().splitlines()]


def test_a_curve_records_every_point_once_and_resumes(curve, tiny_student):
    assert curve.main(_argv(tiny_student)) == 0
    out = curve.CURVES / "tiny"
    assert _steps(out) == [0, 1, 2]
    rows = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    for row in rows:
        assert 0.0 <= row["accuracy_id"] <= 1.0 and set(row["id"]) == {"deduction"}
        assert row["n_val"] == len(DEFAULT_TRAIN_DOMAINS) and row["n_heldout"] == 2
    assert rows[0]["seconds_per_step"] == 0.0 and rows[2]["seconds_per_step"] > 0
    assert sorted(p.name for p in (out / "evals").iterdir()) == [
        "step-0.json", "step-1.json", "step-2.json",
    ]  # fmt: skip
    assert (out / "ckpt" / "checkpoint-2").is_dir()
    # Rerunning the finished curve repeats no point.
    assert curve.main(_argv(tiny_student)) == 0
    assert _steps(out) == [0, 1, 2]


def test_another_configuration_under_the_same_name_is_refused(curve, tiny_student, capsys):
    assert curve.main(_argv(tiny_student)) == 0
    before = (curve.CURVES / "tiny" / "curve.jsonl").read_text()
    assert curve.main(_argv(tiny_student, **{"--lr": "2e-2"})) == 2
    assert "holds another configuration" in capsys.readouterr().err
    assert (curve.CURVES / "tiny" / "curve.jsonl").read_text() == before
    # Only the evaluation cadence may change under a name: it does not change the weights.
    assert curve.main(_argv(tiny_student, **{"--eval-every": "2"})) == 0
