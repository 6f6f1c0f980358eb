"""Each baseline's update against an independent computation of its paper's equations.

The oracle is written here from the equations (loops, float64, closed forms, none of
``empirical.methods``' helpers) on a tiny position-wise language model with fixed
weights and fixed token data. For gradient-editing and penalty methods we compare the
gradient each method hands to the optimizer (before clipping); for Fish, the parameters
after its meta step. Every comparison has a deliberately broken companion (a
monkeypatched or altered implementation) that must fail it, and every penalty has a
companion whose penalty lost its gradient (detached), which must fail too.

The methods compute cross-entropies in float32 (``completion_token_losses`` casts the
logits), so the float64 oracle is matched to float32 accuracy (``RTOL``, ``ATOL``); every
broken companion misses by orders of magnitude more.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from empirical.methods import alignment, gradients, make_method, penalties
from empirical.methods.alignment import Fish
from empirical.methods.erm import ERM

K = 4
VOCAB, WIDTH, LENGTH = 6, 4, 6
RTOL, ATOL = 1e-4, 1e-7
# Examples per domain (odd counts exercise IRMv1's halves) and supervised tokens per example.
SIZES = (3, 4, 3, 2)
PROMPT = 2  # the first PROMPT label positions are -100


class TinyLM(nn.Module):
    """Frozen embedding -> trainable Linear, tanh -> trainable Linear, tanh -> frozen head.

    Position-wise (no attention), so padding never changes another token's logits.
    Returns what ``Method`` reads from a Hugging Face causal LM: ``logits`` (B, T, V) and
    ``hidden_states`` whose last entry is the head's input (B, T, d).
    """

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.l1 = nn.Linear(WIDTH, WIDTH)
        self.l2 = nn.Linear(WIDTH, WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB, bias=False)
        gen = torch.Generator().manual_seed(seed)
        self.double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.8 * torch.randn(p.shape, generator=gen, dtype=torch.float64))
        self.emb.weight.requires_grad_(False)
        self.head.weight.requires_grad_(False)

    def forward(self, input_ids, attention_mask=None, output_hidden_states=False):
        h0 = self.emb(input_ids)  # (B, T, d)
        h1 = torch.tanh(self.l1(h0))  # (B, T, d)
        h2 = torch.tanh(self.l2(h1))  # (B, T, d)
        return SimpleNamespace(logits=self.head(h2), hidden_states=(h0, h1, h2))


def domain_batches(seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """K right-padded batches of random tokens; example i of domain k supervises a varying
    number of its last tokens."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k, n in enumerate(SIZES):
        ids = torch.randint(1, VOCAB, (n, LENGTH), generator=gen)
        labels = ids.clone()
        labels[:, :PROMPT] = -100
        for i in range(n):
            cut = PROMPT + (i + k) % 2  # one more prompt token on alternate examples
            labels[i, :cut] = -100
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


BATCHES = domain_batches()


def fresh_model() -> TinyLM:
    return TinyLM()


def copy_of(model: nn.Module) -> TinyLM:
    """An unhooked model holding ``model``'s current weights (the oracle's own copy)."""
    ref = TinyLM()
    ref.load_state_dict(model.state_dict())
    return ref


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# ----- the oracle: every quantity from its equation, in float64 -----------------------------


def token_terms(model: TinyLM, batch: dict[str, torch.Tensor]) -> list[list[tuple]]:
    """Per example, per supervised position t (predicting token t+1): (logits z, target y,
    hidden h). Built by looping over positions."""
    out = model(batch["input_ids"])
    rows = []
    for i in range(batch["input_ids"].shape[0]):
        terms = []
        for t in range(LENGTH - 1):
            y = int(batch["labels"][i, t + 1])
            if y != -100:
                terms.append((out.logits[i, t], y, out.hidden_states[-1][i, t]))
        rows.append(terms)
    return rows


def cross_entropy(z: torch.Tensor, y: int) -> torch.Tensor:
    return torch.logsumexp(z, dim=0) - z[y]


