"""End-to-end distillation on a tiny built-in student (seconds on CPU)."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from iga.core.config import IGAConfig
from iga.core.losses import completion_token_losses, domain_mean_loss
from iga.distill.data import IsomerCollator, IsomerDataset
from iga.distill.pretrain import BaseConfig
from iga.distill.run import DistillConfig, distill, load_student_base, load_training_sets
from iga.distill.rundir import RunFolderError
from iga.distill.student import StudentConfig

TINY_BASE = BaseConfig(
    student=StudentConfig(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=128,
        num_layers=1,
        max_length=512,
        num_heads=2,
    ),
    sets_per_family=4,
    n_facts=100,
    steps=40,
    lr=1e-2,
)
TINY = dict(
    families=("arithmetic", "deduction"),
    n_sets=8,
    n_eval_sets=2,
    steps=12,
    batch_sets=2,
    lr=3e-2,
    lora_rank=4,
    save_steps=4,
    max_length=512,
    base=TINY_BASE,
)


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("IGA_CACHE", str(tmp_path_factory.getbasetemp() / "iga-cache"))


def _training_loss(config: DistillConfig, adapter: Path | None) -> float:
    """The training objective on all training sets, with or without the adapter."""
    model, tokenizer = load_student_base(config, show_progress=False)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    data = IsomerDataset(load_training_sets(config), config.train_domains, tokenizer, 512)
    batch = IsomerCollator(tokenizer.pad_token_id)([data[i] for i in range(len(data))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce, mask = completion_token_losses(logits, batch["labels"])
    return float(domain_mean_loss(ce, mask, batch["domain_ids"], len(config.train_domains)))


@pytest.mark.parametrize("method", ["erm", "iga"])
def test_tiny_distillation_improves_loss(tmp_path, method):
    config = DistillConfig(method=method, out=str(tmp_path / method), **TINY)
    summary = distill(config, show_progress=False)
    assert summary["steps"] == 12
    # space="auto" (the default) is full space for the tiny student; ERM has no IGA step.
    assert summary.get("iga_space") == ("full" if method == "iga" else None)
    before = _training_loss(config, None)
    after = _training_loss(config, tmp_path / method / "adapter")
    assert after < before - 0.02, (before, after)
    ev = summary["eval"]
    assert 0 <= ev["accuracy_id"] <= 1 and ev["lcs"] >= 0
    assert set(ev["per_domain"]) == {
        "mathematics",
        "law",
        "medicine",
        "science",
        "cooking",
        "sports",
    }


def test_iga_differs_from_erm_only_in_the_step(tmp_path):
    """tau = 0 and no projection: IGA's run equals ERM's (same data, model, loss)."""
    common = {**TINY, "steps": 4}
    erm = DistillConfig(method="erm", out=str(tmp_path / "erm"), evaluate=False, **common)
    iga = DistillConfig(
        method="iga",
        out=str(tmp_path / "iga"),
        evaluate=False,
        iga=IGAConfig(tau=0.0, projection="none"),
        **common,
    )
    distill(erm, show_progress=False)
    distill(iga, show_progress=False)
    a = load_file(tmp_path / "erm" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "iga" / "adapter" / "adapter_model.safetensors")
    # Adam divides by sqrt(v): float-level differences between mean_k G_k and autograd's
    # sum (~1e-7) can move a near-zero coordinate by a small fraction of one step (lr 3e-2).
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4)


# The subprocess runs the real pipeline on the same tiny configuration.
_RUN = """
import sys
from peft import PeftModel

