"""Per-domain gradients in one forward and one backward pass (docs/design.md section 3).

``PerDomainGradients(model, num_domains, space)`` hooks every trainable linear
layer of ``model``: peft LoRA ``Linear`` layers (vanilla LoRA) and plain
``nn.Linear``. For each micro-batch the caller names the domain of every
example (``set_domains``); during backward each hooked layer splits its
output gradient ``dy`` and its input ``x`` by domain and adds
``K * sum_{examples of k, tokens} dy^T x`` to a per-domain buffer.

Normalisation (docs/design.md section 2). The loss is ``L = mean_k L_k``
(``domain_mean_loss``), so ``.grad = sum_k part_k`` where ``part_k`` is the
gradient flowing through domain k's examples. The buffers hold
``G_k = K * part_k = grad L_k``, hence ``mean_k G_k`` equals autograd's
``.grad`` (the ERM gradient) for *any* loss, and ``G_k`` is exactly the
gradient of ``L_k`` when the loss is ``domain_mean_loss``. Micro-batches add
up, so with the usual ``loss / accumulation_steps`` the same identities hold
for the accumulated step.

What is captured, per layer (``s`` the LoRA scale, ``x_d`` the input the LoRA
branch sees, i.e. after lora dropout):

* LoRA, ``space="full"``: ``G_k = dL_k/d(dW)`` (K, out, in) of the effective
  weight ``dW = s B A``, from ``x_d`` (lora_A's input) and ``dz`` (lora_B's
  output gradient, ``= s dy``).
* LoRA, ``space="factor"``: ``dL_k/dA`` (K, r, in) from ``x_d`` and the
  gradient of lora_A's output, and ``dL_k/dB`` (K, out, r) from lora_A's
  output and ``dz``. No full-size matrix is formed.
* plain ``nn.Linear``: weight (K, out, in) and bias (K, out).
* trainable biases of a LoRA layer (``lora_bias=True``, or peft's
  ``bias="lora_only"``): (K, out).

Each capture point is an identity ``autograd.Function`` on the layer output
that saves the input with ``save_for_backward``. Saved tensors go through
autograd's saved-tensor hooks, so under activation checkpointing (reentrant or
not) the input is recomputed like any activation and each backward counts
once; without checkpointing it is the very tensor the layer saved already, so
no extra activation memory is held.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from iga.core.losses import check_domain_ids as _check_ids
from iga.core.projection import LoRAFactors, LoRAGrads

SPACES = ("full", "factor")


class DomainSplit:
    """Which rows of a batch-first tensor belong to each domain, for one micro-batch.

    A batch laid out in domain blocks (sorted ids) is split by slicing, with no
    copy; otherwise each domain's rows are gathered. Both cost O(rows), never a
    one-hot product (which would multiply the work of ``dy^T x`` by K).
    """

    def __init__(self, domain_ids: torch.Tensor, num_domains: int) -> None:
        ids = _check_ids(domain_ids, num_domains)
        self.batch_size = ids.numel()
        self.num_domains = num_domains
        self.counts = torch.bincount(ids.cpu(), minlength=num_domains)  # (K,)
        counts = self.counts.tolist()
        self.present = [k for k in range(num_domains) if counts[k] > 0]
        self._index: list[torch.Tensor] | None = None
        self._slices: list[slice] = []
        if bool((ids[1:] >= ids[:-1]).all()):
            start = 0
            for n in counts:
                self._slices.append(slice(start, start + n))
                start += n
        else:
            self._index = [torch.nonzero(ids == k).squeeze(1) for k in range(num_domains)]

    def rows(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """Domain k's rows of ``t`` (B, ..., d), flattened to (n_k * ..., d)."""
        if self._index is None:
            part = t[self._slices[k]]  # (n_k, ..., d)
        else:
            part = t.index_select(0, self._index[k].to(t.device))  # (n_k, ..., d)
        return part.reshape(-1, t.shape[-1])  # (n_k * tokens, d)


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
        self.buffers: dict[str, torch.Tensor] = {}  # key -> (K, *shape)
        self.params: dict[str, nn.Parameter] = {}  # key -> parameter (for non-LoRA keys)
        self.stale: set[str] = set()  # keys whose buffer holds nothing of the current step
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def _buffer(self, key: str, param: nn.Parameter, shape: tuple[int, ...]) -> None:
        dtype = self.capture.dtype or torch.promote_types(param.dtype, torch.float32)
        self.buffers[key] = torch.empty(
            (self.capture.num_domains, *shape), dtype=dtype, device=param.device
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
        for k in range(split.num_domains):
            if k not in split.present:
                if first:
                    buf[k].zero_()
                continue
            dy_k = split.rows(dy, k).to(buf.dtype)  # (n_k tokens, out)
            x_k = split.rows(x, k).to(buf.dtype)  # (n_k tokens, in)
            buf[k].addmm_(dy_k.mT, x_k, beta=0.0 if first else 1.0, alpha=alpha)  # (out, in)

    def _add_sum(self, key: str, dy, split: DomainSplit, alpha: float) -> None:
        buf = self.buffers[key]
        if key in self.stale:
            buf.zero_()  # (K, out): small
            self.stale.discard(key)
        for k in split.present:
            buf[k].add_(split.rows(dy, k).sum(dim=0).to(buf.dtype), alpha=alpha)  # (out,)

    @property
    def fired(self) -> bool:
        """Whether any buffer of this layer received a gradient in the current step."""
        return len(self.stale) < len(self.buffers)

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
            self._add_outer(self._w, dy, x, split, alpha=k)  # (K, out, in)
        if self._b in self.buffers:
            self._add_sum(self._b, dy, split, alpha=k)  # (K, out)


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
            self._buffer(name, self.A, (self.B.shape[0], self.A.shape[1]))  # (K, out, in)
        else:
            self._buffer(self.key_a, self.A, tuple(self.A.shape))  # (K, r, in)
            self._buffer(self.key_b, self.B, tuple(self.B.shape))  # (K, out, r)
        for key, p in (
            (self.key_lora_bias, lora_b.bias),
            (self.key_base_bias, getattr(module.get_base_layer(), "bias", None)),
        ):
            if p is not None and p.requires_grad:
                self.params[key] = p
                self._buffer(key, p, tuple(p.shape))  # (K, out)
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
        self._add_outer(self.key_a, du, x, split, alpha=float(split.num_domains))  # (K, r, in)

    def _accumulate_b(self, dz, u, split: DomainSplit) -> None:
        self._add_outer(self.key_b, dz, u, split, alpha=float(split.num_domains))  # (K, out, r)
        self._add_biases(dz, split)

    def _accumulate_full(self, dz, x, split: DomainSplit) -> None:
        s = self.scale
        if s == 0.0:
            raise RuntimeError(
                f"IGA capture: LoRA layer {self.name!r} has scale 0, so the effective-weight "
                "gradient cannot be recovered from the LoRA branch; use space='factor'."
            )
        # dz = s * dy, and dL/d(dW) = dy^T x_d: the 1/s undoes LoRA's scaling.
        self._add_outer(self.name, dz, x, split, alpha=split.num_domains / s)  # (K, out, in)
        self._add_biases(dz, split)

    def _add_biases(self, dz, split: DomainSplit) -> None:
        k = float(split.num_domains)
        if self.key_lora_bias in self.buffers:
            self._add_sum(self.key_lora_bias, dz, split, alpha=k)  # (K, out)
        if self.key_base_bias in self.buffers:
            self._add_sum(self.key_base_bias, dz, split, alpha=k / self.scale)  # (K, out)

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


class PerDomainGradients:
    """Hooks that capture per-domain gradients of every trainable linear layer of a model.

    ``num_domains`` K is fixed for the run; ``space`` is ``"full"`` or ``"factor"``
    (docs/design.md section 2). With ``strict=True`` any trainable parameter outside
    a supported layer (an embedding, a LayerNorm, a LoRA variant, ...) is an
    error naming it; ``strict=False`` leaves such parameters with autograd's ERM
    ``.grad``. ``domain_key`` (e.g. ``"domain_ids"``) pops that keyword from the
    model's forward call and uses it as the micro-batch's domain ids, so an
    unmodified training loop (or ``transformers.Trainer`` with
    ``remove_unused_columns=False``) can feed the ids with the batch.
    Buffers are float32 (float64 for float64 parameters) unless ``dtype`` says
    otherwise. Use as a context manager, or call ``remove()``, to drop the hooks.
    """

    def __init__(
        self,
        model: nn.Module,
        num_domains: int,
        space: str = "full",
        *,
        strict: bool = True,
        domain_key: str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(num_domains, int) or num_domains < 1:
            raise ValueError(f"num_domains must be an integer >= 1, got {num_domains!r}.")
        if space not in SPACES:
            raise ValueError(f"space={space!r} is unknown; choose one of {SPACES}.")
        self.model = model
        self.num_domains = num_domains
        self.space = space
        self.dtype = dtype
        self.enabled = True
        self.split: DomainSplit | None = None
        self.generation = 0  # counts set_domains calls; IGAStep.apply keys on it
        self.domain_counts = torch.zeros(num_domains, dtype=torch.long)  # examples since reset
        self.entries: list[_Entry] = _discover(model, self)
        self._check_coverage(strict)
        self._pre_hook = None
        self.domain_key = domain_key
        if domain_key is not None:
            self._pre_hook = model.register_forward_pre_hook(self._pop_ids, with_kwargs=True)

    # ----- feeding domain ids ---------------------------------------------------------
    def set_domains(self, domain_ids: torch.Tensor) -> None:
        """Domain of each example of the next micro-batch(es): (B,) integers in [0, K)."""
        self.split = DomainSplit(domain_ids, self.num_domains)
        self.generation += 1
        if self.enabled:
            self.domain_counts += self.split.counts

    @property
    def domain_ids_set(self) -> bool:
        return self.split is not None

    def _pop_ids(self, module, args, kwargs):
        if self.domain_key in kwargs:
            kwargs = dict(kwargs)
            ids = kwargs.pop(self.domain_key)
            if torch.is_grad_enabled():
                self.set_domains(ids)
            return args, kwargs
        return None

    # ----- reading and writing ---------------------------------------------------------
    def per_domain(self, include_stale: bool = False) -> dict[str, torch.Tensor]:
        """Live per-domain buffers written in this step, key -> (K, *shape): the ``G_k``.

        ``include_stale=True`` adds the buffers no backward wrote in this step
        (their content is undefined).
        """
        return {
            key: buf
            for e in self.entries
            for key, buf in (e.buffers if include_stale else e.written()).items()
        }

    def lora_factors(self) -> dict[str, LoRAFactors]:
        """Current factors of the full-space LoRA entries written in this step."""
        out: dict[str, LoRAFactors] = {}
        for e in self.entries:
            out.update(e.lora_factors())
        return out

    def keys(self) -> list[str]:
        """Every buffer key, in a fixed order (the same on every rank)."""
        return [key for e in self.entries for key in e.buffers]

    def is_written(self, key: str) -> bool:
        return key not in self._owner()[key].stale

    def mark_written(self, keys: Iterable[str]) -> None:
        """Treat ``keys`` as written (zeros where this rank wrote nothing): for the all-reduce."""
        owner = self._owner()
        for key in keys:
            owner[key].mark_written(key)

    @property
    def has_full_space_lora(self) -> bool:
        return self.space == "full" and any(isinstance(e, _LoRAEntry) for e in self.entries)

    def write_grads(self, grads: Mapping[str, torch.Tensor | LoRAGrads]) -> None:
        """Replace ``.grad`` of the parameters behind each key with the given gradient."""
        owner = self._owner()
        for key, g in grads.items():
            owner[key].write(key, g)

    def param_of(self, key: str) -> nn.Parameter:
        """The parameter a factor-space or plain key stands for (for update-space masks)."""
        entry = self._owner()[key]
        p = entry.param_of(key) if isinstance(entry, _LoRAEntry) else entry.params.get(key)
        if p is None:
            raise KeyError(f"{key!r} is a full-space LoRA key; it has no single parameter.")
        return p

    def parameters(self) -> list[nn.Parameter]:
        """Every parameter whose gradient the capture covers."""
        out: list[nn.Parameter] = []
        for e in self.entries:
            if isinstance(e, _LoRAEntry):
                out += [e.A, e.B]
            out += list(e.params.values())
        return out

    def reset(self) -> None:
        """Forget the step's gradients and counts (the next write overwrites)."""
        for e in self.entries:
            e.stale = set(e.buffers)
        self.domain_counts.zero_()

    def remove(self) -> None:
        for e in self.entries:
            e.remove()
        if self._pre_hook is not None:
            self._pre_hook.remove()
            self._pre_hook = None

    def __enter__(self) -> PerDomainGradients:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    # ----- internals ---------------------------------------------------------------------
    def _owner(self) -> dict[str, _Entry]:
        return {key: e for e in self.entries for key in e.buffers}

    def _check_coverage(self, strict: bool) -> None:
        covered = {id(p) for p in self.parameters()}
        if len(covered) != len(self.parameters()):
            raise ValueError("IGA capture: a parameter is shared by two hooked layers (tied).")
        missing = [
            n for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in covered
        ]
        if missing and strict:
            raise ValueError(
                f"IGA capture: trainable parameters outside supported layers: {missing[:5]}"
                f"{' ...' if len(missing) > 5 else ''}. Supported: peft LoRA Linear (vanilla) "
                "and nn.Linear. Freeze them, or pass strict=False to leave their ERM gradient "
                "unedited."
            )
        if not self.entries:
            raise ValueError("IGA capture: the model has no trainable LoRA or nn.Linear layer.")


def _discover(model: nn.Module, capture: PerDomainGradients) -> list[_Entry]:
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