def domain_loss(model: TinyLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_k: the mean cross-entropy over the domain's supervised tokens."""
    terms = [term for row in token_terms(model, batch) for term in row]
    return sum(cross_entropy(z, y) for z, y, _ in terms) / len(terms)


def domain_losses(model: TinyLM) -> list[torch.Tensor]:
    return [domain_loss(model, b) for b in BATCHES]


def grads_of(objective: torch.Tensor, model: nn.Module, create_graph: bool = False) -> list:
    return list(torch.autograd.grad(objective, trainable(model), create_graph=create_graph))


def per_domain_grads(model: TinyLM) -> list[list[torch.Tensor]]:
    """grad L_k for each domain k, one backward pass per domain."""
    return [grads_of(loss, model) for loss in domain_losses(model)]


# ----- running a method and reading the gradient it hands to the optimizer ---------------


def run(name: str, hp: dict, oracle, steps: int = 10, updates: int = 1):
    """``updates`` updates of ``name`` on a fresh model; returns (method, [(oracle's
    gradients, the method's gradients)] per update), where ``oracle(model_copy, step)`` is
    evaluated on the weights before each update."""
    model = fresh_model()
    method = make_method(name, model, K, {"lr": 1e-2, "lora_rank": 2, **hp}, steps=steps)
    seen: list[list[torch.Tensor]] = []
    inner = method._clip_and_step

    def recording() -> float:
        seen.append([p.grad.detach().clone() for p in method.params])
        return inner()

    method._clip_and_step = recording
    pairs = []
    for step in range(updates):
        expected = oracle(copy_of(model), step)
        method.update(BATCHES)
        assert len(seen) == step + 1, f"{name}: update {step} did not reach the optimizer once"
        pairs.append((expected, seen[-1]))
    method.close()
    return method, pairs


def assert_grads_match(pairs) -> None:
    for step, (expected, got) in enumerate(pairs):
        assert len(expected) == len(got)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=RTOL, atol=ATOL, msg=f"update {step}")


def assert_fails(check, *args) -> None:
    """The broken companion: the same comparison must fail."""
    with pytest.raises(AssertionError):
        check(*args)


# ----- ERM (the control every other comparison builds on) -----------------------------------


def erm_oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
    return grads_of(sum(domain_losses(model)) / K, model)


def test_erm_is_the_mean_of_domain_token_means_and_a_pooled_mean_fails(monkeypatch):
    _, pairs = run("erm", {}, updates=2, oracle=erm_oracle)
    assert_grads_match(pairs)

    def pooled(self, batch):  # every token alike: weights domains by their token counts
        ce, mask, _ = self.forward(batch)
        return (ce * mask).sum() / mask.sum()

    monkeypatch.setattr(ERM, "erm_loss", pooled)
    assert_fails(assert_grads_match, run("erm", {}, updates=2, oracle=erm_oracle)[1])


# ----- IRMv1 ---------------------------------------------------------------------------------


def irm_oracle(lam: float):
    """``mean_k L_k + lam * (1/K) sum_k g_k^a g_k^b``, g = dL/dw at w = 1 in closed form:
    ``d/dw CE(w z, y) = softmax(z) . z - z_y``; a/b the even/odd examples of domain k."""

    def oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
        nll = sum(domain_losses(model)) / K
        penalty = 0.0
        for batch in BATCHES:
            rows = token_terms(model, batch)
            halves = [rows[0::2], rows[1::2]] if len(rows) > 1 else [rows, rows]
            g = []
            for half in halves:
                terms = [term for row in half for term in row]
                g.append(sum(torch.softmax(z, 0) @ z - z[y] for z, y, _ in terms) / len(terms))
            penalty = penalty + g[0] * g[1]
        return grads_of(nll + lam * penalty / K, model)

    return oracle


def test_irm_matches_its_equation_and_broken_variants_fail(monkeypatch):
    hp = {"lambda": 30.0, "anneal_frac": 0.0}
    _, pairs = run("irm", hp, oracle=irm_oracle(30.0))
    assert_grads_match(pairs)
    original = penalties.irm_penalty
    for broken in (
        lambda *a: original(*a).detach(),  # the penalty lost its gradient
        lambda *a: original(*a) * K,  # sum over domains instead of DomainBed's mean
    ):
        monkeypatch.setattr(penalties, "irm_penalty", broken)
        assert_fails(assert_grads_match, run("irm", hp, oracle=irm_oracle(30.0))[1])


# ----- V-REx ---------------------------------------------------------------------------------


def vrex_oracle(lam: float):
    def oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
        losses = domain_losses(model)
        mean = sum(losses) / K
        var = sum((loss - mean) ** 2 for loss in losses) / K
        return grads_of(mean + lam * var, model)

    return oracle


