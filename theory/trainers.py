"""ERM-SGD and IGA-SGD on the synthetic problems, through ``iga``'s own operators.

Every step hands the per-domain gradients to an *aligner*: ``iga.GradientAligner``
for IGA (mask, projection, chain rule, warm-up) and ``iga.align_gradients(...,
erm=True)`` for ERM, so ERM and IGA differ only in the edit, as in DomainBed.
Nothing here re-implements the mask or the projection; a test that breaks
``iga.core.aligner.masked_mean`` or ``iga.core.aligner.project_low_rank`` breaks these
trainers too (``theory.sabotage``).

The optimizer is plain SGD (no momentum, no Adam): the theorems are about SGD,
and Adam would undo a slowly varying mask (docs/design.md section 8).

Replications are batched: linear parameters are (R, d) and the aligner sees
per-domain gradients (K, R, d), which is exact because the mask is elementwise
and the variance is over the domain axis only. LoRA entries must be
(K, out, in), so each replication is one named entry of a single aligner call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

import iga
from theory.problems import DTYPE, LinearShortcut, LoRAShift

Aligner = Callable[..., "iga.AlignResult"]

# A run has diverged once a per-domain gradient is this large: its square (the mask's
# variance) would overflow float64, so the step is meaningless from here on.
DIVERGED = 1e100


def _diverged(grads: torch.Tensor) -> bool:
    return not bool(torch.isfinite(grads).all()) or float(grads.abs().max()) > DIVERGED


def make_aligner(method: str, config: iga.IGAConfig) -> Aligner:
    """``per_domain, lora -> AlignResult`` for ``method`` "erm" or "iga"."""
    if method == "erm":

        def erm(per_domain, lora=None):
            return iga.align_gradients(per_domain, config, lora, erm=True)

        return erm
    if method == "iga":
        return iga.GradientAligner(config)
    raise ValueError(f"method must be 'erm' or 'iga', got {method!r}.")


# ---------------------------------------------------------------- linear problems


def linear_sample_oracle(problem: LinearShortcut, X: torch.Tensor, y: torch.Tensor):
    """Per-domain empirical gradients on X (R, K, n, d), y (R, K, n): w (R, d) -> (K, R, d).

    Squared loss for regression (through the sufficient statistics X^T X / n and
    X^T y / n, so a step costs O(d^2), not O(n d)); logistic loss for classification.
    """
    n = X.shape[2]
    if problem.kind == "regression":
        xx = X.mT @ X / n  # (R, K, d, d)
        xy = (X.mT @ y[..., None])[..., 0] / n  # (R, K, d)

        def oracle(w):
            g = 2 * ((xx @ w[:, None, :, None])[..., 0] - xy)  # (R, K, d)
            return g.transpose(0, 1)  # (K, R, d)

        return oracle

    def oracle(w):
        f = (X @ w[:, None, :, None])[..., 0]  # (R, K, n)
        resid = -y * torch.sigmoid(-y * f)  # d/df log(1 + exp(-y f))
        g = (resid[..., None] * X).mean(dim=2)  # (R, K, d)
        return g.transpose(0, 1)  # (K, R, d)

    return oracle


@dataclass
class LinearRun:
    w: torch.Tensor  # (R, d) final parameters
    mask_trace: torch.Tensor  # (T, d) mask averaged over replications at each step
    grad_sq: torch.Tensor | None = (
        None  # (T, R) ||grad F(w_t)||^2 when an objective gradient is given
    )
    masked_sq: torch.Tensor | None = None  # (T, R) sum_j M_tj grad_j F(w_t)^2


def run_linear(
    w0: torch.Tensor,
    oracle: Callable[[torch.Tensor], torch.Tensor],
    aligner: Aligner,
    steps: int,
    lr: float | torch.Tensor,
    full_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> LinearRun:
    """SGD ``w <- w - lr * aligner(oracle(w))`` for ``steps`` steps from ``w0`` (R, d).

    ``oracle(w)`` returns per-domain (stochastic) gradients (K, R, d); ``lr`` is a
    float or (R,) per replication. ``full_grad(w)`` (R, d), if given, is the exact
    gradient of the objective whose stationarity is tracked (Theorem 2).
    """
    w = w0.clone()
    lr_t = torch.as_tensor(lr, dtype=DTYPE)
    lr_t = lr_t[:, None] if lr_t.dim() == 1 else lr_t
    masks, grad_sq, masked_sq = [], [], []
    for t in range(steps):
        grads = oracle(w)
        if _diverged(grads):
            return _diverged_linear(w, masks, grad_sq, masked_sq, steps - t, full_grad is not None)
        res = aligner({"w": grads})
        mask = res.masks["w"]  # (R, d)
        if full_grad is not None:
            g = full_grad(w)
            grad_sq.append(g.square().sum(-1))
            masked_sq.append((mask * g.square()).sum(-1))
        masks.append(mask.mean(0))
        w = w - lr_t * res.grads["w"]
    stack = (lambda xs: torch.stack(xs)) if full_grad is not None else (lambda xs: None)
    return LinearRun(w, torch.stack(masks), stack(grad_sq), stack(masked_sq))


def _diverged_linear(w, masks, grad_sq, masked_sq, left: int, tracked: bool) -> LinearRun:
    """A run whose gradients blew up: parameters NaN, the remaining records infinite."""
    nan_w = torch.full_like(w, float("nan"))
    masks = masks + [torch.full_like(w[0], float("nan"))] * left
    if not tracked:
        return LinearRun(nan_w, torch.stack(masks))
    inf = torch.full((w.shape[0],), float("inf"), dtype=w.dtype)
    return LinearRun(
        nan_w,
        torch.stack(masks),
        torch.stack(grad_sq + [inf] * left),
        torch.stack(masked_sq + [inf] * left),
    )


def train_linear(
    problem: LinearShortcut,
    X: torch.Tensor,
    y: torch.Tensor,
    aligner: Aligner,
    steps: int,
    lr: float,
) -> LinearRun:
    """Full-batch (per domain) gradient descent from zero on the sampled training data."""
    w0 = torch.zeros((X.shape[0], problem.d), dtype=DTYPE)
    return run_linear(w0, linear_sample_oracle(problem, X, y), aligner, steps, lr)


# ---------------------------------------------------------------- LoRA problem


@dataclass
class LoRAState:
    A: torch.Tensor  # (R, r, in)
    B: torch.Tensor  # (R, out, r)
    scale: float

    def effective(self, W0: torch.Tensor) -> torch.Tensor:
        return W0 + self.scale * self.B @ self.A  # (R, out, in)


def lora_init(
    problem: LoRAShift, R: int, rank: int, scale: float, gen: torch.Generator
) -> LoRAState:
    """peft's default: ``A`` Gaussian (Kaiming-like scale), ``B = 0``."""
    A = torch.randn((R, rank, problem.in_dim), generator=gen, dtype=DTYPE) / problem.in_dim**0.5
    return LoRAState(A, torch.zeros((R, problem.out_dim, rank), dtype=DTYPE), scale)


