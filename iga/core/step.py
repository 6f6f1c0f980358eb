"""The IGA training step on a model (docs/design.md sections 2, 3 and 8).

``IGAStep`` owns a ``PerDomainGradients`` capture and a ``GradientAligner``.
One optimizer step is:

1. for each micro-batch: ``set_domains(ids)``, forward, ``backward()``
   (the capture fills its per-domain buffers; autograd fills ``.grad``);
2. ``apply()``: all-reduce the buffers under DDP, run the aligner (mask ->
   projection -> chain rule, or ERM during warm-up) and replace ``.grad`` of
   every captured parameter with the result;
3. clip (``clip_grad_norm_`` now sees the edited gradient);
4. ``optimizer_step(optimizer)``: the optimizer steps; with
   ``mask_target="update"`` the mask is applied to the step's parameter change
   ``p_new - p_old`` (whatever the optimizer: AdamW's normalised update
   including its decoupled weight decay, SGD's ``-lr * g``, ...).

``step(optimizer, max_grad_norm)`` does 2-4 in one call. For
``transformers.Trainer``, ``trainer_callback()`` returns a ``TrainerCallback``
that does 2 and 4 around ``optimizer.step()``; the Trainer clips *before* its
``on_pre_optimizer_step`` event, so the callback clips the edited gradient again
with ``args.max_grad_norm`` unless ``apply()`` already ran earlier in the step
(e.g. from an ``IGATrainer._clip_grad_norm`` override, the better place).

Warm-up (docs/design.md section 8): during ``config.warmup_steps`` the capture is
switched off, so those steps cost exactly an ERM step, and ``.grad`` is
autograd's ERM gradient.

Plain loop::

    iga = IGAStep(model, IGAConfig(tau=1.0, space="factor"), num_domains=K)
    for micro_batches in loader:                      # one optimizer step
        for mb in micro_batches:
            iga.set_domains(mb["domain_ids"])         # (B,) ints in [0, K)
            per_token = token_losses(model, mb)       # (B, T)
            loss = domain_mean_loss(per_token, mb["mask"], mb["domain_ids"], K)
            (loss / len(micro_batches)).backward()
        stats = iga.step(optimizer, max_grad_norm=1.0)  # edit, clip, step
        optimizer.zero_grad()

``transformers.Trainer``: ``callbacks=[iga.trainer_callback()]`` and call
``iga.set_domains(inputs["domain_ids"])`` in ``compute_loss`` (or build the
step with ``domain_key="domain_ids"`` and ``remove_unused_columns=False``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import replace

import torch
import torch.distributed as dist
from torch import nn

from iga.core.aligner import GradientAligner
from iga.core.capture import PerDomainGradients
from iga.core.config import IGAConfig
from iga.core.distributed import all_reduce_mean_, all_reduce_sum_, world_size
from iga.core.estimators import make_estimator

FULL_SPACE_AUTO_BYTES = 256 * 2**20  # space="auto": the largest full-space buffers allowed


def full_space_floats(model: nn.Module, num_domains: int, halves: bool = False) -> int:
    """Floats of full space's per-domain buffers: K (2K with ``halves``, the ``split``
    estimator) x the sum of out x in over the LoRA-adapted weights (peft's ``lora_A``
    beside a ``base_layer``). Factor space holds K x r x (in + out) per layer instead."""
    total = 0
    for module in model.modules():
        if hasattr(module, "lora_A") and hasattr(module, "base_layer"):
            weight = module.base_layer.weight  # (out, in)
            total += weight.shape[0] * weight.shape[1]
    return num_domains * (2 if halves else 1) * total


def resolve_space(config: IGAConfig, model: nn.Module, num_domains: int) -> str:
    """``config.space``, with ``"auto"`` made concrete (docs/design.md section 2).

    Full space is the paper's formulation (the projection acts on the effective weight's
    gradient, out x in); its buffers grow as K x out x in per adapted layer, so a
    30-layer student with LoRA on every linear layer needs 1.7 GB at K = 4 and steps
    1.6x slower. ``"auto"`` keeps full space while its buffers fit in
    ``FULL_SPACE_AUTO_BYTES`` (float32) and takes factor space beyond: the built-in
    student is full (10 MB at K = 4), SmolLM2-135M factor.
    """
    if config.space != "auto":
        return config.space
    halves = config.estimator == "split"
    floats = full_space_floats(model, num_domains, halves)
    return "full" if 4 * floats <= FULL_SPACE_AUTO_BYTES else "factor"


class IGAStep:
    """Invariant Gradient Alignment (arXiv 2606.05025) as a step on a LoRA model.

    ``IGAStep(model, config, num_domains)`` hooks ``model`` (see
    ``PerDomainGradients`` for ``strict``, ``domain_key`` and ``dtype``).
    ``process_group`` is the group the per-domain buffers are averaged over
    under DDP (default: the world, when torch.distributed is initialised).
    """

    def __init__(
        self,
        model: nn.Module,
        config: IGAConfig,
        num_domains: int,
        *,
        strict: bool = True,
        domain_key: str | None = None,
        dtype: torch.dtype | None = None,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        # "auto" is made concrete once, here: everything below sees "full" or "factor".
        config = replace(config, space=resolve_space(config, model, num_domains))
        self.config = config
        self.estimator = make_estimator(config)
        self.capture = PerDomainGradients(
            model,
            num_domains,
            config.space,
            strict=strict,
            domain_key=domain_key,
            dtype=dtype,
            halves=self.estimator.needs_halves,
        )
        if config.mask_target == "update" and self.capture.has_full_space_lora:
            self.capture.remove()
            raise ValueError(
                "mask_target='update' with space='full' is not supported for LoRA layers: the "
                "mask lives on the effective weight (out x in) while the optimizer updates the "
                "factors A and B, so there is no per-coordinate update to mask. Use "
                "space='factor' (the mask then acts on A's and B's updates)."
            )
        self.aligner = GradientAligner(config)
        self.process_group = process_group
        self.capture.enabled = not self.aligner.in_warmup
        self.last_stats: dict[str, float] = {}
        self._applied_generation = -1
        self._update_masks: list[tuple[nn.Parameter, torch.Tensor]] = []
        self._snapshots: list[tuple[nn.Parameter, torch.Tensor, torch.Tensor]] = []

    # ----- the step ----------------------------------------------------------------------
    def set_domains(self, domain_ids: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Domain of each example of the next micro-batch, (B,) integers in [0, K).

        ``weights`` (B,): each example's supervised tokens (its weight in its domain's
        token-mean loss); the ``split`` estimator balances and weighs the halves by it.
        """
        self.capture.set_domains(domain_ids, weights)

    @property
    def applied(self) -> bool:
        """True once ``apply()`` ran for the micro-batches seen since the last step."""
        return self._applied_generation == self.capture.generation

    def apply(self) -> dict[str, float]:
        """Replace ``.grad`` of the captured parameters with the IGA gradient.

        Call once after the last micro-batch's backward; calling it again before
        the next ``set_domains`` is a no-op that returns the same statistics.
        Returns floats for logging: ``iga/warmup``, ``iga/mask_mean`` (mean mask
        value over all masked coordinates), ``iga/cos_to_erm`` (cosine between the
        edited and the ERM gradient of the captured parameters), and the diagnostics
        of issue 14: ``iga/mask_below_half`` (share of coordinates with M < 0.5),
        ``iga/noise_mask`` (with the relative variance: the mask pure noise gives,
        ``m0 + (1 - m0) exp(-tau (K - 1) / K)``) and, with the split estimator,
        ``iga/snr`` (estimated ``sum_k ||mu_k||^2 / sum_k E||G_k - mu_k||^2`` from the
        halves; see ``_snr``).
        """
        if self.applied:
            return self.last_stats
        self._applied_generation = self.capture.generation
        if not self.capture.enabled:  # warm-up: autograd's .grad is the ERM gradient
            self.aligner.steps += 1
            stats = {"iga/warmup": 1.0}
        else:
            stats = self._align()
        self.capture.reset()
        self.capture.enabled = not self.aligner.in_warmup
        self.last_stats = stats
        return stats

    def _align(self) -> dict[str, float]:
        cap = self.capture
        self._all_reduce()
        missing = [k for k, n in enumerate(cap.domain_counts.tolist()) if n == 0]
        if missing:
            raise RuntimeError(
                f"IGA step: domains {missing} had no example in this optimizer step, so their "
                "gradient is undefined. Sample every domain in every step (e.g. whole isomer "
                "sets), or lower num_domains."
            )
        per_domain = cap.per_domain()
        if not per_domain:
            raise RuntimeError(
                "IGA step: no gradient was captured; run forward and backward after "
                "set_domains() and before apply()."
            )
        params = [p for p in cap.parameters() if p.grad is not None]
        erm = [p.grad.detach().clone() for p in params]
        warmup = self.aligner.in_warmup
        halves = cap.half_pairs() if self.estimator.needs_halves else None
        variances = None
        if cap.num_domains > 1 and not warmup:
            variances = self.estimator.variances(per_domain, halves)
        result = self.aligner(per_domain, cap.lora_factors(), variances=variances)
        cap.write_grads(result.grads)
        if self.config.mask_target == "update" and not warmup:
            self._update_masks = [(cap.param_of(k), m) for k, m in result.masks.items()]
        stats = {
            "iga/warmup": float(warmup),
            "iga/mask_mean": _weighted_mean(result.masks.values()),
            "iga/mask_below_half": _weighted_mean(
                (m < 0.5).to(m.dtype) for m in result.masks.values()
            ),
            "iga/cos_to_erm": _cosine(erm, [p.grad for p in params]),
        }
        if self.config.variance == "relative":
            stats["iga/noise_mask"] = noise_mask(self.config, cap.num_domains)
        if halves is not None:
            stats["iga/snr"] = _snr(halves, cap.half_load)
        return stats

    # ----- checkpoints -----------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a resumed run needs besides the model and optimizer: the step count and
        the estimator's state (the EMA averages)."""
        return {"steps": self.aligner.steps, "estimator": self.estimator.state_dict()}

    def load_state_dict(self, state: dict | None) -> None:
        """Restore ``state_dict()``; ``ema`` without saved averages is an error."""
        self.estimator.load_state_dict(None if state is None else state.get("estimator"))
        if state is not None:
            self.aligner.steps = int(state["steps"])
            self.capture.enabled = not self.aligner.in_warmup

    def _all_reduce(self) -> None:
        """Average the buffers over ranks; a layer that ran on any rank counts everywhere."""
        cap = self.capture
        if world_size(self.process_group) == 1:
            return
        keys = cap.keys()
        buffers = cap.raw_buffers(include_stale=True)
        device = next(iter(buffers.values())).device
        written = torch.tensor([float(cap.is_written(k)) for k in keys], device=device)
        counts = cap.domain_counts.to(device)
        all_reduce_sum_(written, self.process_group)
        all_reduce_sum_(counts, self.process_group)
        anywhere = [k for k, w in zip(keys, written.tolist()) if w > 0]
        cap.mark_written(anywhere)
        all_reduce_mean_([buffers[k] for k in anywhere], self.process_group)
        cap.domain_counts.copy_(counts.cpu())
        if cap.halves_on:  # the rank mean of the buffers needs the rank mean of the shares
            load = cap.half_load.to(device=device, dtype=torch.float64)
            all_reduce_mean_([load], self.process_group)
            cap.half_load.copy_(load.cpu())

    # ----- around the optimizer ------------------------------------------------------------
    def before_optimizer_step(self) -> None:
        """With ``mask_target="update"``, remember the masked parameters' values."""
        self._snapshots = [(p, m, p.detach().clone()) for p, m in self._update_masks]

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """With ``mask_target="update"``: ``p = p_old + M (p_new - p_old)``, in place."""
        for p, mask, old in self._snapshots:
            p.copy_(torch.lerp(old, p, mask.to(p.dtype)))
        self._snapshots, self._update_masks = [], []

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable | None = None):
        """``optimizer.step()`` with the update-space mask around it (a plain step otherwise)."""
        self.before_optimizer_step()
        loss = optimizer.step() if closure is None else optimizer.step(closure)
        self.after_optimizer_step()
        return loss

    def step(
        self, optimizer: torch.optim.Optimizer, max_grad_norm: float | None = None
    ) -> dict[str, float]:
        """``apply()``, clip the edited gradient to ``max_grad_norm``, ``optimizer_step``."""
        stats = dict(self.apply())
        if max_grad_norm is not None and max_grad_norm > 0:
            params = _optimizer_params(optimizer)
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
        self.optimizer_step(optimizer)
        return stats

    def trainer_callback(self):
        """A ``transformers.TrainerCallback`` running this step inside ``Trainer``."""
        return _callback_class()(self)

    def remove(self) -> None:
        """Remove the hooks from the model."""
        self.capture.remove()