def test_vrex_matches_its_equation_and_broken_variants_fail(monkeypatch):
    hp = {"lambda": 10.0, "anneal_frac": 0.0}
    _, pairs = run("vrex", hp, oracle=vrex_oracle(10.0))
    assert_grads_match(pairs)
    original = penalties.vrex_penalty
    for broken in (
        lambda losses: original(losses).detach(),
        lambda losses: losses.var(),  # divisor K - 1
    ):
        monkeypatch.setattr(penalties, "vrex_penalty", broken)
        assert_fails(assert_grads_match, run("vrex", hp, oracle=vrex_oracle(10.0))[1])


# ----- penalty schedules ---------------------------------------------------------------------


def weight_schedule(name: str, monkeypatch, swap: bool = False) -> tuple[list, list]:
    """The penalty weight of each of 4 updates (anneal at update 2) and the updates at
    which Adam was reset. ``swap=True`` is the broken variant: 1 and 0 exchanged before
    annealing (Fishr's old weight 1; IRMv1 and V-REx with Fishr's 0)."""
    weights, resets = [], []
    original = penalties.annealed_weight

    def spy(method, before):
        w = original(method, 1.0 - before if swap else before)
        weights.append(w)
        return w

    monkeypatch.setattr(alignment if name == "fishr" else penalties, "annealed_weight", spy)
    hp = {"lr": 1e-2, "lora_rank": 2, "lambda": 7.0, "anneal_frac": 0.5, "ema": 0.9}
    method = make_method(name, fresh_model(), K, hp, steps=4)
    method.reset_optimizer = lambda: resets.append(method.update_count)
    for _ in range(4):
        method.update(BATCHES)
    return weights, resets


@pytest.mark.parametrize(("name", "before"), [("irm", 1.0), ("vrex", 1.0), ("fishr", 0.0)])
def test_penalty_weight_schedule_and_adam_reset(name, before, monkeypatch):
    """DomainBed: weight ``before`` until the anneal step, then lambda; Adam reset exactly
    there. Fishr's ``before`` is 0 (DomainBed's Fishr), IRMv1's and V-REx's 1."""

    def check(schedule) -> None:
        assert schedule == ([before, before, 7.0, 7.0], [2])

    check(weight_schedule(name, monkeypatch))
    assert_fails(check, weight_schedule(name, monkeypatch, swap=True))


# ----- GroupDRO ------------------------------------------------------------------------------


def groupdro_oracle(eta: float):
    state = {"q": [1.0 / K] * K}

    def oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
        losses = domain_losses(model)
        q = [qk * math.exp(eta * loss.item()) for qk, loss in zip(state["q"], losses)]
        q = [qk / sum(q) for qk in q]
        state["q"] = q
        return grads_of(sum(qk * loss for qk, loss in zip(q, losses)), model)

    return oracle


def test_groupdro_matches_algorithm_1_and_broken_variants_fail(monkeypatch):
    hp = {"eta": 2.0}
    method, pairs = run("groupdro", hp, updates=3, oracle=groupdro_oracle(2.0))
    assert_grads_match(pairs)
    assert float(method.q.max()) > 1.0 / K + 0.05  # the weights really moved
    original = penalties.groupdro_weights
    for broken in (
        lambda q, losses, eta: q,  # weights never updated (ERM)
        lambda q, losses, eta: original(q, losses, -eta),  # descends on q
    ):
        monkeypatch.setattr(penalties, "groupdro_weights", broken)
        assert_fails(
            assert_grads_match, run("groupdro", hp, updates=3, oracle=groupdro_oracle(2.0))[1]
        )


# ----- Fishr ---------------------------------------------------------------------------------


