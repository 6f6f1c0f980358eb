"""Per-domain gradient capture: one backward == K backward passes, and sums to ``.grad``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint

from iga.core.capture import DomainSplit, PerDomainGradients
from iga.core.losses import domain_mean_loss
from tests.test_capture_models import (
    Batch,
    assert_rel_close,
    lm_per_token,
    lora_mlp,
    make_batch,
    mse_per_token,
    reference_per_domain,
    tiny_llama,
    token_counts,
)


def _split(batch: Batch, n_micro: int) -> list[Batch]:
    bounds = torch.linspace(0, len(batch.ids), n_micro + 1).round().long().tolist()
    return [
        Batch(batch.x[a:b], batch.y[a:b], batch.mask[a:b], batch.ids[a:b])
        for a, b in zip(bounds, bounds[1:])
        if b > a
    ]


def _capture_run(model, micro: list[Batch], k: int, space: str, seed: int):
    """One backward per micro-batch with the capture on; returns (capture, .grad dict)."""
    counts = sum(token_counts(b.mask, b.ids, k) for b in micro)
    cap = PerDomainGradients(model, k, space)
    model.zero_grad(set_to_none=True)
    for i, b in enumerate(micro):
        torch.manual_seed(seed + i)
        cap.set_domains(b.ids)
        domain_mean_loss(mse_per_token(model, b.x, b.y), b.mask, b.ids, k, counts).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return cap, grads


@settings(max_examples=25, deadline=None)
@given(
    d_in=st.integers(1, 6),
    d_hidden=st.integers(1, 6),
    d_out=st.integers(1, 4),
    rank=st.integers(1, 3),
    k=st.integers(1, 4),
    extra=st.integers(0, 5),
    tokens=st.integers(1, 3),
    n_micro=st.integers(1, 3),
    dropout=st.sampled_from([0.0, 0.5]),
    lora_bias=st.booleans(),
    space=st.sampled_from(["full", "factor"]),
    shuffle=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_capture_matches_separate_backward_passes(
    d_in, d_hidden, d_out, rank, k, extra, tokens, n_micro, dropout, lora_bias, space, shuffle, seed
):
    """Each domain's piece == its own backward pass; mean over domains == autograd's .grad."""
    model = lora_mlp(d_in, d_hidden, d_out, rank, dropout=dropout, lora_bias=lora_bias, seed=seed)
    micro = _split(make_batch(k, extra, tokens, d_in, d_out, seed, shuffle), n_micro)
    cap, grads = _capture_run(model, micro, k, space, seed)
    captured = {key: buf.clone() for key, buf in cap.per_domain().items()}
    lora = cap.lora_factors()
    cap.remove()
    expected = reference_per_domain(model, micro, k, space, seed)
    assert set(captured) <= set(expected)
    for key, g in captured.items():
        assert_rel_close(g, expected[key])
        if key in lora:  # full space: the chain rule of the mean is autograd's factor grads
            f = lora[key]
            prefix = key + ".lora_{}.default.weight"
            assert_rel_close(f.scale * g.mean(0) @ f.A.T, grads[prefix.format("B")])
            assert_rel_close(f.scale * f.B.T @ g.mean(0), grads[prefix.format("A")])
        else:
            assert_rel_close(g.mean(0), grads[key])


def test_every_trainable_parameter_is_covered_and_frozen_ones_untouched():
    model = lora_mlp(lora_bias=True)
    b = make_batch(3, 2, 2, 5, 3, seed=0, shuffle=True)
    for space in ("full", "factor"):
        cap = PerDomainGradients(model, 3, space)
        cap.set_domains(b.ids)
        domain_mean_loss(mse_per_token(model, b.x, b.y), b.mask, b.ids, 3).backward()
        trainable = {id(p) for p in model.parameters() if p.requires_grad}
        assert {id(p) for p in cap.parameters()} == trainable
        frozen = [p for p in model.parameters() if not p.requires_grad]
        assert frozen and all(p.grad is None for p in frozen)
        cap.remove()
        model.zero_grad(set_to_none=True)


def test_domain_order_does_not_matter():
    """Sliced (sorted ids) and gathered (shuffled ids) splits give the same buffers."""
    b = make_batch(3, 4, 2, 5, 3, seed=3, shuffle=True)
    perm = torch.argsort(b.ids, stable=True)
    out = []
    for batch in (b, Batch(b.x[perm], b.y[perm], b.mask[perm], b.ids[perm])):
        model = lora_mlp(seed=1)
        cap, _ = _capture_run(model, [batch], 3, "full", seed=0)
        out.append({key: v.clone() for key, v in cap.per_domain().items()})
        cap.remove()
    for key in out[0]:
        assert_rel_close(out[0][key], out[1][key])


@pytest.mark.parametrize("reentrant", [True, False])
@pytest.mark.parametrize("space", ["full", "factor"])
def test_activation_checkpointing_counts_each_backward_once(reentrant, space):
    """torch.utils.checkpoint recomputes the forward (hooks fire twice); nothing doubles."""
    model = lora_mlp(d_hidden=7, dropout=0.3, seed=2)
    inner = model.base_model.model
    b = make_batch(3, 3, 4, 5, 3, seed=2, shuffle=True)
    b.x.requires_grad_(True)  # reentrant checkpointing needs an input that requires grad

    def forward(x):
        h = checkpoint(lambda t: torch.tanh(inner.up(t)), x, use_reentrant=reentrant)
        h = checkpoint(lambda t: torch.tanh(inner.mid(t)), h, use_reentrant=reentrant)
        return inner.head(h)

    results = []
    for fwd in (model, forward):
        cap = PerDomainGradients(model, 3, space)
        torch.manual_seed(5)
        cap.set_domains(b.ids)
        loss = domain_mean_loss((fwd(b.x) - b.y).square().mean(-1), b.mask, b.ids, 3)
        loss.backward()
        results.append({key: v.clone() for key, v in cap.per_domain().items()})
        cap.remove()
        model.zero_grad(set_to_none=True)
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        assert_rel_close(results[1][key], results[0][key])


@pytest.mark.parametrize("reentrant", [True, False])
def test_hf_gradient_checkpointing_on_llama(reentrant):
    """HF's gradient checkpointing on a LoRA Llama: same buffers as without it."""
    k = 2
    ids = torch.tensor([0, 1, 1, 0])
    tokens = torch.randint(0, 64, (4, 6), generator=torch.Generator().manual_seed(0))
    results = []
    for ckpt in (False, True):
        model = tiny_llama(seed=0, dropout=0.2)
        model.train()
        if ckpt:
            model.gradient_checkpointing_enable({"use_reentrant": reentrant})
        cap = PerDomainGradients(model, k, "full")
        torch.manual_seed(1)
        cap.set_domains(ids)
        per_token = lm_per_token(model, tokens)
        domain_mean_loss(per_token, None, ids, k).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append(({key: v.clone() for key, v in cap.per_domain().items()}, grads))
        cap.remove()
    (plain, plain_grads), (ckpt, ckpt_grads) = results
    assert len(plain) == 14  # 2 layers x 7 linear modules
    for key in plain:
        assert_rel_close(ckpt[key], plain[key])
    for key in plain_grads:
        assert_rel_close(ckpt_grads[key], plain_grads[key])