from iga.core.losses import domain_mean_loss
from iga.distill.data import IsomerCollator, IsomerDataset
from iga.distill.run import DistillConfig, distill, load_student_base, load_training_sets
from tests.test_distill import TINY
config = DistillConfig(method="iga", out=sys.argv[1], evaluate=False, **{**TINY, "save_steps": 2})
distill(config, resume=sys.argv[2] == "resume", show_progress=False)
"""


def _run(out: Path, mode: str) -> list[str]:
    return [sys.executable, "-c", _RUN, str(out), mode]


def test_kill_and_resume_reproduces_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    full = tmp_path / "full"
    subprocess.run(_run(full, "fresh"), env=env, check=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_run(killed, "fresh"), env=env)
    deadline = time.time() + 240
    while not (killed / "checkpoint-6" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "adapter").exists()
    subprocess.run(_run(killed, "resume"), env=env, check=True, timeout=300)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["resumed_from"] is not None
    a = load_file(full / "adapter" / "adapter_model.safetensors")
    b = load_file(killed / "adapter" / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)


def test_bad_inputs_get_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="at least two training domains"):
        DistillConfig(train_domains=("law",))
    with pytest.raises(ValueError, match="unknown method"):
        DistillConfig(method="sgd")
    with pytest.raises(ValueError, match="tau"):
        distill(
            DistillConfig(out=str(tmp_path / "t"), iga=IGAConfig(tau=-1.0), **TINY),
            show_progress=False,
        )
    with pytest.raises(ValueError, match="rank"):
        distill(
            DistillConfig(out=str(tmp_path / "r"), **{**TINY, "lora_rank": 999}),
            show_progress=False,
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"not": "a set"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        distill(
            DistillConfig(out=str(tmp_path / "b"), sets=(str(bad),), **TINY), show_progress=False
        )


def test_finished_run_is_not_overwritten(tmp_path):
    config = DistillConfig(
        method="erm", out=str(tmp_path / "run"), evaluate=False, **{**TINY, "steps": 2}
    )
    distill(config, show_progress=False)
    before = (tmp_path / "run" / "summary.json").read_text()
    with pytest.raises(RunFolderError, match="--resume"):
        distill(config, show_progress=False)
    assert (tmp_path / "run" / "summary.json").read_text() == before


def test_bad_flag_on_resume_loses_nothing(tmp_path):
    config = DistillConfig(
        method="erm", out=str(tmp_path / "run"), evaluate=False, **{**TINY, "steps": 2}
    )
    distill(config, show_progress=False)
    files = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="rank"):
        distill(replace(config, lora_rank=999), resume=True, show_progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == files


def test_base_phase_flags_reach_the_base_config(tmp_path, capsys):
    from iga.cli import main
    from iga.distill.cli import add_distill_flags, config_from_args

    p = argparse.ArgumentParser()
    add_distill_flags(p)
    assert config_from_args(p.parse_args([])).base == BaseConfig()
    flags = ["--base-steps", "7", "--base-sets", "11", "--base-facts", "0", "--base-rationales"]
    base = config_from_args(p.parse_args(flags)).base
    assert (base.steps, base.sets_per_family, base.n_facts) == (7, 11, 0)
    assert base.with_rationales
    assert base.key() != BaseConfig().key()  # a different cache entry, never a reused one
    with pytest.raises(ValueError, match="--base-sets"):
        config_from_args(p.parse_args(["--base-sets", "0"]))
    assert main(["distill", "--base-facts", "-1", "--out", str(tmp_path / "run")]) == 2
    assert "--base-facts" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_base_corpus_holds_rationales_only_when_asked_and_never_a_heldout_domain():
    from iga.distill.pretrain import base_corpus
    from iga.isomers import DEFAULT_HELDOUT_DOMAINS, DEFAULT_TRAIN_DOMAINS
    from iga.isomers.domains import get_domain, lexicon_words

    plain = base_corpus(BaseConfig(sets_per_family=3, n_facts=5))
    worked = base_corpus(BaseConfig(sets_per_family=3, n_facts=5, with_rationales=True))
    assert len(plain) == len(worked)  # the same documents, each with or without its rationale
    assert not any("Answer:" in t for t in plain)
    assert sum("Answer:" in t for t in worked) == len(worked) - 5  # every prompt but the facts

    def words(domains, part):
        text = json.dumps([getattr(get_domain(d), part) for d in domains]).lower()
        return set(re.findall(r"[a-z]+", text))

    heldout_only = (
        set().union(*(lexicon_words(get_domain(d)) for d in DEFAULT_HELDOUT_DOMAINS))
        - words(DEFAULT_TRAIN_DOMAINS, "lexicon")
        - words(DEFAULT_TRAIN_DOMAINS, "templates")  # e.g. "left": a training template's word
    )
    corpus_words = set(re.findall(r"[a-z]+", " ".join(worked).lower()))
    assert len(heldout_only) > 50 and not corpus_words & heldout_only