def noise_mask(config: IGAConfig, num_domains: int) -> float:
    """The mask pure noise gives with the relative variance: ``V -> (K - 1) / K``."""
    k = num_domains
    m = math.exp(-config.tau * (k - 1) / k)
    return config.mask_floor + (1.0 - config.mask_floor) * m


@torch.no_grad()
def _snr(halves, half_load: torch.Tensor) -> float:
    """``sum a_k b_k / sum f_a f_b (a_k - b_k)^2`` over keys, domains and coordinates,
    from ``half_pairs`` (raw half buffers ``P_h = f_h a_h`` and their scales).

    ``a_k b_k`` estimates ``mu_k^2`` without bias (independent halves); with shares
    ``f_h = F_h / F_k``, ``Var(a_k - b_k) = Var(G_k) / (f_a f_b)``, so
    ``f_a f_b (a_k - b_k)^2`` estimates the noise ``E(G_k - mu_k)^2`` of the domain's
    step gradient. The ratio of the sums is the step's signal-to-noise ratio (NaN if
    there is no noise; it can dip below 0 when the signal is lost in the noise).
    """
    share = half_load / half_load.sum(dim=1, keepdim=True)  # (K, 2): f_a, f_b
    f_a, f_b = share[:, 0], share[:, 1]  # (K,)
    signal, noise = 0.0, 0.0
    for pairs, _ in halves.values():
        p_a = pairs[:, 0].flatten(1)  # (K, n): f_a a_k
        p_b = pairs[:, 1].flatten(1)  # (K, n): f_b b_k
        fa = f_a.to(pairs.device, pairs.dtype)
        fb = f_b.to(pairs.device, pairs.dtype)
        # a_k b_k = P_a P_b / (f_a f_b); f_a f_b (a_k - b_k)^2 = (f_b P_a - f_a P_b)^2 / (f_a f_b)
        dots = torch.einsum("kn,kn->k", p_a, p_b)  # (K,)
        signal += float((dots / (fa * fb)).sum())
        diff = p_a * fb[:, None] - p_b * fa[:, None]  # (K, n)
        noise += float((torch.einsum("kn,kn->k", diff, diff) / (fa * fb)).sum())
    return signal / noise if noise > 0 else float("nan")


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _weighted_mean(masks: Iterable[torch.Tensor]) -> float:
    total, count = 0.0, 0
    for m in masks:
        total += float(m.sum())
        count += m.numel()
    return total / count if count else 1.0


