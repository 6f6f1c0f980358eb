"""``iga distill --estimator``: the EMA state travels in checkpoints; resume restores it."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from iga.core.config import IGAConfig
from iga.distill.run import DistillConfig, distill
from iga.distill.trainer import IGA_STATE_NAME
from tests.test_distill import TINY, _cache  # noqa: F401  (the fixture isolates the cache)


def _config(out, estimator: str) -> DistillConfig:
    return DistillConfig(
        method="iga",
        out=str(out),
        evaluate=False,
        iga=IGAConfig(estimator=estimator, ema_beta=0.5),
        **{**TINY, "steps": 4, "save_steps": 2},
    )


def _rewind(out) -> None:
    """Back to checkpoint-2, as if the run had been killed after it."""
    shutil.rmtree(out / "checkpoint-4")
    shutil.rmtree(out / "adapter")
    (out / "summary.json").unlink()


def test_ema_resume_restores_the_averages_and_refuses_a_checkpoint_without_them(tmp_path):
    out = tmp_path / "run"
    distill(_config(out, "ema"), show_progress=False)
    state = torch.load(out / "checkpoint-2" / IGA_STATE_NAME, weights_only=True)
    assert state["steps"] == 2 and state["estimator"]["averages"]
    assert state["estimator"]["counts"] and set(state["estimator"]["counts"].values()) == {2}
    straight = load_file(out / "adapter" / "adapter_model.safetensors")
    saved = json.loads((out / "distill_config.json").read_text())
    assert saved["iga"]["estimator"] == "ema"
    _rewind(out)
    distill(_config(out, "ema"), resume=True, show_progress=False)
    resumed = load_file(out / "adapter" / "adapter_model.safetensors")
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-5, atol=1e-7)
    _rewind(out)
    (out / "checkpoint-2" / IGA_STATE_NAME).unlink()
    with pytest.raises(ValueError, match=r"checkpoint-2/iga_state.pt.*no EMA state"):
        distill(_config(out, "ema"), resume=True, show_progress=False)


def test_split_runs_through_the_pipeline_and_logs_its_diagnostics(tmp_path):
    out = tmp_path / "split"
    distill(_config(out, "split"), show_progress=False)
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    logged = [h for h in state["log_history"] if "iga/mask_mean" in h]
    assert logged
    for key in ("iga/mask_below_half", "iga/noise_mask", "iga/snr"):
        assert key in logged[-1], key
