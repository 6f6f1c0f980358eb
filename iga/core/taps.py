"""The layer taps behind ``PerDomainGradients`` (docs/design.md section 3); ``G`` below is
the number of groups, K domains or 2K domain halves.

Each capture point is an identity ``autograd.Function`` (``_Tap``) on a layer's output
that saves the layer's input with ``save_for_backward``; its backward hands the output
gradient ``dy`` and the input ``x`` to the layer's entry, which adds
``K * sum_{rows of group g} dy^T x`` to buffer row g (a group is a domain, or a domain
half for the ``split`` estimator; ``iga.core.domain_split``). Saved tensors go through
autograd's saved-tensor hooks, so under activation checkpointing (reentrant or not) the
input is recomputed like any activation and each backward counts once; without
checkpointing it is the very tensor the layer saved already, so no extra activation
memory is held.

One entry per hooked layer: ``_LinearEntry`` (plain ``nn.Linear``) and ``_LoRAEntry``
(a peft LoRA ``Linear``, full or factor space); ``discover`` finds them in a model.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from iga.core.domain_split import DomainSplit
from iga.core.projection import LoRAFactors, LoRAGrads

if TYPE_CHECKING:
    from iga.core.capture import PerDomainGradients


class _Tap(torch.autograd.Function):
    """Identity on ``out``; its backward hands ``(grad_out, saved input, split)`` to ``sink``."""

    @staticmethod
    def forward(ctx, out, inp, sink, split, clone):
        ctx.save_for_backward(inp)
        ctx.sink, ctx.split = sink, split
        # A plain Linear's output may be edited in place downstream, which autograd forbids
        # on an input returned as-is from a custom Function; LoRA sublayer outputs never are.
        return out.clone() if clone else out

    @staticmethod
    def backward(ctx, grad_out):
        (inp,) = ctx.saved_tensors
        ctx.sink(grad_out, inp, ctx.split)
        return grad_out, None, None, None, None


def _lora_linear_class() -> type | None:
    layer = sys.modules.get("peft.tuners.lora.layer")  # a model holding peft layers imported it
    return None if layer is None else layer.Linear


def _lora_layer_class() -> type | None:
    layer = sys.modules.get("peft.tuners.lora.layer")
    return None if layer is None else layer.LoraLayer


class _Entry:
    """One hooked layer: its per-domain buffers and how to write results back to ``.grad``."""

    def __init__(self, name: str, capture: PerDomainGradients) -> None:
        self.name = name
        self.capture = capture
        self.buffers: dict[str, torch.Tensor] = {}  # key -> (G, *shape), G = K or 2K groups
        self.params: dict[str, nn.Parameter] = {}  # key -> parameter (for non-LoRA keys)
        self.stale: set[str] = set()  # keys whose buffer holds nothing of the current step
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _buffer(self, key: str, param: nn.Parameter, shape: tuple[int, ...]) -> None:
        dtype = self.capture.dtype or torch.promote_types(param.dtype, torch.float32)
        self.buffers[key] = torch.empty(
            (self.capture.num_groups, *shape), dtype=dtype, device=param.device
        )
        self.stale.add(key)

    def _tap(self, out: torch.Tensor, inp: torch.Tensor, sink: Callable, clone: bool = False):
        if not (self.capture.enabled and torch.is_grad_enabled() and out.requires_grad):
            return None
        split = self.capture.split
        if split is None:
            raise RuntimeError(
                f"IGA capture: layer {self.name!r} ran a training forward before any domain ids "
                "were set; call set_domains(domain_ids) for every micro-batch."
            )
        if inp.shape[0] != split.batch_size:
            raise RuntimeError(
                f"IGA capture: layer {self.name!r} got an input with leading dimension "
                f"{inp.shape[0]}, but the domain ids name {split.batch_size} examples. Inputs "
                "must be batch-first (batch, ..., features)."
            )
        return _Tap.apply(out, inp, sink, split, clone)

    def _add_outer(self, key: str, dy, x, split: DomainSplit, alpha: float) -> None:
        buf = self.buffers[key]
        # The step's first write overwrites (beta = 0) instead of adding to a zeroed
        # buffer: zeroing K full-size matrices per layer and step costs a memory pass.
        first = key in self.stale
        self.stale.discard(key)
        present = set(split.present)
        for g in range(split.num_groups):
            if g not in present:
                if first:
                    buf[g].zero_()
                continue
            dy_g = split.rows(dy, g).to(buf.dtype)  # (n_g tokens, out)
            x_g = split.rows(x, g).to(buf.dtype)  # (n_g tokens, in)
            buf[g].addmm_(dy_g.mT, x_g, beta=0.0 if first else 1.0, alpha=alpha)  # (out, in)

    def _add_sum(self, key: str, dy, split: DomainSplit, alpha: float) -> None:
        buf = self.buffers[key]
        if key in self.stale:
            buf.zero_()  # (G, out): small
            self.stale.discard(key)
        for g in split.present:
            buf[g].add_(split.rows(dy, g).sum(dim=0).to(buf.dtype), alpha=alpha)  # (out,)

    def written(self) -> dict[str, torch.Tensor]:
        return {key: buf for key, buf in self.buffers.items() if key not in self.stale}

    def mark_written(self, key: str) -> None:
        """Another rank wrote ``key``: hold zeros here so the all-reduce sums only data."""
        if key in self.stale:
            self.buffers[key].zero_()
            self.stale.discard(key)

    def lora_factors(self) -> dict[str, LoRAFactors]:
        return {}

    def write(self, key: str, grad: torch.Tensor | LoRAGrads) -> None:
        _set_grad(self.params[key], grad)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


class _LinearEntry(_Entry):
    """A plain ``nn.Linear`` with a trainable weight and/or bias."""

    def __init__(self, name: str, module: nn.Linear, capture: PerDomainGradients) -> None:
        super().__init__(name, capture)
        for pname in ("weight", "bias"):
            p = getattr(module, pname)
            if p is not None and p.requires_grad:
                key = f"{name}.{pname}" if name else pname
                self.params[key] = p
                self._buffer(key, p, tuple(p.shape))
        self._w = f"{name}.weight" if name else "weight"
        self._b = f"{name}.bias" if name else "bias"
        self.handles.append(module.register_forward_hook(self._hook))

    def _hook(self, module, args, out):
        return self._tap(out, args[0], self._accumulate, clone=True)

    def _accumulate(self, dy, x, split: DomainSplit) -> None:
        k = float(split.num_domains)
        if self._w in self.buffers:
            self._add_outer(self._w, dy, x, split, alpha=k)  # (G, out, in)
        if self._b in self.buffers:
            self._add_sum(self._b, dy, split, alpha=k)  # (G, out)


class _LoRAEntry(_Entry):
    """A peft LoRA ``Linear`` (vanilla LoRA, one active adapter)."""

    def __init__(self, name: str, module: nn.Module, capture: PerDomainGradients) -> None:
        super().__init__(name, capture)
        self.module = module
        self.adapter = _single_active_adapter(name, module)
        lora_a, lora_b = module.lora_A[self.adapter], module.lora_B[self.adapter]
        self.A, self.B = lora_a.weight, lora_b.weight
        if not (self.A.requires_grad and self.B.requires_grad):
            raise ValueError(
                f"IGA capture: LoRA layer {name!r} has a frozen factor (A: "
                f"{self.A.requires_grad}, B: {self.B.requires_grad}); IGA edits both factors, "
                "so train both (LoRA-FA-style frozen A is not supported)."
            )
        prefix = f"{name}." if name else ""
        self.key_a = f"{prefix}lora_A.{self.adapter}.weight"
        self.key_b = f"{prefix}lora_B.{self.adapter}.weight"
        self.key_lora_bias = f"{prefix}lora_B.{self.adapter}.bias"
        self.key_base_bias = f"{prefix}base_layer.bias"
        self.space = capture.space
        if self.space == "full":
            self._buffer(name, self.A, (self.B.shape[0], self.A.shape[1]))  # (G, out, in)
        else:
            self._buffer(self.key_a, self.A, tuple(self.A.shape))  # (G, r, in)
            self._buffer(self.key_b, self.B, tuple(self.B.shape))  # (G, out, r)
        for key, p in (
            (self.key_lora_bias, lora_b.bias),
            (self.key_base_bias, getattr(module.get_base_layer(), "bias", None)),
        ):
            if p is not None and p.requires_grad:
                self.params[key] = p
                self._buffer(key, p, tuple(p.shape))  # (G, out)
        self._x: torch.Tensor | None = None  # full space: lora_A's input, until lora_B runs
        self.handles.append(lora_a.register_forward_hook(self._hook_a))
        self.handles.append(lora_b.register_forward_hook(self._hook_b))

    @property
    def scale(self) -> float:
        return float(self.module.scaling[self.adapter])

    def _hook_a(self, module, args, out):
        if self.space == "full":
            self._x = args[0] if (self.capture.enabled and torch.is_grad_enabled()) else None
            return None
        return self._tap(out, args[0], self._accumulate_a)

    def _hook_b(self, module, args, out):
        if self.space == "factor":
            return self._tap(out, args[0], self._accumulate_b)
        x, self._x = self._x, None
        if x is None:
            return None
        return self._tap(out, x, self._accumulate_full)

    def _accumulate_a(self, du, x, split: DomainSplit) -> None:
        self._add_outer(self.key_a, du, x, split, alpha=float(split.num_domains))  # (G, r, in)

    def _accumulate_b(self, dz, u, split: DomainSplit) -> None:
        self._add_outer(self.key_b, dz, u, split, alpha=float(split.num_domains))  # (G, out, r)
        self._add_biases(dz, split)

    def _accumulate_full(self, dz, x, split: DomainSplit) -> None:
        s = self.scale
        if s == 0.0:
            raise RuntimeError(
                f"IGA capture: LoRA layer {self.name!r} has scale 0, so the effective-weight "
                "gradient cannot be recovered from the LoRA branch; use space='factor'."
            )
        # dz = s * dy, and dL/d(dW) = dy^T x_d: the 1/s undoes LoRA's scaling.
        self._add_outer(self.name, dz, x, split, alpha=split.num_domains / s)  # (G, out, in)
        self._add_biases(dz, split)

    def _add_biases(self, dz, split: DomainSplit) -> None:
        k = float(split.num_domains)
        if self.key_lora_bias in self.buffers:
            self._add_sum(self.key_lora_bias, dz, split, alpha=k)  # (G, out)
        if self.key_base_bias in self.buffers:
            self._add_sum(self.key_base_bias, dz, split, alpha=k / self.scale)  # (G, out)

    def lora_factors(self) -> dict[str, LoRAFactors]:
        if self.space != "full" or self.name in self.stale:
            return {}
        return {self.name: LoRAFactors(A=self.A.detach(), B=self.B.detach(), scale=self.scale)}

    def write(self, key: str, grad: torch.Tensor | LoRAGrads) -> None:
        if key == self.name and self.space == "full":
            _set_grad(self.A, grad.A)
            _set_grad(self.B, grad.B)
        elif key == self.key_a:
            _set_grad(self.A, grad)
        elif key == self.key_b:
            _set_grad(self.B, grad)
        else:
            _set_grad(self.params[key], grad)

    def param_of(self, key: str) -> nn.Parameter | None:
        return {self.key_a: self.A, self.key_b: self.B}.get(key, self.params.get(key))


def _single_active_adapter(name: str, module: nn.Module) -> str:
    adapters = [a for a in module.active_adapters if a in module.lora_A]
    if len(adapters) != 1:
        raise ValueError(
            f"IGA capture: LoRA layer {name!r} has {len(adapters)} active adapters "
            f"({adapters}); IGA supports exactly one. Call set_adapter(name) first."
        )
    adapter = adapters[0]
    variant = getattr(module, "lora_variant", {}).get(adapter)
    if variant is not None:
        raise ValueError(
            f"IGA capture: layer {name!r} uses the LoRA variant {type(variant).__name__} "
            "(e.g. DoRA); only vanilla LoRA is supported, because the variant's output is not "
            "s * B A x and the per-domain gradient split would be wrong."
        )
    if getattr(module, "merged", False):
        raise ValueError(
            f"IGA capture: LoRA layer {name!r} is merged into its base weight; unmerge it "
            "before training."
        )
    return adapter


def _set_grad(param: nn.Parameter, grad: torch.Tensor) -> None:
    grad = grad.to(dtype=param.dtype, device=param.device)
    if param.grad is None:
        param.grad = grad.clone()
    else:
        param.grad.copy_(grad)  # keeps DDP's bucket views and the optimizer's references


def discover(model: nn.Module, capture: PerDomainGradients) -> list[_Entry]:
    lora_linear, lora_layer = _lora_linear_class(), _lora_layer_class()
    entries: list[_Entry] = []
    skip: set[int] = set()
    for name, module in model.named_modules():
        if id(module) in skip:
            continue
        if lora_layer is not None and isinstance(module, lora_layer):
            skip.update(id(m) for m in module.modules())
            if not any(p.requires_grad for p in module.parameters()):
                continue
            if not isinstance(module, lora_linear):
                raise ValueError(
                    f"IGA capture: layer {name!r} is a {type(module).__name__} LoRA layer; only "
                    "peft's lora.Linear (vanilla LoRA) is supported."
                )
            entries.append(_LoRAEntry(name, module, capture))
        elif isinstance(module, nn.Linear) and any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            entries.append(_LinearEntry(name, module, capture))
    return entries