def lora_sample_oracle(X: torch.Tensor, Y: torch.Tensor):
    """Per-domain effective-weight gradients of the mean squared loss on X (R, K, n, in),
    Y (R, K, n, out): W (R, out, in) -> (R, K, out, in), via X^T X / n and Y^T X / n."""
    n = X.shape[2]
    xx = X.mT @ X / n  # (R, K, in, in)
    yx = Y.mT @ X / n  # (R, K, out, in)
    return lambda W: 2 * (W[:, None] @ xx - yx)


def lora_align(aligner: Aligner, G: torch.Tensor, state: LoRAState):
    """One aligner call for all replications.

    G (R, K, out, in) -> dA (R, r, in), dB (R, out, r), masks (R, out, in).
    """
    names = [f"rep{i}" for i in range(G.shape[0])]
    per_domain = {n: G[i] for i, n in enumerate(names)}  # each (K, out, in)
    lora = {
        n: iga.LoRAFactors(A=state.A[i], B=state.B[i], scale=state.scale)
        for i, n in enumerate(names)
    }
    res = aligner(per_domain, lora)
    dA = torch.stack([res.grads[n].A for n in names])  # (R, r, in)
    dB = torch.stack([res.grads[n].B for n in names])  # (R, out, r)
    masks = torch.stack([res.masks[n] for n in names])  # (R, out, in)
    return dA, dB, masks


@dataclass
class LoRARun:
    state: LoRAState
    mask_trace: torch.Tensor  # (T, out, in) mask averaged over replications
    trace: dict[str, torch.Tensor] = field(default_factory=dict)  # each (T, R), with full_grad


