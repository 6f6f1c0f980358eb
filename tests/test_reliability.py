"""Issue 18, items 1-9: a run folder is never mixed, clobbered or mislabelled; resume is
checked; KD does what it says; duplicate sets across files are refused.

Every test here failed on the code before the fix (the item number says which
complaint it pins down). Runs are tiny (tests/test_distill.py's TINY settings) and
shared per module: one finished run with evaluation, one interrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from iga.cli import main
from iga.core import configio
from iga.core.config import IGAConfig
from iga.distill import rundir
from iga.distill.pretrain import BaseConfig
from iga.distill.run import DistillConfig, distill
from iga.distill.student import StudentConfig
from tests.test_distill import TINY, TINY_BASE

FAST = {**TINY, "n_eval_sets": 1}


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IGA_CACHE", str(tmp_path_factory.getbasetemp() / "iga-cache"))
        yield


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[DistillConfig, dict]:
    """A finished ERM run (3 steps, evaluated) on the tiny base student."""
    out = tmp_path_factory.mktemp("finished") / "run"
    config = DistillConfig(method="erm", out=str(out), **{**FAST, "steps": 3})
    return config, distill(config, show_progress=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[DistillConfig, dict]:
    """An IGA run of 4 steps, a checkpoint every 2, no evaluation."""
    out = tmp_path_factory.mktemp("full") / "run"
    config = DistillConfig(
        method="iga", out=str(out), evaluate=False, **{**FAST, "steps": 4, "save_steps": 2}
    )
    return config, distill(config, show_progress=False)


@pytest.fixture
def interrupted(uninterrupted, tmp_path) -> DistillConfig:
    """The uninterrupted run as a kill after checkpoint-2 leaves it (no adapter, summary)."""
    config, _ = uninterrupted
    out = tmp_path / "killed"
    shutil.copytree(config.out, out)
    for name in ("adapter", "checkpoint-4"):
        shutil.rmtree(out / name)
    (out / "summary.json").unlink()
    assert rundir.newest_checkpoint(out)[0] == str(out / "checkpoint-2")
    return replace(config, out=str(out))


# ----------------------------------------------------------------------------- item 1
def test_item_1_config_round_trips_through_dict_with_every_nested_config():
    config = DistillConfig(
        method="erm",
        families=("rules",),
        base=replace(TINY_BASE, with_rationales=True, student=replace(TINY_BASE.student, seed=3)),
    )
    data = json.loads(json.dumps(config.to_dict()))  # what distill_config.json holds
    back = DistillConfig.from_dict(data)
    assert back == config and back.base == config.base and back.base.student.seed == 3
    assert isinstance(back.base.student, StudentConfig) and isinstance(back.families, tuple)
    # The broken companion: the old reader dropped `base`, giving the default student.
    dropped = DistillConfig(**{k: v for k, v in back.__dict__.items() if k != "base"})
    assert dropped != config and dropped.base == BaseConfig()
    with pytest.raises(configio.ConfigFileError, match=r"cfg\.base\.student: unknown key"):
        DistillConfig.from_dict({**data, "base": {**data["base"], "student": {"x": 1}}}, "cfg")
    with pytest.raises(configio.ConfigFileError, match=r"cfg\.steps: 'three'"):
        DistillConfig.from_dict({**data, "steps": "three"}, "cfg")


@dataclass
class NestedRun:
    """A config holding the method's config, as DistillConfig will (``iga: IGAConfig``)."""

    iga: IGAConfig = field(default_factory=IGAConfig)
    base: BaseConfig = field(default_factory=BaseConfig)
    name: str | None = None


def test_item_1_round_trip_is_generic_over_nested_dataclasses():
    # A future `iga: IGAConfig` field works unchanged: nested dataclasses are found by type.
    Run = NestedRun
    run = Run(iga=IGAConfig(tau=2.0, rank=3), base=TINY_BASE, name="x")
    assert configio.from_dict(Run, configio.to_dict(run)) == run
    assert isinstance(configio.from_dict(Run, configio.to_dict(run)).iga, IGAConfig)


def test_item_1_eval_scores_the_student_the_run_was_trained_on(finished, tmp_path, monkeypatch):
    config, summary = finished
    import iga.distill.run as run_module

    real = run_module.load_or_build_base

    def only_the_runs_base(base, show_progress=True):
        assert base == TINY_BASE, f"iga eval rebuilt another base student: {base}"
        return real(base, show_progress)

    monkeypatch.setattr(run_module, "load_or_build_base", only_the_runs_base)
    report = tmp_path / "eval.json"
    assert main(["eval", config.out, "--json", str(report)]) == 0
    again = json.loads(report.read_text())
    for key in ("accuracy", "accuracy_id", "accuracy_ood", "lcs", "answer_consistency"):
        assert again[key] == summary["eval"][key], key


