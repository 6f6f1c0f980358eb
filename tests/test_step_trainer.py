"""IGAStep inside ``transformers.Trainer`` (via its callback) == the same step in a plain loop."""

from __future__ import annotations

import pytest
import torch

from iga.core.config import IGAConfig
from iga.core.losses import domain_mean_loss
from iga.core.step import IGAStep
from tests.test_capture_models import assert_rel_close, lm_per_token, tiny_llama

transformers = pytest.importorskip("transformers")

# SGD, not Adam: Adam is nearly invariant to the clipping scale, so it would hide a wrong clip.
K, BATCH, ACCUM, STEPS, CLIP, LR = 2, 4, 2, 3, 0.02, 0.5


def _dataset() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(BATCH * ACCUM * STEPS):
        tokens = torch.randint(0, 64, (6,), generator=g)
        rows.append({"input_ids": tokens, "domain_ids": torch.tensor(i % K)})
    return rows


class _DomainTrainer(transformers.Trainer):
    """What an IGA trainer does: per-domain mean loss, domain ids handed to the capture."""

    loss_is_scaled_for_ga = False  # let the Trainer divide by the accumulation steps

    def __init__(self, *args, iga_step: IGAStep, **kwargs):
        super().__init__(*args, **kwargs)
        self.iga_step = iga_step

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ids = inputs["domain_ids"]
        self.iga_step.set_domains(ids)
        return domain_mean_loss(lm_per_token(model, inputs["input_ids"]), None, ids, K)

    def _get_train_sampler(self, train_dataset=None):
        return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)


def _plain_loop(config: IGAConfig) -> dict[str, torch.Tensor]:
    model = tiny_llama(seed=0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9)
    iga = IGAStep(model, config, K)
    rows = _dataset()
    for t in range(STEPS):
        for m in range(ACCUM):
            start = (t * ACCUM + m) * BATCH
            batch = rows[start : start + BATCH]
            tokens = torch.stack([r["input_ids"] for r in batch])
            ids = torch.stack([r["domain_ids"] for r in batch])
            iga.set_domains(ids)
            (domain_mean_loss(lm_per_token(model, tokens), None, ids, K) / ACCUM).backward()
        stats = iga.step(opt, max_grad_norm=CLIP)
        assert stats["grad_norm"] > 2 * CLIP  # the clip is active
        opt.zero_grad(set_to_none=True)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("space,mask_target", [("full", "gradient"), ("factor", "update")])
def test_trainer_callback_matches_the_plain_loop(tmp_path, space, mask_target):
    config = IGAConfig(tau=5.0, space=space, mask_target=mask_target, estimator="batch")
    model = tiny_llama(seed=0)
    iga = IGAStep(model, config, K)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=BATCH,
        gradient_accumulation_steps=ACCUM,
        max_steps=STEPS,
        max_grad_norm=CLIP,
        lr_scheduler_type="constant",
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = _DomainTrainer(
        model=model,
        args=args,
        train_dataset=_dataset(),
        optimizers=(opt, None),
        callbacks=[iga.trainer_callback()],
        iga_step=iga,
    )
    trainer.train()
    assert iga.last_stats["iga/mask_mean"] < 1.0
    expected = _plain_loop(config)
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert_rel_close(p.detach(), expected[name], rtol=1e-4)


def test_plain_trainer_with_domain_key_and_the_model_loss(tmp_path):
    """No Trainer subclass: ids ride in the batch, the pre-hook pops them before forward."""
    model = tiny_llama(seed=1)
    config = IGAConfig(tau=5.0, space="factor", estimator="batch")
    iga = IGAStep(model, config, K, domain_key="domain_ids")
    rows = [dict(r, labels=r["input_ids"]) for r in _dataset()]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=BATCH,
        max_steps=2,
        logging_strategy="no",
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        disable_tqdm=True,
    )
    transformers.Trainer(
        model=model, args=args, train_dataset=rows, callbacks=[iga.trainer_callback()]
    ).train()
    assert iga.aligner.steps == 2 and 0.0 < iga.last_stats["iga/mask_mean"] < 1.0
    assert all(
        not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad
    )
