"""One training contract (iga/distill/schedule.py): ``iga distill`` and the empirical loop train
alike. The schedule equals transformers' cosine schedule, the batches equal the Trainer's data
order, and ERM for N steps through ``IGATrainer`` equals ERM through the empirical loop on the
tiny student. Each check has a companion: the loop as it was before the contract (warm-up one
step ahead, batches across epoch ends) must fail it."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup

import empirical.execute as execute_mod
import empirical.methods.base as base_mod
from empirical.execute import train_loop
from empirical.methods import make_method
from iga.distill.data import IsomerCollator, IsomerDataset
from iga.distill.pretrain import load_or_build_base
from iga.distill.run import DistillConfig, training_arguments
from iga.distill.schedule import batch_indices, lr_factor, warmup_steps
from iga.distill.student import attach_lora
from iga.distill.trainer import IGATrainer
from iga.isomers import generate_sets
from tests.test_empirical_methods import TINY_BASE

DOMAINS = ("mathematics", "law")
N_SETS, BATCH_SETS, STEPS, LR, RANK, SEED = 5, 2, 7, 1e-2, 2, 3  # 3 epochs, partial batches


def _old_factor(step: int, warmup: int, total: int) -> float:
    """The empirical loop's factor before the contract: warm-up one step ahead."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _old_batches(n_items: int, batch_size: int, steps: int, seed: int):
    """The empirical loop's batches before the contract: one stream, across epoch ends."""
    g = torch.Generator().manual_seed(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order += torch.randperm(n_items, generator=g).tolist()
        chosen, order = order[:batch_size], order[batch_size:]
        yield chosen


def _schedule_mismatches(factor, total: int) -> list[int]:
    """Steps at which ``factor`` differs from transformers' "cosine" with our warm-up."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_cosine_schedule_with_warmup(opt, warmup_steps(total), total).lr_lambdas[0]
    w = warmup_steps(total)
    return [s for s in range(total + 1) if not math.isclose(factor(s, w, total), hf(s))]


@pytest.mark.parametrize("total", [1, 2, 7, 20, 41, 300])
def test_schedule_is_transformers_cosine_with_the_distill_warmup(total):
    assert _schedule_mismatches(lr_factor, total) == []
    assert _schedule_mismatches(_old_factor, total) != []  # companion: the old loop fails
    args = training_arguments(DistillConfig(steps=total, out="unused"))
    assert args.lr_scheduler_type == "cosine" and args.warmup_steps == warmup_steps(total)


def test_batch_indices_cover_every_set_once_per_epoch():
    batches = list(batch_indices(N_SETS, BATCH_SETS, STEPS, SEED))
    assert [len(b) for b in batches] == [2, 2, 1, 2, 2, 1, 2]
    epochs = [sum(batches[0:3], []), sum(batches[3:6], [])]
    assert all(sorted(e) == list(range(N_SETS)) for e in epochs) and epochs[0] != epochs[1]
    with pytest.raises(ValueError, match="batch_size >= 1"):
        list(batch_indices(N_SETS, 0, 1, SEED))


class _Recording(IsomerCollator):
    """The Trainer's collator, noting which sets (by index) each batch holds."""

    def __init__(self, pad_token_id: int, items: list) -> None:
        super().__init__(pad_token_id)
        self.index = {id(item): i for i, item in enumerate(items)}
        self.seen: list[list[int]] = []

    def __call__(self, sets):
        self.seen.append([self.index[id(s)] for s in sets])
        return super().__call__(sets)


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """ERM for STEPS steps through IGATrainer (the ``iga distill`` path) on the tiny student."""
    mp = pytest.MonkeyPatch()
    mp.setenv("IGA_CACHE", str(tmp_path_factory.mktemp("iga-cache")))
    base, tokenizer, _ = load_or_build_base(TINY_BASE, show_progress=False)
    mp.undo()
    sets = generate_sets("arithmetic", DOMAINS, N_SETS, seed=SEED)
    dataset = IsomerDataset(sets, DOMAINS, tokenizer, 512)
    config = DistillConfig(
        method="erm",
        out=str(tmp_path_factory.mktemp("distill")),
        train_domains=DOMAINS,
        steps=STEPS,
        batch_sets=BATCH_SETS,
        lr=LR,
        lora_rank=RANK,
        seed=SEED,
        save_steps=1000,
        base=TINY_BASE,
    )
    args = training_arguments(config)
    args.disable_tqdm = True
    model = attach_lora(copy.deepcopy(base), RANK, config.lora_targets, seed=SEED)
    collate = _Recording(tokenizer.pad_token_id, dataset.items)
    trainer = IGATrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collate, num_domains=2
    )
    trainer.train()
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return base, dataset, collate, lora, config


def _empirical_erm(distilled) -> dict[str, torch.Tensor]:
    """ERM for STEPS steps through the empirical loop, from the same base, LoRA and seed."""
    base, dataset, collate, _, config = distilled
    model = attach_lora(copy.deepcopy(base), RANK, config.lora_targets, seed=SEED)
    method = make_method("erm", model, 2, {"lr": LR, "lora_rank": RANK}, STEPS, seed=SEED)
    plain = IsomerCollator(collate.pad_token_id)
    train_loop(method, dataset, plain, STEPS, BATCH_SETS, SEED)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[n] - b[n]).abs().max()) for n in a)


def test_trainer_data_order_is_the_contracts(distilled):
    _, _, collate, _, _ = distilled
    # accelerate's loader collates one batch ahead (to know the epoch's end): only the first
    # STEPS batches were trained on.
    trained_on = collate.seen[:STEPS]
    assert len(collate.seen) >= STEPS
    assert trained_on == list(batch_indices(N_SETS, BATCH_SETS, STEPS, SEED))
    assert trained_on != list(_old_batches(N_SETS, BATCH_SETS, STEPS, SEED))  # companion


# Adam divides by sqrt(v): the float-level differences between the Trainer's batch (rows in
# set order) and the loop's (rows grouped by domain) stay ~1e-7 on parameters of size ~1e-2.
TOLERANCE = 1e-5


def test_erm_through_igatrainer_equals_erm_through_the_empirical_loop(distilled):
    trained = distilled[3]
    # peft starts B at 0: the run really trained (measured: max |B| 0.035, difference 3e-8).
    assert max(float(p.abs().max()) for n, p in trained.items() if "lora_B" in n) > LR
    assert _max_difference(trained, _empirical_erm(distilled)) < TOLERANCE


def test_the_loop_before_the_contract_fails_the_equivalence(distilled, monkeypatch):
    """Companions: the old warm-up alone, and the old batching alone, each break it
    (measured: 0.042 and 0.025 apart, against 3e-8 for the contract)."""
    trained = distilled[3]
    old = lambda opt, total: torch.optim.lr_scheduler.LambdaLR(  # noqa: E731
        opt, lambda s: _old_factor(s, warmup_steps(total), total)
    )
    with monkeypatch.context() as m:
        m.setattr(base_mod, "cosine_with_warmup", old)
        assert _max_difference(trained, _empirical_erm(distilled)) > 100 * TOLERANCE
    with monkeypatch.context() as m:
        m.setattr(execute_mod, "batch_indices", _old_batches)
        assert _max_difference(trained, _empirical_erm(distilled)) > 100 * TOLERANCE