def test_item_1_eval_refuses_a_folder_whose_summary_names_another_student(
    finished, tmp_path, capsys
):
    config, _ = finished
    run = tmp_path / "mixed"
    shutil.copytree(config.out, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "base_key": "0123456789abcdef"}))
    before = snapshot(run)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert "0123456789abcdef" in err and "distill_config.json" in err and "Traceback" not in err
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- item 2
_HOLD = """
import sys, time
from iga.distill.rundir import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_item_2_a_second_writer_is_refused_and_named(tmp_path, capsys):
    out = tmp_path / "run"
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"}
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(out)
        config = DistillConfig(method="erm", out=str(out), evaluate=False, **{**FAST, "steps": 2})
        with pytest.raises(rundir.RunFolderError, match=f"being written by process {holder.pid}"):
            distill(config, show_progress=False)
        assert snapshot(out) == before  # nothing written beside the holder's lock
    finally:
        holder.kill()
        holder.wait()
    # The kernel dropped the dead holder's lock: the folder is free again.
    with rundir.RunLock(out):
        assert "process" in (out / rundir.LOCK_FILE).read_text()
    assert not (out / rundir.LOCK_FILE).exists()


def test_lock_leaves_no_trace_when_the_run_fails_before_writing(tmp_path):
    out = tmp_path / "a" / "b"
    with pytest.raises(ValueError, match="rank"):
        distill(DistillConfig(out=str(out), **{**FAST, "lora_rank": 999}), show_progress=False)
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- item 3
def test_item_3_resuming_a_finished_run_is_a_no_op(finished, capsys):
    config, summary = finished
    before = snapshot(Path(config.out))
    again = distill(config, resume=True, show_progress=False)
    assert again["already_finished"] and again["steps"] == 3 == summary["steps"]
    assert again["train_loss"] == summary["train_loss"]
    assert snapshot(Path(config.out)) == before


# ----------------------------------------------------------------------------- items 4-6
def test_item_4_resume_with_other_flags_is_an_error_listing_them(interrupted, capsys):
    before = snapshot(Path(interrupted.out))
    flags = ["distill", "--resume", "--out", interrupted.out, "--method", "erm"]
    assert main([*flags, "--families", "rules"]) == 2
    err = capsys.readouterr().err
    assert "method: stored 'iga', given 'erm'" in err and "families" in err
    assert "Traceback" not in err
    assert snapshot(Path(interrupted.out)) == before
    with pytest.raises(rundir.RunFolderError, match="lora_rank: stored 4, given 2"):
        distill(replace(interrupted, lora_rank=2), resume=True, show_progress=False)


def test_item_5_failed_resume_leaves_the_stored_config(interrupted, capsys):
    before = snapshot(Path(interrupted.out))
    assert main(["distill", "--resume", "--out", interrupted.out, "--lr", "-1"]) == 2
    assert "--lr must be a finite number > 0" in capsys.readouterr().err
    assert main(["distill", "--resume", "--out", interrupted.out, "--lr", "0.01"]) == 2
    assert "lr: stored 0.03, given 0.01" in capsys.readouterr().err
    assert snapshot(Path(interrupted.out)) == before


def test_item_6_a_fresh_run_never_deletes_an_interrupted_runs_checkpoints(interrupted):
    before = snapshot(Path(interrupted.out))
    with pytest.raises(rundir.RunFolderError, match=r"interrupted run \(checkpoint-2\)"):
        distill(interrupted, show_progress=False)
    assert snapshot(Path(interrupted.out)) == before


# ----------------------------------------------------------------------------- item 8
def test_item_8_summary_after_resume_reports_the_whole_run(uninterrupted, interrupted):
    _, full = uninterrupted
    clock_at_2 = rundir_seconds(Path(interrupted.out) / "checkpoint-2")
    resumed = distill(interrupted, resume=True, show_progress=False)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    assert resumed["session_steps"] == 2
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-5, abs=1e-6)
    # The clock starts at the checkpoint's time and adds this session's training only.
    assert 0 < clock_at_2 < resumed["train_seconds"] <= clock_at_2 + resumed["session_seconds"]
    assert resumed["seconds_per_step"] == pytest.approx(resumed["train_seconds"] / 4)


def test_a_run_killed_after_its_last_checkpoint_resumes_without_an_extra_step(
    uninterrupted, tmp_path
):
    # Killed between checkpoint-4 (the last step) and its adapter and summary: HF's
    # Trainer resumed at max_steps would train step 5; the run must end as it would have.
    config, full = uninterrupted
    out = tmp_path / "killed-at-the-end"
    shutil.copytree(config.out, out)
    shutil.rmtree(out / "adapter")
    (out / "summary.json").unlink()
    resumed = distill(replace(config, out=str(out)), resume=True, show_progress=False)
    assert resumed["steps"] == 4 and resumed["session_steps"] == 0
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-6)
    assert not (out / "checkpoint-5").exists()
    adapter = "adapter/adapter_model.safetensors"
    a, b = load_file(Path(config.out) / adapter), load_file(out / adapter)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_the_command_line_takes_the_stored_flags(interrupted, capsys):
    # `iga distill --resume --out RUN` continues RUN as it was started (its tiny base and
    # sizes are not the defaults), and a second --resume is then a no-op that says so.
    assert main(["distill", "--resume", "--out", interrupted.out]) == 0
    summary = json.loads((Path(interrupted.out) / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["base_key"] == TINY_BASE.key()
    assert summary["method"] == "iga" and summary["resumed_from"].endswith("checkpoint-2")
    capsys.readouterr()
    before = snapshot(Path(interrupted.out))
    assert main(["distill", "--resume", "--out", interrupted.out]) == 0
    assert "already holds a finished run; nothing to do" in capsys.readouterr().out
    assert snapshot(Path(interrupted.out)) == before


def rundir_seconds(checkpoint: Path) -> float:
    from iga.distill.runclock import RunClock

    return RunClock.stored_seconds(str(checkpoint))


def test_whole_run_loss_weighs_each_logging_window_by_its_steps():
    history = [{"loss": 2.0, "step": 2}, {"loss": 1.0, "step": 4}, {"loss": 9.0, "step": 6}]
    # steps 1-2 mean 2, steps 3-4 mean 1, this session's steps 5-8 mean 0.5
    assert rundir.whole_run_loss(history, 4, 0.5, 8) == pytest.approx((4 + 2 + 2) / 8)
    with pytest.raises(RuntimeError, match="logging_steps must divide"):
        rundir.whole_run_loss(history, 3, 0.5, 8)


def test_a_broken_newest_checkpoint_falls_back_to_the_previous_one(uninterrupted, tmp_path):
    config, _ = uninterrupted
    out = tmp_path / "run"
    shutil.copytree(config.out, out)
    (out / "checkpoint-4" / "adapter_model.safetensors").write_bytes(b"\x00garbage")
    path, notes = rundir.newest_checkpoint(out)
    assert path == str(out / "checkpoint-2")
    assert "checkpoint-4" in notes[0] and "adapter_model.safetensors" in notes[0]
    # Resumed from checkpoint-2, the run reaches the uninterrupted run's weights.
    killed = tmp_path / "killed"
    shutil.copytree(out, killed)
    shutil.rmtree(killed / "adapter")
    (killed / "summary.json").unlink()
    resumed = distill(replace(config, out=str(killed)), resume=True, show_progress=False)
    assert resumed["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    a = load_file(Path(config.out) / "adapter" / "adapter_model.safetensors")
    b = load_file(killed / "adapter" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7)
    (out / "checkpoint-2" / "trainer_state.json").write_text("{not json")
    with pytest.raises(rundir.RunFolderError, match=r"checkpoint-4.*adapter_model"):
        rundir.newest_checkpoint(out)


# ----------------------------------------------------------------------------- item 7
def _teacher_folder(tmp_path: Path, tokenizer, seed: int) -> Path:
    """A tiny HF causal LM sharing the tiny student's tokenizer, saved as a local folder."""
    from iga.distill.student import build_default_student

    folder = tmp_path / f"teacher-{seed}"
    model = build_default_student(tokenizer, replace(TINY_BASE.student, seed=seed))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _direct_loss(logits, teacher_logits, labels, domain_ids, k, w, temperature=1.0):
    """(1 - w) * mean_k CE_k + w * mean_k KD_k, written out with loops (an oracle)."""
    logp = torch.log_softmax(logits[:, :-1].double(), -1)  # (B, T-1, V)
    logq = torch.log_softmax(teacher_logits[:, :-1].double() / temperature, -1)
    logp_t = torch.log_softmax(logits[:, :-1].double() / temperature, -1)
    ce_sum, kd_sum, n = [0.0] * k, [0.0] * k, [0] * k
    for b in range(labels.shape[0]):
        d = int(domain_ids[b])
        for t in range(labels.shape[1] - 1):
            target = int(labels[b, t + 1])
            if target == -100:
                continue
            ce_sum[d] = ce_sum[d] - logp[b, t, target]
            kl = (logq[b, t].exp() * (logq[b, t] - logp_t[b, t])).sum() * temperature**2
            kd_sum[d] = kd_sum[d] + kl
            n[d] += 1
    ce = sum(ce_sum[d] / max(n[d], 1) for d in range(k)) / k
    kd = sum(kd_sum[d] / max(n[d], 1) for d in range(k)) / k
    return (1 - w) * ce + w * kd