def fishr_oracle(lam: float, ema: float, anneal: int):
    """Per-example head gradients ``sum_t (softmax(z_t) - e_{y_t}) h_t^T / n_i`` (V, d),
    within-domain variance (divisor n_k), DomainBed's moving average (from 0, divided by
    1 - ema), penalty ``(1/K) sum_k mean_coords (v_k - mean v)^2``, weight 0 before
    ``anneal`` and lam after."""
    state: dict[int, torch.Tensor] = {}

    def oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
        averaged = []
        for k, batch in enumerate(BATCHES):
            per_example = []
            for row in token_terms(model, batch):
                g = 0.0
                for z, y, h in row:
                    err = torch.softmax(z, 0) - torch.eye(VOCAB, dtype=z.dtype)[y]  # (V,)
                    g = g + torch.outer(err, h) / len(row)  # (V, d)
                per_example.append(g)
            mean = sum(per_example) / len(per_example)
            var = sum((g - mean) ** 2 for g in per_example) / len(per_example)  # (V, d)
            s = ema * state.get(k, torch.zeros_like(var)) + (1 - ema) * var
            state[k] = s.detach()
            averaged.append(s / (1 - ema))
        centre = sum(averaged) / K
        penalty = sum(((v - centre) ** 2).mean() for v in averaged) / K
        weight = lam if step >= anneal else 0.0
        return grads_of(sum(domain_losses(model)) / K + weight * penalty, model)

    return oracle


def test_fishr_matches_its_equations_and_broken_variants_fail(monkeypatch):
    hp = {"lambda": 300.0, "ema": 0.8, "anneal_frac": 0.5}

    def check():
        return run("fishr", hp, steps=4, updates=4, oracle=fishr_oracle(300.0, 0.8, 2))[1]

    assert_grads_match(check())
    original_penalty = alignment.fishr_penalty

    def plain_average(state, value, ema):  # our old EMA: starts at the value, no correction
        new = value if state is None else ema * state + (1 - ema) * value
        return new.detach(), new

    for name, broken in (
        ("fishr_penalty", lambda v: original_penalty(v).detach()),
        ("fishr_penalty", lambda v: (v - v.mean(0)).square().sum(dim=(1, 2)).mean()),  # sum
        ("fishr_moving_average", plain_average),
    ):
        with monkeypatch.context() as m:
            m.setattr(alignment, name, broken)
            assert_fails(assert_grads_match, check())


# ----- KY-GradVar ----------------------------------------------------------------------------


def gradvar_oracle(lam: float):
    """``mean_k L_k + lam * (1/K) sum_k ||grad L_k - mean_j grad L_j||^2``."""

    def oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
        losses = domain_losses(model)
        gs = [torch.cat([g.reshape(-1) for g in grads_of(loss, model, True)]) for loss in losses]
        mean = sum(gs) / K
        penalty = sum(((g - mean) ** 2).sum() for g in gs) / K
        return grads_of(sum(losses) / K + lam * penalty, model)

    return oracle


def test_ky_gradvar_matches_its_objective_and_broken_variants_fail(monkeypatch):
    hp = {"lambda": 3.0}
    _, pairs = run("ky-gradvar", hp, oracle=gradvar_oracle(3.0))
    assert_grads_match(pairs)
    original = alignment.gradient_variance_penalty
    for broken in (
        lambda flat: original(flat).detach(),
        lambda flat: original(flat) * K,  # DomainBed's sum over domains at the same lambda
    ):
        monkeypatch.setattr(alignment, "gradient_variance_penalty", broken)
        assert_fails(assert_grads_match, run("ky-gradvar", hp, oracle=gradvar_oracle(3.0))[1])


# ----- AND-mask and SAND-mask ----------------------------------------------------------------


def and_mask_reference(stack: list[torch.Tensor], tau: float) -> torch.Tensor:
    """Coordinate by coordinate: keep mean_k g_k where |mean_k sign g_k| >= tau, then
    divide by the kept fraction (+1e-10)."""
    shape = stack[0].shape
    flat = [g.reshape(-1).tolist() for g in stack]
    n = len(flat[0])
    mask, mean = [], []
    for c in range(n):
        values = [f[c] for f in flat]
        agreement = abs(sum((v > 0) - (v < 0) for v in values) / len(values))
        mask.append(1.0 if agreement >= tau else 0.0)
        mean.append(sum(values) / len(values))
    frac = sum(mask) / n
    out = [m * g / (1e-10 + frac) for m, g in zip(mask, mean)]
    return torch.tensor(out, dtype=torch.float64).reshape(shape)


