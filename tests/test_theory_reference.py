"""theory.reference (an independent IGA step) against the library, and its sabotages."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

import iga
from theory.check_reference import random_lora_problem, reference_check
from theory.common import Settings
from theory.reference import best_rank, reference_lora_step, reference_mask
from theory.sabotage import BROKEN_STEPS, STEP_SABOTAGES

SMALL = replace(Settings.quick(), reference_problems=6)


def test_reference_mask_on_a_hand_computed_example():
    G = np.array([[1.0, 2.0], [3.0, 2.0]])  # K = 2, two coordinates
    mask, mean = reference_mask(G, tau=2.0, variance="raw", eps=0.0, floor=0.0)
    assert np.allclose(mean, [2.0, 2.0]) and np.allclose(mask, [math.exp(-2.0), 1.0])
    rel, _ = reference_mask(G, tau=2.0, variance="relative", eps=0.0, floor=0.5)
    assert np.allclose(rel, [0.5 + 0.5 * math.exp(-2.0 * 1.0 / 5.0), 1.0])


def test_best_rank_is_eckart_young():
    rng = np.random.default_rng(0)
    H = rng.standard_normal((5, 4))
    P = best_rank(H, 2)
    sv = np.linalg.svd(H, compute_uv=False)
    assert np.linalg.matrix_rank(P) == 2
    assert np.isclose(np.square(H - P).sum(), np.square(sv[2:]).sum())


def test_library_step_matches_the_reference():
    result = reference_check(SMALL, seed=0)
    assert result.passed, result.detail
    assert result.numbers["err_igastep_grad"] < 1e-12


@pytest.mark.parametrize("defect", STEP_SABOTAGES)
def test_reference_comparison_catches_each_defect(defect):
    broken = reference_check(SMALL, seed=0, step=BROKEN_STEPS[defect])
    assert not broken.passed, defect
    assert "align_" in broken.detail  # the step under test disagrees ...
    assert broken.numbers["err_aligner_mask"] < 1e-9  # ... while the library's aligner agrees


def test_random_problems_can_reveal_every_defect():
    g = torch.Generator().manual_seed(0)
    problems = [random_lora_problem(g, i) for i in range(6)]
    assert {p["config"].variance for p in problems} == {"raw", "relative"}
    assert all(p["scale"] != 1 for p in problems)
    assert all(p["A"].shape[0] + 1 < min(p["G"].shape[1:]) for p in problems)
    assert min(p["G"].shape[0] for p in problems) >= 2


def test_igastep_on_a_peft_lora_layer_matches_the_reference():
    peft = pytest.importorskip("peft")
    g = torch.Generator().manual_seed(3)
    K, n, d_in, d_out, r = 3, 4, 6, 5, 2
    model = peft.get_peft_model(
        nn.Sequential(nn.Linear(d_in, d_out)).to(torch.float64),
        peft.LoraConfig(r=r, lora_alpha=3 * r, target_modules=["0"]),
    )
    layer = model.base_model.model[0]
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():  # seeded values instead of peft's global-RNG init
        A.copy_(torch.randn(A.shape, generator=g, dtype=torch.float64))
        B.copy_(torch.randn(B.shape, generator=g, dtype=torch.float64))
    scale = layer.scaling["default"]
    assert scale == 3.0
    x = torch.randn((K * n, d_in), generator=g, dtype=torch.float64)
    y = torch.randn((K * n, d_out), generator=g, dtype=torch.float64)
    ids = torch.arange(K).repeat_interleave(n)
    base = layer.base_layer
    per_domain = []
    for k in range(K):  # dL_k / d(dW), dW = s B A, from an explicit functional form
        dW = (scale * B @ A).detach().requires_grad_(True)
        out = base(x[ids == k]) + x[ids == k] @ dW.T
        ((out - y[ids == k]).square().sum(-1).mean()).backward(inputs=[dW])
        per_domain.append(dW.grad)
    config = iga.IGAConfig(tau=2.0, variance="relative", svd_method="exact", estimator="batch")
    dA, dB, _ = reference_lora_step(
        torch.stack(per_domain).numpy(),
        A.detach().numpy(),
        B.detach().numpy(),
        scale,
        config.tau,
        config.variance,
        config.eps,
    )
    step = iga.IGAStep(model, config, num_domains=K)
    try:
        step.set_domains(ids)
        per_example = (model(x) - y).square().sum(-1)
        torch.stack([per_example[ids == k].mean() for k in range(K)]).mean().backward()
        step.apply()
    finally:
        step.remove()
    assert np.allclose(A.grad.numpy(), dA, rtol=1e-9, atol=1e-12)
    assert np.allclose(B.grad.numpy(), dB, rtol=1e-9, atol=1e-12)