def test_accumulation_adds_micro_batches():
    """Two backward passes on halves == one on the whole batch (sums, not overwrites)."""
    b = make_batch(2, 4, 3, 5, 3, seed=4, shuffle=False)
    whole, _ = _capture_run(lora_mlp(seed=4), [b], 2, "factor", seed=0)
    halves, _ = _capture_run(lora_mlp(seed=4), _split(b, 2), 2, "factor", seed=0)
    for key, v in whole.per_domain().items():
        assert_rel_close(halves.per_domain()[key], v)


def test_domain_mean_loss_definition():
    loss = torch.tensor([[1.0, 2.0], [3.0, 5.0], [4.0, 0.0]])  # (B=3, T=2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    ids = torch.tensor([0, 1, 0])
    # domain 0: tokens 1, 2, 4, 0 -> 7/4; domain 1: token 3 -> 3; mean = (1.75 + 3) / 2
    assert float(domain_mean_loss(loss, mask, ids, 2)) == pytest.approx(2.375)
    # a domain absent from the batch adds 0 and still counts in K
    assert float(domain_mean_loss(loss, mask, ids, 3)) == pytest.approx(4.75 / 3)
    # with one domain it is the token mean
    assert float(domain_mean_loss(loss, mask, torch.zeros(3, dtype=torch.long), 1)) == (
        pytest.approx(float((loss * mask).sum() / mask.sum()))
    )