def sand_mask_reference(stack: list[torch.Tensor], tau: float, k: float) -> torch.Tensor:
    """Coordinate by coordinate: ``max(0, tanh(k (agreement - tau) / s^2))`` with the
    unbiased variance ``s^2 = sum (g - mean)^2 / (K - 1)`` (zero variance: mask 1 above tau,
    0 below), times the mean gradient, divided by the mask's mean (+1e-10)."""
    shape = stack[0].shape
    flat = [g.reshape(-1).tolist() for g in stack]
    n = len(flat[0])
    mask, mean = [], []
    for c in range(n):
        values = [f[c] for f in flat]
        agreement = abs(sum((v > 0) - (v < 0) for v in values) / len(values))
        mu = sum(values) / len(values)
        s2 = sum((v - mu) ** 2 for v in values) / (len(values) - 1)
        if s2 == 0.0:
            m = 1.0 if agreement > tau else (1e-17 if agreement == tau else 0.0)
        else:
            m = max(0.0, math.tanh(k * (agreement - tau) / s2))
        mask.append(m)
        mean.append(mu)
    scale = sum(mask) / n
    out = [m * g / (1e-10 + scale) for m, g in zip(mask, mean)]
    return torch.tensor(out, dtype=torch.float64).reshape(shape)


# Fixed small inputs, K = 4 domains x 6 coordinates: full agreement, 3 of 4 (agreement 0.5,
# exactly tau below), 2 of 4 (agreement 0), a zero coordinate, a zero-variance one.
FIXED = torch.tensor(
    [
        [0.3, 0.2, -0.1, 0.0, 0.5, 1.0],
        [0.1, 0.4, 0.2, 0.0, 0.5, -2.0],
        [0.2, -0.3, -0.4, 0.0, 0.5, 0.7],
        [0.6, 0.1, 0.3, 0.0, 0.5, 0.2],
    ],
    dtype=torch.float64,
)


def test_and_mask_on_fixed_inputs_and_a_strict_threshold_fails():
    stack = list(FIXED)
    for tau in (0.5, 1.0, 0.2):
        got, _ = gradients.and_mask(FIXED, tau)
        torch.testing.assert_close(got, and_mask_reference(stack, tau), rtol=1e-12, atol=0)
    # Hand value at tau = 0.5: coordinates 0, 1, 4, 5 kept (4 of 6), means scaled by 6/4.
    means = FIXED.mean(0)
    hand = torch.tensor([means[0], means[1], 0, 0, means[4], means[5]]) * 1.5
    torch.testing.assert_close(gradients.and_mask(FIXED, 0.5)[0], hand, rtol=1e-9, atol=0)

    def strict(g, tau):  # '>' drops the coordinates whose agreement equals tau
        mask = (torch.sign(g).mean(0).abs() > tau).to(g.dtype)
        return mask * g.mean(0) / (1e-10 + mask.mean())

    assert_fails(torch.testing.assert_close, strict(FIXED, 0.5), and_mask_reference(stack, 0.5))


def test_sand_mask_on_fixed_inputs_and_a_biased_variance_fails():
    stack = list(FIXED)
    for tau, k in ((0.4, 0.05), (0.4, 10.0), (0.0, 0.01), (0.5, 0.1)):
        got, mask = gradients.sand_mask(FIXED, tau, k)
        torch.testing.assert_close(got, sand_mask_reference(stack, tau, k), rtol=1e-12, atol=0)
        assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    # Zero variance above tau: mask 1 (DomainBed's 1/var = inf); below: 0; equal: 1e-17.
    _, mask = gradients.sand_mask(FIXED, 0.4, 0.05)
    assert float(mask[4]) == 1.0 and float(mask[3]) == 0.0
    assert float(gradients.sand_mask(FIXED, 1.0, 0.05)[1][4]) == 1e-17
    # The mask is graded, not binary, at k = 0.05: the variance really enters.
    assert 0.05 < float(mask[0]) < 0.95

    def biased(g, tau, k):  # our old SAND-mask: divisor K
        agreement = torch.sign(g).mean(0).abs()
        var = g.var(0, unbiased=False).clamp_min(1e-17)
        m = torch.tanh(k * (agreement - tau) / var).clamp_min(0).nan_to_num(1e-17)
        return m * g.mean(0) / (1e-10 + m.mean())

    assert_fails(
        torch.testing.assert_close, biased(FIXED, 0.4, 0.05), sand_mask_reference(stack, 0.4, 0.05)
    )


def mask_oracle(reference, *args):
    def oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
        per_domain = per_domain_grads(model)  # K x params
        return [reference([g[p] for g in per_domain], *args) for p in range(len(per_domain[0]))]

    return oracle


