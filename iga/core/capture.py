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

Halves (``halves=True``, the ``split`` estimator; theory/THEOREMS.md, Lemma E): each
domain's examples are cut into two halves inside the same backward (2K groups,
``iga.core.domain_split``); ``per_domain()`` still returns ``G_k`` (the two halves'
buffers add up to it exactly) and ``halves()`` the two independent unbiased estimates
of each domain's mean gradient.

The hooks live in ``iga.core.taps`` (one entry per layer), the row split in
``iga.core.domain_split``; this module is the facade the step talks to.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from iga.core.domain_split import DomainSplit
from iga.core.projection import LoRAFactors, LoRAGrads
from iga.core.taps import _Entry, _LoRAEntry, discover

SPACES = ("full", "factor")
__all__ = ["SPACES", "DomainSplit", "PerDomainGradients"]


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
    otherwise. ``halves=True`` cuts each domain's examples into two halves (2K buffer
    rows per parameter) for ``halves()``. Use as a context manager, or call
    ``remove()``, to drop the hooks.
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
        halves: bool = False,
    ) -> None:
        if not isinstance(num_domains, int) or num_domains < 1:
            raise ValueError(f"num_domains must be an integer >= 1, got {num_domains!r}.")
        if space not in SPACES:
            raise ValueError(f"space={space!r} is unknown; choose one of {SPACES}.")
        self.model = model
        self.num_domains = num_domains
        self.halves_on = halves
        self.num_groups = 2 * num_domains if halves else num_domains
        self.space = space
        self.dtype = dtype
        self.enabled = True
        self.split: DomainSplit | None = None
        self.generation = 0  # counts set_domains calls; IGAStep.apply keys on it
        self.domain_counts = torch.zeros(num_domains, dtype=torch.long)  # examples since reset
        # (K, 2): each half's accumulated share F_h of its domain's loss weight since reset
        self.half_load = torch.zeros(num_domains, 2, dtype=torch.float64)
        self.entries: list[_Entry] = discover(model, self)
        self._check_coverage(strict)
        self._pre_hook = None
        self.domain_key = domain_key
        if domain_key is not None:
            self._pre_hook = model.register_forward_pre_hook(self._pop_ids, with_kwargs=True)

    # ----- feeding domain ids ---------------------------------------------------------
    def set_domains(self, domain_ids: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Domain of each example of the next micro-batch(es): (B,) integers in [0, K).

        ``weights`` (B,): each example's loss weight (its supervised tokens), which
        balances and weighs the halves (``halves=True`` only; 1 per example if None).
        """
        load = self.half_load if (self.halves_on and self.enabled) else None
        if load is None:
            self.split = DomainSplit(domain_ids, self.num_domains)
        else:
            self.split = DomainSplit(domain_ids, self.num_domains, weights=weights, half_load=load)
        self.generation += 1
        if self.enabled:
            self.domain_counts += self.split.counts

    def _pop_ids(self, module, args, kwargs):
        if self.domain_key in kwargs:
            kwargs = dict(kwargs)
            ids = kwargs.pop(self.domain_key)
            if torch.is_grad_enabled():
                self.set_domains(ids)
            return args, kwargs
        return None

    # ----- reading and writing ---------------------------------------------------------
    def raw_buffers(self, include_stale: bool = False) -> dict[str, torch.Tensor]:
        """The buffers as stored, key -> (G, *shape) with G = K, or 2K with halves.

        ``include_stale=True`` adds the buffers no backward wrote in this step
        (their content is undefined).
        """
        return {
            key: buf
            for e in self.entries
            for key, buf in (e.buffers if include_stale else e.written()).items()
        }

    def per_domain(self) -> dict[str, torch.Tensor]:
        """Per-domain gradients written in this step, key -> (K, *shape): the ``G_k``.

        Without halves these are the buffers themselves; with halves, the sum of each
        domain's two half buffers (a new tensor).
        """
        raw = self.raw_buffers()
        if not self.halves_on:
            return raw
        k = self.num_domains
        return {key: buf.view(k, 2, *buf.shape[1:]).sum(dim=1) for key, buf in raw.items()}

    def half_shortfall(self) -> list[int]:
        """Domains whose halves did not both receive examples in this step."""
        return [k for k in range(self.num_domains) if float(self.half_load[k].min()) <= 0]

    def half_pairs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """key -> ``(pairs, scale)``: the raw buffer as (K, 2, *shape) (a view, no copy) and
        the (K, 2) factors ``F_k / F_h`` that turn half h into an unbiased ``mu_k``.

        Half h's buffer holds ``F_h / F_k`` of the domain's gradient (module
        ``iga.core.domain_split``), so ``g_h = buffer_h * F_k / F_h``. Needs
        ``halves=True`` and examples in both halves of every domain.
        """
        if not self.halves_on:
            raise RuntimeError("PerDomainGradients.halves() needs halves=True.")
        short = self.half_shortfall()
        if short:
            raise RuntimeError(
                f"IGA split estimator: domains {short} had fewer than 2 examples in this "
                "optimizer step (per process, under DDP), so their two halves are not both "
                "defined. Put at least 2 examples (isomer sets) of every domain in each step "
                "(raise --batch-sets), or use estimator='ema' or 'batch'."
            )
        load = self.half_load  # (K, 2)
        scale = load.sum(dim=1, keepdim=True) / load  # (K, 2): F_k / F_h
        k = self.num_domains
        return {
            key: (buf.view(k, 2, *buf.shape[1:]), scale) for key, buf in self.raw_buffers().items()
        }

    def halves(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """key -> ``(a, b)``, each (K, *shape): per half, an unbiased estimate of ``mu_k``
        (new tensors; ``half_pairs`` gives the same without copies)."""
        out = {}
        for key, (pairs, scale) in self.half_pairs().items():
            s = scale.to(pairs.device, pairs.dtype).view(*scale.shape, *([1] * (pairs.dim() - 2)))
            scaled = pairs * s  # (K, 2, *shape)
            out[key] = (scaled[:, 0], scaled[:, 1])
        return out

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
        self.half_load.zero_()

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
