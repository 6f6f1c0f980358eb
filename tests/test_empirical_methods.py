"""Every registered method: one update changes the LoRA parameters, penalties have gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from empirical.hparams import hparams
from empirical.methods import EXTRA_BASELINES, METHODS, PAPER_BASELINES, make_method
from empirical.methods.alignment import Fishr, KYGradVar
from empirical.methods.base import concat_domains
from empirical.methods.penalties import IRMv1, irm_penalty
from empirical.runner import split_by_domain
from iga.core.losses import domain_mean_loss, per_domain_losses
from iga.distill.data import IsomerCollator, IsomerDataset
from iga.distill.pretrain import BaseConfig, load_or_build_base
from iga.distill.student import StudentConfig, attach_lora
from iga.isomers import generate_sets

K = 3
DOMAINS = ("mathematics", "law", "medicine")
TINY_BASE = BaseConfig(
    student=StudentConfig(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_layers=1,
        max_length=512,
        num_heads=2,
    ),
    sets_per_family=4,
    n_facts=50,
    steps=5,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("IGA_CACHE", str(tmp_path_factory.mktemp("iga-cache")))
    model, tokenizer, _ = load_or_build_base(TINY_BASE, show_progress=False)
    mp.undo()
    sets = generate_sets(
        "arithmetic", DOMAINS, 4, seed=0, shortcut={"mathematics": 0.9, "law": 0.7, "medicine": 0.5}
    )
    data = IsomerDataset(sets, DOMAINS, tokenizer, 512)
    batch = IsomerCollator(tokenizer.pad_token_id)([data[i] for i in range(4)])
    return model, split_by_domain(batch, K)


def _lora(model, seed=0):
    torch.manual_seed(seed)
    lora = attach_lora(copy.deepcopy(model), 2, seed=seed)
    # peft starts B at 0; a non-zero B gives every factor a gradient in the first step.
    with torch.no_grad():
        for n, p in lora.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return lora


def test_registry_holds_every_method():
    assert set(METHODS) == {*PAPER_BASELINES, *EXTRA_BASELINES, "iga", "iga-batch"}
    assert len(PAPER_BASELINES) == 8 and "iga" not in EXTRA_BASELINES
    for name, cls in METHODS.items():
        assert "arXiv" in (cls.__doc__ or "") or name == "erm", name
        assert set(hparams(name)) >= {"lr", "lora_rank"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_one_update_changes_lora_parameters(tiny, name):
    base, batches = tiny
    model = _lora(base)
    hp = hparams(name)
    if "anneal_frac" in hp:
        hp["anneal_frac"] = 0.0  # full penalty from the first step
    method = make_method(name, model, K, hp, steps=10)
    # iga distill's schedule gives the first step learning rate 0 (iga/distill/schedule.py):
    # the second update is the first that must move every parameter.
    method.update(batches)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    stats = method.update(batches)
    method.close()
    assert all(isinstance(v, float) for v in stats.values())
    changed = [
        n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert len(changed) == len(before), f"{name}: unchanged {set(before) - set(changed)}"
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad and "lora" in n]
    assert not frozen


@pytest.mark.parametrize("name", sorted(METHODS))
def test_supervised_only_logits_change_no_update(tiny, name, monkeypatch):
    """Every method's forward runs the LM head on supervised positions only; two updates
    with that head and with full logits (Method.forward(logits=True)) move the LoRA
    parameters alike, to float32 rounding."""
    from empirical.methods.base import Method

    base, batches = tiny
    plain, moved = Method.forward, []
    for full in (False, True):
        if full:
            monkeypatch.setattr(
                Method, "forward", lambda self, b, logits=False: plain(self, b, True)
            )
        model = _lora(base, seed=3)
        assert model.get_output_embeddings() is not None  # the supervised-only path, no fallback
        method = make_method(name, model, K, hparams(name), steps=10, seed=3)
        for _ in range(2):  # the schedule's first step has learning rate 0
            method.update(batches)
        method.close()
        moved.append(
            {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        )
    for n in moved[0]:
        torch.testing.assert_close(moved[0][n], moved[1][n], rtol=1e-4, atol=1e-6, msg=n)


def _penalty_grad_norm(model, penalty) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(penalty, params, allow_unused=True)
    return sum(float(g.norm()) for g in grads if g is not None)


def test_penalties_have_gradients(tiny):
    base, batches = tiny
    batch = concat_domains(batches)
    for cls, name in ((IRMv1, "irm"), (KYGradVar, "ky-gradvar")):
        model = _lora(base)
        method = make_method(name, model, K, hparams(name), steps=10)
        with sdpa_kernel(SDPBackend.MATH):
            ce, mask, logits = method.forward(batch, logits=cls is IRMv1)
        if cls is IRMv1:
            penalty = irm_penalty(logits, batch["labels"], batch["domain_ids"], K)
        else:
            losses = per_domain_losses(ce, mask, batch["domain_ids"], K)
            params = method.params
            gs = [
                torch.cat(
                    [
                        g.reshape(-1)
                        for g in torch.autograd.grad(losses[k], params, create_graph=True)
                    ]
                )
                for k in range(K)
            ]
            flat = torch.stack(gs)
            penalty = (flat - flat.mean(0)).square().sum(1).mean()
        assert _penalty_grad_norm(model, penalty) > 0, name
    # V-REx: the variance of per-domain losses
    model = _lora(base)
    method = make_method("vrex", model, K, hparams("vrex"), steps=10)
    ce, mask, _ = method.forward(batch)
    losses = per_domain_losses(ce, mask, batch["domain_ids"], K)
    assert _penalty_grad_norm(model, losses.var(unbiased=False)) > 0
    # Fishr: variance of per-example head gradients
    model = _lora(base)
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=True,
    )
    from iga.core.losses import completion_token_losses

    ce, mask = completion_token_losses(out.logits, batch["labels"])
    g = Fishr.head_gradients(out.logits, out.hidden_states[-1], batch["labels"], mask)
    v = torch.stack([g[batch["domain_ids"] == k].var(0, unbiased=False) for k in range(K)])
    assert _penalty_grad_norm(model, (v - v.mean(0)).square().sum()) > 0


def test_groupdro_upweights_the_worst_domain(tiny):
    base, batches = tiny
    method = make_method("groupdro", _lora(base), K, {**hparams("groupdro"), "eta": 1.0}, steps=10)
    method.update(batches)
    assert not torch.allclose(method.q, torch.full((K,), 1 / K))


def test_per_domain_losses_average_to_domain_mean_loss(tiny):
    base, batches = tiny
    model = _lora(base)
    method = make_method("erm", model, K, hparams("erm"), steps=1)
    batch = concat_domains(batches)
    ce, mask, _ = method.forward(batch)
    expected = domain_mean_loss(ce, mask, batch["domain_ids"], K)
    torch.testing.assert_close(per_domain_losses(ce, mask, batch["domain_ids"], K).mean(), expected)


def test_sandmask_default_trains_where_domainbed_default_does_not(tiny):
    base, batches = tiny
    for tau, moves in ((hparams("sandmask")["tau"], True), (1.0, False)):
        model = _lora(base)
        method = make_method("sandmask", model, K, {**hparams("sandmask"), "tau": tau}, steps=10)
        method.update(batches)  # learning rate 0: the schedule's first step
        before = [p.detach().clone() for p in method.params]
        method.update(batches)
        method.close()
        moved = any(not torch.equal(p, b) for p, b in zip(method.params, before))
        assert moved == moves, f"tau={tau}"


def test_optimizer_reset_keeps_the_schedule_without_a_warning(tiny):
    """IRMv1 resets Adam after annealing: same learning-rate curve as without the reset,
    and no 'lr_scheduler.step() before optimizer.step()' warning."""
    import warnings

    model, batches = tiny
    hp = {**hparams("irm"), "anneal_frac": 0.5}
    lrs = {}
    for reset in (True, False):
        method = IRMv1(_lora(model), K, hp, steps=4)
        if not reset:
            method.reset_optimizer = lambda: None
        seen = []
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            for _ in range(4):
                method.update(batches)
                seen.append(method.optimizer.param_groups[0]["lr"])
        lrs[reset] = seen
    assert lrs[True] == pytest.approx(lrs[False], rel=1e-12)
    assert lrs[True][0] > lrs[True][2] > lrs[True][3] == 0.0  # cosine to zero
