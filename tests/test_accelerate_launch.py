"""``accelerate launch`` of the real ``distill`` pipeline: two processes over gloo on CPU.

The same command runs on GPUs with NCCL (docs/distributed.md). Checked here: the
launch works end to end with the IGA method, the two replicas hold bit-identical
LoRA weights after training (each rank applies the same IGA edit, computed from the
all-reduced per-domain gradients), the base student is built once (the main process
first, the other reads the cache), and the adapter, summary and evaluation are written.
The test starts the processes itself and has a hard timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = """
import hashlib, json, os, sys
import iga.distill.trainer
from iga.distill.run import DistillConfig, distill
from tests.test_distill import TINY

out = sys.argv[1]
train = iga.distill.trainer.IGATrainer.train

def train_and_fingerprint(self, *args, **kwargs):
    result = train(self, *args, **kwargs)
    digest = hashlib.sha256()
    for name, p in sorted(self.model.named_parameters()):
        if p.requires_grad:
            digest.update(name.encode() + p.detach().cpu().numpy().tobytes())
    rank = os.environ["RANK"]
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as f:
        json.dump({"sha": digest.hexdigest(), "world": os.environ["WORLD_SIZE"],
                   "history": self.state.log_history}, f)
    return result

iga.distill.trainer.IGATrainer.train = train_and_fingerprint
summary = distill(DistillConfig(method="iga", out=out, **{**TINY, "steps": 4}), show_progress=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_accelerate_launch_two_processes_stay_identical(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    out, marks = tmp_path / "out", tmp_path / "marks"
    marks.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "IGA_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    # --multi_gpu selects DDP; with no GPU accelerate runs it on CPU over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    cmd += ["--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(_free_port()), str(script), str(out), str(marks)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    ranks = [json.loads((marks / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == ["2", "2"]
    assert ranks[0]["sha"] == ranks[1]["sha"]  # the replicas did not drift apart
    masks = [h["iga/mask_mean"] for h in ranks[0]["history"] if "iga/mask_mean" in h]
    assert masks and all(0.0 < m < 1.0 for m in masks)  # the IGA edit ran (not ERM)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and "eval" in summary
    # Built once: one base folder in the cache, one "Writing model shards" bar.
    assert proc.stderr.count("Writing model shards: 100%") == 1
    assert len(list((tmp_path / "cache" / "base").iterdir())) == 1
