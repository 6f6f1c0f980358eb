"""The benchmark's baselines compute the same IGA step; the command runs end to end."""

from __future__ import annotations

import json

import pytest
import torch

from iga.bench.step import METHODS, BenchConfig, _Runner, format_report, run_bench
from iga.cli import main

TINY = dict(vocab=64, hidden=16, intermediate=24, layers=1, heads=2, kv_heads=1, seq=8, rank=2)


@pytest.mark.parametrize("space", ["full", "factor"])
def test_naive_k_backward_baseline_computes_the_same_step(space):
    """The hook-based step and the K-backward baseline give the same edited gradients."""
    cfg = BenchConfig(**TINY, tau=3.0)
    grads = {}
    for name in (f"iga_{space}", f"naive_{space}"):
        runner = _Runner(cfg, name)
        runner.opt.step = lambda: None  # keep the gradients, skip the update
        runner.step()
        grads[name] = [p.grad.clone() for p in runner.params]
    for a, b in zip(grads[f"iga_{space}"], grads[f"naive_{space}"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_bench_command_writes_a_report(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "step", "--rounds", "2", "--layers", "1", "--seq", "8", "--hidden", "16"]
    args += ["--intermediate", "24", "--vocab", "64", "--json", str(path)]
    assert main(args) == 0
    report = json.loads(path.read_text())
    assert set(report["results"]) == set(METHODS)
    assert {"iga_full_split", "iga_factor_split", "iga_full_ema", "iga_factor_ema"} <= set(METHODS)
    assert report["targets"]["full split time <= 1.1 x full"]["value"] > 0
    for r in report["results"].values():
        assert len(r["times_s"]) == 2 and r["median_s"] > 0 and r["peak_mib"] > 0
    assert "factor time <= 1.2 x ERM" in capsys.readouterr().out
    assert -1.0 <= report["cosine"]["grad factor vs full_svd"] <= 1.0


def test_report_formats_without_memory():
    cfg = BenchConfig(**TINY, rounds=1, warmup=0, methods=["erm", "iga_factor"])
    text = format_report(run_bench(cfg, memory=False))
    assert "iga_factor" in text and "n/a" in text


@pytest.mark.parametrize("space", ["full", "factor"])
def test_a_broken_reference_differs_from_the_step(space):
    """Companion: the reference fed mis-scaled ``L_k`` (not the per-domain token means)
    gives other gradients, so the comparison above can fail."""
    cfg = BenchConfig(**TINY, tau=3.0)
    grads = {}
    for name in (f"iga_{space}", f"naive_{space}"):
        runner = _Runner(cfg, name)
        runner.opt.step = lambda: None
        if name.startswith("naive"):
            terms = runner._loss_terms
            runner._loss_terms = lambda terms=terms: [(k + 1) * t for k, t in enumerate(terms())]
        runner.step()
        grads[name] = torch.cat([p.grad.flatten() for p in runner.params])
    assert not torch.allclose(grads[f"iga_{space}"], grads[f"naive_{space}"], rtol=1e-3, atol=1e-6)


def test_the_reference_is_a_public_name():
    from iga.bench.reference import KBackwardIGA

    assert _Runner(BenchConfig(**TINY), "naive_full").naive.__class__ is KBackwardIGA