def test_item_7_kd_weight_passes_the_teacher_and_adds_the_kd_term(tmp_path, monkeypatch):
    import iga.distill.teacher_hf as teacher_hf
    from iga.distill.pretrain import load_or_build_base
    from iga.distill.trainer import IGATrainer

    _, tokenizer, _ = load_or_build_base(TINY_BASE, show_progress=False)
    teacher = _teacher_folder(tmp_path, tokenizer, seed=7)
    # The HF teacher's own rationales are not under test: keep the symbolic ones.
    monkeypatch.setattr(teacher_hf, "teacher_rationales", lambda t, sets, *a, **k: list(sets))
    built = []

    class Recording(IGATrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr("iga.distill.trainer.IGATrainer", Recording)
    common = {**FAST, "steps": 2}
    summaries = {}
    for w in (0.0, 0.5):
        config = DistillConfig(
            method="erm",
            out=str(tmp_path / f"kd{w}"),
            evaluate=False,
            teacher=str(teacher),
            kd_weight=w,
            **common,
        )
        summaries[w] = distill(config, show_progress=False)
    plain, kd = built
    assert plain.teacher_model is None and kd.teacher_model is not None
    assert summaries[0.5]["train_loss"] != summaries[0.0]["train_loss"]

    # The loss the trainer optimises equals the direct computation, and so do its gradients.
    batch = kd.data_collator([kd.train_dataset[i] for i in range(2)])
    model = kd.model
    model.train()
    k = kd.num_domains

    def trainer_loss(trainer):
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads

    loss_kd, grads_kd = trainer_loss(kd)
    model.zero_grad()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logits = model(**inputs).logits
    with torch.no_grad():
        teacher_logits = kd.teacher_model(**inputs).logits
    direct = _direct_loss(logits, teacher_logits, batch["labels"], batch["domain_ids"], k, 0.5)
    direct.backward()
    torch.testing.assert_close(loss_kd.double(), direct.detach(), rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(grads_kd[name], p.grad, rtol=1e-4, atol=1e-6)
    kd.args.kd_weight = 0.0  # the companion: without the KD term, other loss and gradients
    loss_ce, grads_ce = trainer_loss(kd)
    assert abs(float(loss_ce) - float(loss_kd)) > 1e-3
    assert any(not torch.allclose(grads_ce[n], grads_kd[n]) for n in grads_kd)


def test_item_7_kd_without_a_vocabulary_sharing_teacher_is_an_error(tmp_path, capsys):
    from iga.distill.student import train_tokenizer

    with pytest.raises(ValueError, match="--kd-weight 0.5 needs --teacher"):
        DistillConfig(kd_weight=0.5)
    assert main(["distill", "--kd-weight", "0.5", "--out", str(tmp_path / "r")]) == 2
    assert "--teacher" in capsys.readouterr().err and not (tmp_path / "r").exists()
    other = train_tokenizer(["a completely different corpus of words"] * 20, 300)
    teacher = _teacher_folder(tmp_path, other, seed=1)
    config = DistillConfig(
        out=str(tmp_path / "run"), teacher=str(teacher), kd_weight=0.5, **{**FAST, "steps": 1}
    )
    import iga.distill.teacher_hf as teacher_hf

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(teacher_hf, "teacher_rationales", lambda t, sets, *a, **k: list(sets))
        with pytest.raises(ValueError, match="sharing the student's vocabulary.*tokens"):
            distill(config, show_progress=False)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- item 9
def test_item_9_the_same_sets_twice_across_files_is_an_error_naming_both(tmp_path, capsys):
    from iga.isomers import generate_sets, write_sets

    domains = ["mathematics", "law", "medicine", "science", "cooking", "sports"]
    sets = generate_sets("deduction", domains, 3, seed=0)
    a, b = write_sets(tmp_path / "a.jsonl", sets[:2]), write_sets(tmp_path / "b.jsonl", sets[1:])
    out = tmp_path / "run"
    assert main(["distill", "--sets", f"{a},{a}", "--out", str(out), "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert f"at {a}:1 and {a}:1" in err and "Traceback" not in err
    assert main(["distill", "--sets", f"{a},{b}", "--out", str(out), "--no-eval"]) == 2
    assert f"at {a}:2 and {b}:1" in capsys.readouterr().err
    assert not out.exists()
    from iga.distill.run import load_training_sets

    config = DistillConfig(sets=(str(a), str(tmp_path / "c.jsonl")))
    write_sets(tmp_path / "c.jsonl", sets[2:])
    assert len(load_training_sets(config)) == 3  # the valid companion: distinct sets load


def test_dataclass_fields_of_distill_config_all_round_trip():
    # Every field survives, including the ones a nested config might add later.
    config = DistillConfig()
    assert set(config.to_dict()) == {f.name for f in dataclasses.fields(DistillConfig)}
    assert DistillConfig.from_dict(config.to_dict()) == config
