"""scripts/learning_curve.py (issue 15, item 3): a curve trains through the same
``build_trainer`` as ``iga distill``, records one validation point per evaluation step,
resumes without repeating a point, refuses another configuration under its name, keeps
every point's adapter and scores one on the test sets; ``iga demo --student`` trains with
the same recipe (PRETRAINED_RECIPE)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from iga.isomers import DEFAULT_TRAIN_DOMAINS
from tests.tiny_student import save_tiny_student

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
    """A random 1-layer Llama with a BPE trained on deduction, saved as a local HF folder."""
    return save_tiny_student(tmp_path_factory.mktemp("student") / "tiny", ["deduction"], 4, 3)


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


def test_only_an_iga_curve_is_tied_to_the_iga_settings(curve):
    """An ERM curve never reads its ``iga`` block: a stored ERM curve made under other IGA
    defaults is still the same curve. An IGA curve with another tau is not."""
    from dataclasses import asdict

    from iga.core.config import IGAConfig
    from iga.distill.config import DistillConfig

    for method, same in (("erm", True), ("iga", False)):
        config = DistillConfig(method=method, iga=IGAConfig(tau=1.0))
        stored = asdict(DistillConfig(method=method, iga=IGAConfig(tau=7.0, estimator="batch")))
        wanted = {"curve": {"name": "c"}}
        stored_curve = {"distill": stored, "curve": {"name": "c"}}
        assert curve._same_curve(stored_curve, wanted, config) is same
    # Anything else about an ERM run still counts.
    stored = asdict(DistillConfig(method="erm", lr=1e-3))
    erm = DistillConfig(method="erm")
    assert not curve._same_curve({"distill": stored, "curve": {}}, {"curve": {}}, erm)


def test_every_point_keeps_its_adapter_and_is_scored_on_the_test_sets(curve, tiny_student, capsys):
    from iga.distill.config import DistillConfig

    assert curve.main(_argv(tiny_student)) == 0
    out = curve.CURVES / "tiny"
    for step in (1, 2):  # the kept adapter is the checkpoint's, byte for byte
        kept = out / "adapters" / f"step-{step}" / "adapter_model.safetensors"
        ckpt = out / "ckpt" / f"checkpoint-{step}" / "adapter_model.safetensors"
        assert kept.read_bytes() == ckpt.read_bytes()
    # The kept adapter, loaded as --test-at loads it, gives the curve's recorded answers.
    config = DistillConfig.from_dict(
        json.loads((out / "curve_config.json").read_text())["distill"], where="test"
    )
    model, tokenizer = curve.load_point(config, out / "adapters" / "step-1")
    val, _ = curve.validation_sets(config, 1, 1)
    ev = curve.evaluate(model, tokenizer, val, config.train_domains, ())
    recorded = json.loads((out / "evals" / "step-1.json").read_text())["id"]
    assert [e["completion"] for e in ev.examples] == [e["completion"] for e in recorded]
    # ... and holds that step's weights, which differ from the next step's.
    from safetensors.torch import load_file

    kept = [load_file(out / "adapters" / f"step-{n}" / "adapter_model.safetensors") for n in (1, 2)]
    loaded = {k.replace(".default", ""): v for k, v in model.state_dict().items() if "lora_" in k}
    assert set(loaded) == set(kept[0]) and loaded
    assert all(torch.equal(loaded[k], kept[0][k]) for k in loaded)
    assert any(not torch.equal(kept[0][k], kept[1][k]) for k in kept[0])
    # --test-at reads the curve's stored configuration: --name is all it needs.
    assert curve.main(["--name", "tiny", "--test-at", "1", "--eval-batch", "4"]) == 0
    summary = json.loads((out / "test" / "step-1" / "summary.json").read_text())
    ev = json.loads((out / "test" / "step-1" / "eval.json").read_text())
    n_eval = DistillConfig().n_eval_sets  # the run's test split: every domain, n_eval_sets
    assert ev["n_examples"] == n_eval * 6 == len(ev["examples"])
    assert summary["steps"] == 1 and summary["schedule_steps"] == 2
    assert summary["eval"]["lcs"] == ev["lcs"] and set(ev["per_family"]) == {"deduction"}
    row1 = json.loads((out / "curve.jsonl").read_text().splitlines()[1])
    assert summary["train_seconds"] == row1["seconds_per_step"]
    # A step without a point (or without a kept adapter) is refused; nothing is written.
    capsys.readouterr()
    assert curve.main([*_argv(tiny_student), "--test-at", "7"]) == 2
    assert "no point at step 7" in capsys.readouterr().err
    assert not (out / "test" / "step-7").exists()
    for name in ("adapters/step-2", "ckpt/checkpoint-2"):
        import shutil

        shutil.rmtree(out / name)
    assert curve.main([*_argv(tiny_student), "--test-at", "2"]) == 2
    assert "keeps no adapter of step 2 (kept steps: [1])" in capsys.readouterr().err


def test_demo_with_a_student_trains_both_methods_with_the_pretrained_recipe(
    tiny_student, tmp_path, monkeypatch, capsys
):
    """`iga demo --student` trains ERM and IGA with PRETRAINED_RECIPE, the recipe these
    curves default to (shrunk here to run in seconds); --steps still overrides."""
    import iga.distill.cli as distill_cli
    from iga.cli import main as iga_main
    from iga.distill import rundir

    small = {"steps": 1, "batch_sets": 2, "n_sets": 2, "lr": 1e-2, "lora_rank": 2}
    shrink = {"n_eval_sets": 1, "families": ("deduction",)}  # the tiny BPE saw deduction only
    monkeypatch.setattr(distill_cli, "PRETRAINED_RECIPE", {**small, **shrink})
    out = tmp_path / "demo"
    assert iga_main(["demo", "--student", tiny_student, "--out", str(out), "--steps", "2"]) == 0
    for method in ("erm", "iga"):
        stored = json.loads((out / method / rundir.CONFIG_FILE).read_text())
        assert stored["student"] == tiny_student and stored["method"] == method
        assert {k: stored[k] for k in small} == {**small, "steps": 2}
    assert "| erm |" in capsys.readouterr().out and (out / "demo.json").is_file()


def test_a_curve_can_train_on_set_files(curve, tiny_student, tmp_path, capsys):
    """``--sets`` trains on the files' sets (recorded under ``distill``) while the
    validation split is still generated; another file under the same name is refused."""
    from iga.isomers import generate_sets
    from iga.isomers.io import write_sets

    files = []
    for seed in (11, 12):
        files.append(str(tmp_path / f"train-{seed}.jsonl"))
        write_sets(files[-1], generate_sets("deduction", None, 3, seed=seed))
    assert curve.main(_argv(tiny_student, **{"--sets": files[0], "--steps": "1"})) == 0
    stored = json.loads((curve.CURVES / "tiny" / "curve_config.json").read_text())
    assert stored["distill"]["sets"] == [files[0]] and "sets" not in stored["curve"]
    assert _steps(curve.CURVES / "tiny") == [0, 1]
    assert curve.main(_argv(tiny_student, **{"--sets": files[1], "--steps": "1"})) == 2
    assert "holds another configuration" in capsys.readouterr().err


def test_the_committed_curves_still_resume_under_their_names(curve):
    """Adding a flag must not make a committed curve 'another configuration'."""
    from dataclasses import asdict

    root = Path(__file__).resolve().parents[1] / "results" / "pretrained" / "curves"
    for name, extra in (("erm-r16-lr5e-4", []), ("iga-r16-lr5e-4", ["--method", "iga"])):
        stored = json.loads((root / name / "curve_config.json").read_text())
        a = curve.parse(["--name", name, *extra])
        assert {k: v for k, v in vars(a).items() if k in stored["curve"]} == stored["curve"]
        assert set(stored["curve"]) == set(vars(a)) - {
            "eval_every", "eval_at", "eval_batch", "test_at", "sets",
        }  # fmt: skip
        assert asdict(curve.DistillConfig.from_dict(stored["distill"]))["sets"] == ()
