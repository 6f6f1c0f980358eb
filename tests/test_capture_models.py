"""Tiny models, batches and reference gradients for the capture, step and DDP tests.

The references are computed the slow, obvious way: one backward pass per domain
(``K * L_k`` isolated by zeroing the other domains' token mask), and the
effective-weight gradient ``dL/d(dW)`` of a LoRA layer read off a zero
perturbation ``E`` added to the layer output as ``x_d E^T``. The tests at the
bottom check the helpers themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

from iga.core.losses import domain_mean_loss


class MLP(nn.Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_in, d_hidden)
        self.mid = nn.Linear(d_hidden, d_hidden)
        self.head = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.mid(torch.tanh(self.up(x)))))


def lora_mlp(
    d_in: int = 5,
    d_hidden: int = 6,
    d_out: int = 3,
    rank: int = 2,
    *,
    dropout: float = 0.0,
    lora_bias: bool = False,
    train_head: bool = True,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """LoRA on ``up`` and ``mid``; ``head`` a trainable plain Linear (peft modules_to_save).

    LoRA's B starts at zero in peft; here it is random, so that every factor
    gradient (``grad_A = s B^T G``) is non-trivial from the first step.
    """
    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["up", "mid"],
        lora_dropout=dropout,
        lora_bias=lora_bias,
        modules_to_save=["head"] if train_head else None,
    )
    model = get_peft_model(MLP(d_in, d_hidden, d_out).to(dtype), config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    return model


def tiny_llama(seed: int = 0, *, dropout: float = 0.0, vocab: int = 64, hidden: int = 16):
    """A 2-layer Llama with LoRA on every linear layer (lora_B random, see ``lora_mlp``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules="all-linear", lora_dropout=dropout)
    model = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
    return model


@dataclass
class Batch:
    x: torch.Tensor  # (B, T, d_in)
    y: torch.Tensor  # (B, T, d_out)
    mask: torch.Tensor  # (B, T) 1 = supervised token
    ids: torch.Tensor  # (B,) domain of each example


def make_batch(
    num_domains: int, extra: int, tokens: int, d_in: int, d_out: int, seed: int, shuffle: bool
) -> Batch:
    """Every domain has at least one example and one supervised token."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat(
        [torch.arange(num_domains), torch.randint(0, num_domains, (extra,), generator=g)]
    )
    ids = ids[torch.randperm(len(ids), generator=g)] if shuffle else ids.sort().values
    b = len(ids)
    mask = (torch.rand(b, tokens, generator=g) < 0.7).float()
    mask[:, 0] = 1.0
    x = torch.randn(b, tokens, d_in, generator=g)
    y = torch.randn(b, tokens, d_out, generator=g)
    return Batch(x, y, mask, ids)


def mse_per_token(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x) - y).square().mean(dim=-1)  # (B, T)


def lm_per_token(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy per position, (B, T - 1)."""
    logits = model(input_ids=input_ids).logits[:, :-1]  # (B, T-1, V)
    return F.cross_entropy(logits.mT, input_ids[:, 1:], reduction="none")  # (B, T-1)


def token_counts(mask: torch.Tensor, ids: torch.Tensor, num_domains: int) -> torch.Tensor:
    return torch.zeros(num_domains).index_add(0, ids, mask.sum(dim=1))  # (K,)


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import Linear as LoraLinear

    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


class EffectiveWeightProbe:
    """Adds ``x_d E^T`` (E = 0, a leaf) to every LoRA layer's output: ``E.grad = dL/d(dW)``."""

    def __init__(self, model: nn.Module) -> None:
        self.E: dict[str, torch.Tensor] = {}
        self._x: dict[str, torch.Tensor] = {}
        self.handles = []
        for name, m in lora_layers(model).items():
            a = m.lora_A[m.active_adapters[0]]
            self.E[name] = torch.zeros(m.out_features, m.in_features)
            self.E[name].requires_grad_(True)
            self.handles.append(a.register_forward_hook(self._save(name)))
            self.handles.append(m.register_forward_hook(self._add(name)))

    def _save(self, name):
        def hook(module, args, out):
            self._x[name] = args[0]

        return hook

    def _add(self, name):
        def hook(module, args, out):
            return out + F.linear(self._x.pop(name), self.E[name])  # (B, T, out)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def reference_per_domain(
    model: nn.Module,
    micro_batches: list[Batch],
    num_domains: int,
    space: str,
    seed: int,
) -> dict[str, torch.Tensor]:
    """``G_k = grad L_k`` by one accumulated backward per domain, keyed like the capture.

    ``L`` is the step's per-domain token mean (``domain_mean_loss`` with the
    step's token counts), and dropout sees the same seed per micro-batch as the
    capture run (``torch.manual_seed(seed + i)`` before micro-batch i).
    """
    counts = sum(token_counts(b.mask, b.ids, num_domains) for b in micro_batches)
    probe = EffectiveWeightProbe(model) if space == "full" else None
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    per_k: list[dict[str, torch.Tensor]] = []
    for k in range(num_domains):
        model.zero_grad(set_to_none=True)
        if probe is not None:
            for e in probe.E.values():
                e.grad = None
        for i, b in enumerate(micro_batches):
            torch.manual_seed(seed + i)
            keep = b.mask * (b.ids == k).float()[:, None]  # (B, T): domain k's tokens only
            loss = domain_mean_loss(
                mse_per_token(model, b.x, b.y), keep, b.ids, num_domains, counts
            )
            (num_domains * loss).backward()
        grads = {n: p.grad.clone() for n, p in named.items() if p.grad is not None}
        if probe is not None:
            grads.update({n: e.grad.clone() for n, e in probe.E.items()})
        per_k.append(grads)
    if probe is not None:
        probe.remove()
    model.zero_grad(set_to_none=True)
    return {n: torch.stack([g[n] for g in per_k]) for n in per_k[0]}  # (K, *shape)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Elementwise ``|a - e| <= rtol * (|e| + max|e|)``: relative to the tensor's scale."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale + 1e-30)


# ----- tests of the helpers -------------------------------------------------------------------
def test_make_batch_covers_every_domain():
    for shuffle in (False, True):
        b = make_batch(4, extra=3, tokens=2, d_in=3, d_out=2, seed=1, shuffle=shuffle)
        assert set(b.ids.tolist()) == {0, 1, 2, 3}
        assert bool((b.mask[:, 0] == 1).all())
        assert shuffle or bool((b.ids[1:] >= b.ids[:-1]).all())


def test_probe_reads_the_effective_weight_gradient():
    """On one LoRA layer ``dL/dB = s E.grad A^T`` (chain rule), so the probe is right."""
    model = lora_mlp(train_head=False)
    probe = EffectiveWeightProbe(model)
    mse_per_token(model, torch.randn(3, 2, 5), torch.randn(3, 2, 3)).sum().backward()
    m = lora_layers(model)["base_model.model.up"]
    a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
    s = m.scaling["default"]
    g = probe.E["base_model.model.up"].grad
    assert_rel_close(b.grad, s * g @ a.detach().T)
    assert_rel_close(a.grad, s * b.detach().T @ g)
    probe.remove()