def test_errors_name_the_problem():
    model = lora_mlp()
    cap = PerDomainGradients(model, 2, "full")
    with pytest.raises(RuntimeError, match="before any domain ids"):
        mse_per_token(model, torch.randn(2, 1, 5), torch.randn(2, 1, 3)).sum().backward()
    cap.set_domains(torch.tensor([0, 1, 1]))
    with pytest.raises(RuntimeError, match="leading dimension 2"):
        mse_per_token(model, torch.randn(2, 1, 5), torch.randn(2, 1, 3)).sum().backward()
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        cap.set_domains(torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="integer"):
        cap.set_domains(torch.tensor([0.0, 1.0]))
    cap.remove()
    with torch.no_grad():  # evaluation under no_grad needs no ids
        PerDomainGradients(model, 2)
        model(torch.randn(2, 5))


def test_unsupported_layers_are_named():
    from peft import LoraConfig, get_peft_model

    from tests.test_capture_models import MLP

    dora = get_peft_model(MLP(3, 4, 2), LoraConfig(r=2, target_modules=["up"], use_dora=True))
    with pytest.raises(ValueError, match=r"base_model\.model\.up.*DoraLinearVariant"):
        PerDomainGradients(dora, 2)
    net = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 2))
    with pytest.raises(ValueError, match=r"'0\.weight'"):
        PerDomainGradients(net, 2)
    cap = PerDomainGradients(net, 2, strict=False)  # the embedding keeps its ERM gradient
    assert [p.shape for p in cap.parameters()] == [torch.Size([2, 3]), torch.Size([2])]


def test_domain_key_pops_ids_from_forward_kwargs():
    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x)

    net = Wrapped()
    cap = PerDomainGradients(net, 2, domain_key="domain_ids")
    net(torch.randn(4, 3), domain_ids=torch.tensor([0, 1, 1, 0])).sum().backward()
    assert cap.domain_counts.tolist() == [2, 2]
    assert_rel_close(cap.per_domain()["lin.weight"].mean(0), net.lin.weight.grad)


def test_split_slices_sorted_and_gathers_shuffled():
    t = torch.arange(12.0).reshape(6, 2)
    sorted_split = DomainSplit(torch.tensor([0, 0, 1, 2, 2, 2]), 4)
    assert sorted_split.present == [0, 1, 2]
    assert sorted_split.rows(t, 2).data_ptr() == t[3:].data_ptr()  # a view, no copy
    shuffled = DomainSplit(torch.tensor([2, 0, 2, 1, 0, 2]), 3)
    assert shuffled.rows(t, 0).tolist() == [[2.0, 3.0], [8.0, 9.0]]


def test_layers_that_did_not_run_are_left_out_and_stale_data_never_leaks():
    """A step's first write overwrites; a layer that did not run this step is not reported."""
    net = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.Linear(3, 2)})
    cap = PerDomainGradients(net, 2)
    ids, x = torch.tensor([0, 1]), torch.randn(2, 3)
    cap.set_domains(ids)
    (net["a"](x).sum() + net["b"](x).sum()).backward()
    assert set(cap.per_domain()) == {"a.weight", "a.bias", "b.weight", "b.bias"}
    cap.reset()
    net.zero_grad(set_to_none=True)
    cap.set_domains(ids)
    net["a"](x).square().sum().backward()
    assert set(cap.per_domain()) == {"a.weight", "a.bias"}
    assert_rel_close(cap.per_domain()["a.weight"].mean(0), net["a"].weight.grad)
    cap.mark_written(["b.weight"])  # as after an all-reduce where another rank ran "b"
    assert torch.equal(cap.per_domain()["b.weight"], torch.zeros(2, 2, 3))
