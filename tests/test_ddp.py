"""Two DDP processes over gloo (localhost) == one process on the same global batch.

The test spawns the two ranks itself, with a file rendezvous (no port to race
for) and a hard deadline, so it finishes by itself or fails; it never hangs.
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from iga.core.config import IGAConfig
from iga.core.losses import domain_mean_loss
from tests.test_capture_models import lora_mlp, mse_per_token

K, PER_DOMAIN, TOKENS, STEPS, ACCUM, WORLD = 3, 2, 3, 3, 2, 2
CONFIGS = {
    "full": IGAConfig(tau=5.0, space="full", projection="svd", rank=1, estimator="batch"),
    "factor": IGAConfig(
        tau=5.0, space="factor", mask_target="update", variance="raw", estimator="batch"
    ),
    # The EMA is updated from the all-reduced G_k: identical to one process.
    "ema": IGAConfig(tau=5.0, space="factor", estimator="ema", ema_beta=0.5),
    # Each rank cuts its own examples into halves, so the halves (and V) differ from one
    # process cutting the global batch; the ranks must still agree with each other.
    "split": IGAConfig(tau=5.0, space="full", estimator="split"),
}
SAME_AS_ONE_PROCESS = ("full", "factor", "ema")
DEADLINE_S = 50.0


def _global_batch(step: int, micro: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, ids) with PER_DOMAIN examples of each domain, ids sorted: [0, 0, 1, 1, 2, 2]."""
    g = torch.Generator().manual_seed(1000 * step + micro)
    ids = torch.arange(K).repeat_interleave(PER_DOMAIN)
    x = torch.randn(len(ids), TOKENS, 5, generator=g)
    y = torch.randn(len(ids), TOKENS, 3, generator=g)
    return x, y, ids


def _shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank r takes the r-th example of every domain: equal token counts per domain and rank."""
    return t[rank::world]


def _train(model, iga, opt, rank: int, world: int) -> None:
    from contextlib import nullcontext

    for step in range(STEPS):
        for micro in range(ACCUM):
            x, y, ids = (_shard(t, rank, world) for t in _global_batch(step, micro))
            sync = micro == ACCUM - 1 or not hasattr(model, "no_sync")
            with nullcontext() if sync else model.no_sync():
                iga.set_domains(ids)
                loss = domain_mean_loss(mse_per_token(model, x, y), None, ids, K)
                (loss / ACCUM).backward()
        iga.step(opt, max_grad_norm=1.0)
        opt.zero_grad(set_to_none=True)


def _run(model, config: IGAConfig, rank: int, world: int) -> dict[str, torch.Tensor]:
    from iga.core.step import IGAStep

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    iga = IGAStep(model, config, K)
    _train(model, iga, opt, rank, world)
    iga.remove()
    inner = getattr(model, "module", model)
    return {n: p.detach().clone() for n, p in inner.named_parameters() if p.requires_grad}


def _worker(rank: int, world: int, store: str, out_dir: str, names: tuple[str, ...]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=30),
    )
    try:
        from torch.nn.parallel import DistributedDataParallel as DDP

        results = {}
        for name in names:
            results[name] = _run(DDP(lora_mlp(seed=0)), CONFIGS[name], rank, world)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.skipif(sys.platform == "win32", reason="gloo file rendezvous on Linux/macOS")
@pytest.mark.parametrize("names", [("full", "factor"), ("ema", "split")])
def test_two_ranks_match_one_process_on_the_global_batch(tmp_path, names):
    ctx = mp.start_processes(
        _worker,
        args=(WORLD, str(tmp_path / "store"), str(tmp_path), names),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    start = time.monotonic()
    try:
        while not ctx.join(timeout=1.0):
            if time.monotonic() - start > DEADLINE_S:
                pytest.fail(f"the DDP ranks did not finish within {DEADLINE_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for name in names:
        single = _run(lora_mlp(seed=0), CONFIGS[name], rank=0, world=1)
        initial = {n: p for n, p in lora_mlp(seed=0).named_parameters() if p.requires_grad}
        for pname, expected in single.items():
            assert torch.equal(ranks[0][name][pname], ranks[1][name][pname])  # same update
            if name in SAME_AS_ONE_PROCESS:
                torch.testing.assert_close(ranks[0][name][pname], expected, rtol=1e-5, atol=1e-6)
            assert not torch.equal(expected, initial[pname].detach())
            assert not torch.equal(ranks[0][name][pname], initial[pname].detach())