def _op(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.matrix_norm(x, ord=2)


def run_lora(
    state: LoRAState,
    oracle: Callable[[torch.Tensor], torch.Tensor],
    aligner: Aligner,
    steps: int,
    lr: float,
    W0: torch.Tensor,
    full_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
    callback: Callable[[int, torch.Tensor, LoRAState], None] | None = None,
) -> LoRARun:
    """SGD on the factors with the aligner's direction; ``oracle(W)`` -> (R, K, out, in).

    With ``full_grad(W)`` (the exact effective-weight gradient of the objective,
    (R, out, in)) the trace holds, per step and replication: ``grad_sq`` =
    ||grad_(A,B) f||^2, ``directional`` = <grad f, d_t>, ``dir_sq`` = ||d_t||^2 and
    the norms Theorem 3's smoothness constant needs on the segment to the next
    iterate (``op_A``, ``op_B``, ``op_grad``, ``seg``). ``callback(t, grads, state)``,
    if given, sees each step's per-domain gradients.
    """
    st = LoRAState(state.A.clone(), state.B.clone(), state.scale)
    masks, rows = [], []
    for t in range(steps):
        W = st.effective(W0)
        G = oracle(W)
        if _diverged(G):
            return _diverged_lora(st, W, masks, rows, steps - t)
        if callback is not None:
            callback(t, G, st)
        dA, dB, mask = lora_align(aligner, G, st)
        masks.append(mask.mean(0))
        nxt = LoRAState(st.A - lr * dA, st.B - lr * dB, st.scale)
        if full_grad is not None:
            g = iga.lora_factor_grads(full_grad(W), st.B, st.A, st.scale)
            g_next = full_grad(nxt.effective(W0))
            rows.append(
                {
                    "grad_sq": g.A.square().sum((-2, -1)) + g.B.square().sum((-2, -1)),
                    "directional": (g.A * dA).sum((-2, -1)) + (g.B * dB).sum((-2, -1)),
                    "dir_sq": dA.square().sum((-2, -1)) + dB.square().sum((-2, -1)),
                    "op_A": torch.maximum(_op(st.A), _op(nxt.A)),
                    "op_B": torch.maximum(_op(st.B), _op(nxt.B)),
                    "op_grad": torch.maximum(_op(full_grad(W)), _op(g_next)),
                    "seg": lr**2 * dB.norm(dim=(-2, -1)) * dA.norm(dim=(-2, -1)),
                }
            )
        st = nxt
    trace = {k: torch.stack([r[k] for r in rows]) for k in rows[0]} if rows else {}
    return LoRARun(st, torch.stack(masks), trace)


def _diverged_lora(st: LoRAState, W: torch.Tensor, masks, rows, left: int) -> LoRARun:
    """A run whose gradients blew up: factors NaN, the remaining records infinite."""
    nan = float("nan")
    state = LoRAState(torch.full_like(st.A, nan), torch.full_like(st.B, nan), st.scale)
    masks = masks + [torch.full_like(W[0], nan)] * left
    trace = {}
    if rows:
        inf = torch.full_like(rows[0]["grad_sq"], float("inf"))
        trace = {k: torch.stack([r[k] for r in rows] + [inf] * left) for k in rows[0]}
    return LoRARun(state, torch.stack(masks), trace)


def train_lora(
    problem: LoRAShift,
    X: torch.Tensor,
    Y: torch.Tensor,
    init: LoRAState,
    aligner: Aligner,
    steps: int,
    lr: float,
) -> LoRARun:
    """Full-batch (per domain) gradient descent on the factors from ``init``."""
    return run_lora(init, lora_sample_oracle(X, Y), aligner, steps, lr, problem.W0)


# ---------------------------------------------------------------- split estimator (Lemma E)


class SplitMask:
    """IGA whose mask comes from ``iga.split_conflict_variance`` on two halves per domain.

    Plain parameters only. ``halves`` is set by the oracle of ``split_oracle`` before each
    call: per-domain gradients of two disjoint halves of each domain's examples (K, R, d),
    whose mean is the full-batch per-domain gradient the step averages.
    """

    def __init__(self, config: iga.IGAConfig) -> None:
        self.config = config
        self.halves: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, per_domain, lora=None):
        if self.halves is None:
            raise RuntimeError("SplitMask needs the oracle's halves; use split_oracle.")
        a, b = self.halves
        c = self.config
        mask = iga.conflict_mask(
            iga.split_conflict_variance(a, b, c.variance, c.eps), c.tau, floor=c.mask_floor
        )
        grads = {name: mask * g.mean(dim=0) for name, g in per_domain.items()}
        return iga.AlignResult(grads=grads, masks={name: mask for name in per_domain})


def split_oracle(half_oracles, split: SplitMask | None):
    """``w -> (K, R, d)``: the mean of the two halves' gradients, recording them in ``split``."""

    def oracle(w):
        a, b = (o(w) for o in half_oracles)
        if split is not None:
            split.halves = (a, b)
        return 0.5 * (a + b)

    return oracle