def test_and_mask_update_matches_the_reference_and_broken_variants_fail(monkeypatch):
    _, pairs = run("andmask", {"tau": 0.5}, oracle=mask_oracle(and_mask_reference, 0.5))
    assert_grads_match(pairs)
    monkeypatch.setattr(gradients, "and_mask", lambda g, tau: (g.mean(0), g[0]))  # no mask
    broken = run("andmask", {"tau": 0.5}, oracle=mask_oracle(and_mask_reference, 0.5))[1]
    assert_fails(assert_grads_match, broken)


def test_sand_mask_update_matches_the_reference_and_broken_variants_fail(monkeypatch):
    hp = {"tau": 0.4, "k": 0.02}
    _, pairs = run("sandmask", hp, oracle=mask_oracle(sand_mask_reference, 0.4, 0.02))
    assert_grads_match(pairs)
    original = gradients.sand_mask

    def biased(g, tau, k):  # the variance with divisor K: k scaled by (K - 1) / K
        return original(g, tau, k * K / (K - 1))

    monkeypatch.setattr(gradients, "sand_mask", biased)
    broken = run("sandmask", hp, oracle=mask_oracle(sand_mask_reference, 0.4, 0.02))[1]
    assert_fails(assert_grads_match, broken)


# ----- PCGrad --------------------------------------------------------------------------------


def pcgrad_reference(vectors: list[list[float]], orders: list[list[int]]) -> list[float]:
    """Yu et al.'s Algorithm 1 with plain lists: project g_i^PC off every g_j it conflicts
    with, in ``orders[i]``; return the mean of the g_i^PC."""
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    projected = []
    for i, order in enumerate(orders):
        gi = list(vectors[i])
        for j in order:
            d = dot(gi, vectors[j])
            if d < 0:
                gi = [x - d / dot(vectors[j], vectors[j]) * y for x, y in zip(gi, vectors[j])]
        projected.append(gi)
    return [sum(col) / len(projected) for col in zip(*projected)]