def _cosine(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x.double().square().sum()) for x in a))
    nb = math.sqrt(sum(float(y.double().square().sum()) for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else 1.0


@functools.cache
def _callback_class() -> type:
    # transformers is imported here, not at module level: it costs seconds and
    # `import iga` must stay light for the command line and the theory checks.
    from transformers import TrainerCallback

    class IGACallback(TrainerCallback):
        """Runs an ``IGAStep`` inside ``transformers.Trainer``.

        ``on_pre_optimizer_step``: ``apply()`` (if not done yet this step), clip the
        edited gradient to ``args.max_grad_norm`` (the Trainer clipped the unedited
        one), snapshot for the update-space mask. ``on_optimizer_step``: apply the
        update-space mask. Domain ids reach the capture through ``domain_key`` or an
        explicit ``set_domains`` in ``training_step``.
        """

        def __init__(self, iga_step: IGAStep) -> None:
            self.iga_step = iga_step

        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            fresh = not self.iga_step.applied
            self.iga_step.apply()
            if fresh and args.max_grad_norm and args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(
                    self.iga_step.capture.parameters(), args.max_grad_norm
                )
            self.iga_step.before_optimizer_step()

        def on_optimizer_step(self, args, state, control, **kwargs):
            self.iga_step.after_optimizer_step()

    return IGACallback
