"""A reference implementation of the IGA step that shares no capture code with ``iga.core``:
per-domain gradients by K backward passes (docs/design.md, section 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from iga.core.aligner import GradientAligner, LoRAFactors
from iga.core.config import IGAConfig
from iga.core.step import resolve_space


class KBackwardIGA:
    """The IGA step with per-domain gradients from one forward and K backward passes.

    The reference the one-backward capture (``iga.core.capture``) must equal (docs/design.md,
    section 3: "the per-domain pieces must equal K separate backward passes"): each
    ``L_k`` is differentiated on its own (``retain_graph``), in full space through a zero
    perturbation ``dW`` added to each LoRA layer's output (so ``dL_k/d(dW)`` is read off
    directly), in factor space through ``A`` and ``B``; the stacked (K, *shape) gradients
    then go through the same ``GradientAligner``. ``iga bench step`` times it as
    ``naive_*``; tests compare ``IGAStep`` with it.
    """

    def __init__(self, model, config: IGAConfig, num_domains: int) -> None:
        from peft.tuners.lora import Linear as LoraLinear

        config = replace(config, space=resolve_space(config, model, num_domains))
        self.config, self.k = config, num_domains
        self.aligner = GradientAligner(config)
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}
        self.probes: dict[str, torch.Tensor] = {}
        self._x: dict[str, torch.Tensor] = {}
        if config.space == "full":
            for name, m in self.layers.items():
                self.probes[name] = torch.zeros(m.out_features, m.in_features, requires_grad=True)
                m.lora_A["default"].register_forward_hook(self._save(name))
                m.register_forward_hook(self._add(name))

    def _save(self, name: str) -> Callable:
        def hook(module, args, out):
            self._x[name] = args[0]

        return hook

    def _add(self, name: str) -> Callable:
        def hook(module, args, out):
            return out + F.linear(self._x.pop(name), self.probes[name])  # (B, T, out)

        return hook

    def _leaves(self) -> dict[str, torch.Tensor]:
        if self.config.space == "full":
            return dict(self.probes)
        out = {}
        for name, m in self.layers.items():
            out[f"{name}.A"] = m.lora_A["default"].weight
            out[f"{name}.B"] = m.lora_B["default"].weight
        return out

    def per_domain(self, losses: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """(K, *shape) gradients of each ``L_k`` in ``losses`` (one graph, K backwards)."""
        leaves = self._leaves()
        per_domain = {key: [] for key in leaves}
        for k, loss in enumerate(losses):
            grads = torch.autograd.grad(loss, list(leaves.values()), retain_graph=k < self.k - 1)
            for key, g in zip(leaves, grads):
                per_domain[key].append(g)
        return {key: torch.stack(gs) for key, gs in per_domain.items()}  # (K, *shape)

    def gradients(self, losses: list[torch.Tensor]) -> None:
        """Write the aligned gradients of ``losses`` (one ``L_k`` each) to the LoRA ``.grad``."""
        stacked = self.per_domain(losses)
        lora = {}
        if self.config.space == "full":
            for name, m in self.layers.items():
                a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
                lora[name] = LoRAFactors(a.detach(), b.detach(), float(m.scaling["default"]))
        result = self.aligner(stacked, lora)
        for name, m in self.layers.items():
            a, b = m.lora_A["default"].weight, m.lora_B["default"].weight
            if self.config.space == "full":
                a.grad, b.grad = result.grads[name].A.clone(), result.grads[name].B.clone()
            else:
                a.grad, b.grad = result.grads[f"{name}.A"], result.grads[f"{name}.B"]