def test_pcgrad_on_fixed_inputs_and_projecting_on_projected_gradients_fails():
    # By hand, K = 2: g1.g2 = -1, g1^PC = g1 + g2 / 2 = (0.5, 0.5), g2^PC = g2 + g1 = (0, 1).
    mean, conflicts = gradients.pcgrad(torch.tensor([[1.0, 0.0], [-1.0, 1.0]]), [[1], [0]])
    torch.testing.assert_close(mean, torch.tensor([0.25, 0.75]))
    assert conflicts == 2
    # K = 3 tasks, 3 coordinates: g1 conflicts with g2 and g3, g2 with g3.
    flat = torch.tensor([[1.0, 0.0, 0.5], [-0.8, 1.0, 0.0], [-0.5, -1.0, 0.2]], dtype=torch.float64)
    orders = [[1, 2], [2, 0], [0, 1]]
    got, _ = gradients.pcgrad(flat, orders)
    expected = torch.tensor(pcgrad_reference(flat.tolist(), orders), dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    # The order matters on these inputs, so the shuffle is really part of the algorithm.
    other = torch.tensor(pcgrad_reference(flat.tolist(), [[2, 1], [0, 2], [1, 0]]))
    assert not torch.allclose(other.double(), expected, rtol=1e-3)

    def on_projected(flat, orders):  # a common slip: project on the already edited g_j^PC
        projected = flat.clone()
        for i, order in enumerate(orders):
            for j in order:
                d = projected[i] @ projected[j]
                if d < 0:
                    projected[i] -= d / projected[j].square().sum() * projected[j]
        return projected.mean(0)

    assert_fails(torch.testing.assert_close, on_projected(flat, orders), expected)


def pcgrad_oracle(seed: int):
    gen = torch.Generator().manual_seed(seed)

    def oracle(model: TinyLM, step: int) -> list[torch.Tensor]:
        per_domain = per_domain_grads(model)
        shapes = [g.shape for g in per_domain[0]]
        vectors = [torch.cat([g.reshape(-1) for g in gs]).tolist() for gs in per_domain]
        orders = []
        for i in range(K):  # the run's stream: one permutation of the K domains per domain
            orders.append([j for j in torch.randperm(K, generator=gen).tolist() if j != i])
        mean = torch.tensor(pcgrad_reference(vectors, orders), dtype=torch.float64)
        return list(torch.split(mean, [math.prod(s) for s in shapes]))

    def shaped(model, step):
        flat = oracle(model, step)
        return [f.reshape(p.shape) for f, p in zip(flat, trainable(model))]

    return shaped


def test_pcgrad_update_matches_algorithm_1_and_broken_variants_fail(monkeypatch):
    _, pairs = run("pcgrad", {}, updates=2, oracle=pcgrad_oracle(0))
    assert_grads_match(pairs)
    monkeypatch.setattr(gradients, "pcgrad", lambda flat, orders: (flat.mean(0), 0))  # no surgery
    assert_fails(assert_grads_match, run("pcgrad", {}, updates=2, oracle=pcgrad_oracle(0))[1])


def test_pcgrad_update_has_conflicts_to_resolve():
    """Without a conflict the surgery is the identity and the test above could not fail."""
    grads = per_domain_grads(fresh_model())
    vectors = [torch.cat([g.reshape(-1) for g in gs]) for gs in grads]
    assert any(float(vectors[i] @ vectors[j]) < 0 for i in range(K) for j in range(K))


# ----- Fish ----------------------------------------------------------------------------------


def fish_reference(model: TinyLM, lr: float, meta: float, order: list[int], adam: dict):
    """One Fish step by hand: for each domain in ``order``, clip grad L_k to norm 1
    (``clip_grad_norm_``: factor min(1, 1 / (norm + 1e-6))) and take one Adam step
    (betas 0.9, 0.999, eps 1e-8, bias-corrected) whose moments and count live in ``adam``
    across outer steps; then ``theta <- theta0 + meta (theta_inner - theta0)``."""
    theta0 = [p.detach().clone() for p in trainable(model)]
    for k in order:
        g = grads_of(domain_loss(model, BATCHES[k]), model)
        norm = math.sqrt(sum(float((x**2).sum()) for x in g))
        g = [x * min(1.0, 1.0 / (norm + 1e-6)) for x in g]
        adam["t"] += 1
        t = adam["t"]
        with torch.no_grad():
            for i, (p, gi) in enumerate(zip(trainable(model), g)):
                adam["m"][i] = 0.9 * adam["m"][i] + 0.1 * gi
                adam["v"][i] = 0.999 * adam["v"][i] + 0.001 * gi**2
                m_hat = adam["m"][i] / (1 - 0.9**t)
                v_hat = adam["v"][i] / (1 - 0.999**t)
                p -= lr * m_hat / (v_hat.sqrt() + 1e-8)
    with torch.no_grad():
        for p, p0 in zip(trainable(model), theta0):
            p.copy_(p0 + meta * (p - p0))
    return [p.detach().clone() for p in trainable(model)]


def fish_check(cls=Fish, outer_steps: int = 3) -> None:
    model = fresh_model()
    hp = {"lr": 0.05, "lora_rank": 2, "meta_lr": 0.5}
    method = cls(model, K, hp, 20, seed=3)
    ref = copy_of(model)
    gen = torch.Generator().manual_seed(3)
    adam = {"t": 0, "m": [0 * p for p in trainable(ref)], "v": [0 * p for p in trainable(ref)]}
    for step in range(outer_steps):
        lr = method.optimizer.param_groups[0]["lr"]
        order = torch.randperm(K, generator=gen).tolist()
        expected = fish_reference(ref, lr, 0.5, order, adam)
        method.update(BATCHES)
        for p, e in zip(method.params, expected):
            torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-7, msg=f"step {step}")


def test_fish_matches_the_algorithm_with_a_persistent_inner_adam():
    fish_check()


def test_fish_with_a_fresh_inner_adam_each_step_fails():
    """Our old Fish (a new inner Adam every outer step) must fail the same check."""

    class FreshFish(Fish):
        def _step(self, batch):
            self.inner = torch.optim.Adam(self.params, lr=self.hparams["lr"])
            return super()._step(batch)

    assert_fails(fish_check, FreshFish)


def test_fish_in_a_fixed_order_fails():
    """Fish permutes the domains every step; DomainBed's fixed order must fail the check."""

    class FixedOrder(Fish):
        def domain_order(self) -> list[int]:
            return list(range(self.num_domains))

    assert_fails(fish_check, FixedOrder)
