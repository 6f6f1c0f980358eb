"""The library's IGA step against the independent reference (``theory.reference``).

``reference_check`` draws seeded random LoRA problems (K, shapes, rank, scale s != 1,
raw or relative variance, tau, floor) and compares, in float64,

* ``iga.align_gradients`` (or a given ``step``, e.g. a sabotaged one) and
  ``iga.GradientAligner``: factor gradients ``dA``, ``dB`` and the mask of a
  full-space LoRA entry;
* ``iga.IGAStep`` on a plain ``nn.Linear``: the ``.grad`` it writes, against the
  reference's ``M * Gbar`` on per-domain gradients from one backward per domain.

Pass iff every relative error is below ``TOL`` (THEOREMS.md section 0: the step the
theorems are about is the step the trainer takes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

import iga
from theory.common import CheckResult, Settings, fmt, gen
from theory.problems import DTYPE
from theory.reference import reference_lora_step, reference_plain_step

TOL = 1e-9
Step = Callable[..., "iga.AlignResult"]


def library_step(per_domain, config, lora):
    return iga.align_gradients(per_domain, config, lora)


def random_lora_problem(g: torch.Generator, i: int) -> dict:
    """One seeded problem: per-domain gradients, factors, scale != 1 and an IGA config."""
    pick = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    K, out, inp, r = pick(2, 5), pick(4, 8), pick(5, 9), pick(1, 2)
    variance = ("raw", "relative")[i % 2]
    config = iga.IGAConfig(
        tau=float(0.2 + 4 * torch.rand((), generator=g, dtype=DTYPE)),
        variance=variance,
        projection="svd",
        svd_method="exact",
        mask_floor=(0.0, 0.1)[(i // 2) % 2],
        eps=1e-12,
        estimator="batch",  # the reference implements the minibatch V of the equations
    )
    # Shared part + domain part, so masks spread over (0, 1) rather than sit at 0 or 1.
    shared = torch.randn((1, out, inp), generator=g, dtype=DTYPE)
    G = shared + 0.6 * torch.randn((K, out, inp), generator=g, dtype=DTYPE)
    A = torch.randn((r, inp), generator=g, dtype=DTYPE)
    B = torch.randn((out, r), generator=g, dtype=DTYPE)
    scale = (0.5, 2.0, 3.0)[i % 3]
    return {"G": G, "A": A, "B": B, "scale": scale, "config": config}


def _rel(x, ref) -> float:
    x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(x - ref).max() / max(np.abs(ref).max(), 1e-300))


def lora_errors(p: dict, step: Step) -> dict[str, float]:
    """Relative errors of ``step`` and of ``GradientAligner`` against the reference."""
    cfg = p["config"]
    f = iga.LoRAFactors(A=p["A"], B=p["B"], scale=p["scale"])
    dA, dB, M = reference_lora_step(
        p["G"].numpy(),
        p["A"].numpy(),
        p["B"].numpy(),
        p["scale"],
        cfg.tau,
        cfg.variance,
        cfg.eps,
        cfg.mask_floor,
    )
    errs = {}
    for who, res in (
        ("align", step({"w": p["G"]}, cfg, {"w": f})),
        ("aligner", iga.GradientAligner(cfg)({"w": p["G"]}, {"w": f})),
    ):
        grads = res.grads["w"]
        errs[f"{who}_dA"] = _rel(grads.A, dA)
        errs[f"{who}_dB"] = _rel(grads.B, dB)
        errs[f"{who}_mask"] = _rel(res.masks["w"], M)
    return errs


def igastep_error(p: dict, g: torch.Generator) -> float:
    """``IGAStep`` on a plain ``nn.Linear``: its edited ``.grad`` against the reference."""
    cfg, K = p["config"], p["G"].shape[0]
    out, inp = p["G"].shape[1:]
    model = nn.Linear(inp, out, bias=False).to(DTYPE)
    n = 3
    x = torch.randn((K * n, inp), generator=g, dtype=DTYPE)
    y = torch.randn((K * n, out), generator=g, dtype=DTYPE)
    ids = torch.arange(K).repeat_interleave(n)
    per_domain = []
    for k in range(K):  # the reference's per-domain gradients: one backward per domain
        model.zero_grad()
        ((model(x[ids == k]) - y[ids == k]).square().sum(-1).mean()).backward()
        per_domain.append(model.weight.grad.detach().clone())
    ref, _ = reference_plain_step(
        torch.stack(per_domain).numpy(), cfg.tau, cfg.variance, cfg.eps, cfg.mask_floor
    )
    model.zero_grad()
    step = iga.IGAStep(model, cfg, num_domains=K)
    try:
        step.set_domains(ids)
        per_example = (model(x) - y).square().sum(-1)  # (K n,)
        loss = torch.stack([per_example[ids == k].mean() for k in range(K)]).mean()
        loss.backward()
        step.apply()
    finally:
        step.remove()
    return _rel(model.weight.grad, ref)


def reference_check(s: Settings, seed: int, step: Step = library_step) -> CheckResult:
    """Library IGA step == independent reference on ``s.reference_problems`` random problems."""
    g = gen(seed, "reference")
    worst: dict[str, float] = {}
    for i in range(s.reference_problems):
        p = random_lora_problem(g, i)
        errs = {**lora_errors(p, step), "igastep_grad": igastep_error(p, g)}
        for k, v in errs.items():
            worst[k] = max(worst.get(k, 0.0), v)
    bad = sorted(k for k, v in worst.items() if not v < TOL)
    return CheckResult(
        name="reference[lora]",
        theorem="Section 0 (the IGA step)",
        claim="align_gradients, GradientAligner and IGAStep compute the step of the equations",
        numbers={
            **{f"err_{k}": fmt(v) for k, v in worst.items()},
            "problems": s.reference_problems,
        },
        ci={},
        test=f"max relative error against a loop-based float64 reference < {TOL:g} "
        "(random K, shapes, rank, scale, variance kind, tau, floor)",
        p_value=None,
        passed=not bad,
        detail="all agree" if not bad else f"disagree: {', '.join(bad)}",
    )
