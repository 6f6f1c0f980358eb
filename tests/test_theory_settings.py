"""New settings of the checks: raw mask in the rate check, skewed noise, rotated features,
LoRA scale s != 1 and peft's init."""

from dataclasses import replace

import torch

import iga
from theory import checks
from theory.check_rate import domain_noise, lora_rate_setup, rate_linear_check
from theory.common import JOINT_CONFIGS, Settings, lora_problem, regression_problem
from theory.pairs import random_rotation, train_pair
from theory.sabotage import sabotaged

SMALL = replace(Settings.quick(), rate_T=(256, 512, 1024), reps_rate=8, reps_bound=30)
RAW = JOINT_CONFIGS["raw,tau=10"]


def test_rate_check_runs_on_the_raw_mask_and_uses_the_masked_measure():
    result = rate_linear_check(SMALL, seed=0, config=iga.IGAConfig(tau=1.0, variance="raw"))
    assert result.numbers["m0"] == 0 and "m0 = 0" in result.test
    assert all(r["bound_grad_sq"] == float("inf") for r in result.data["per_T"])
    assert all(r["avg_masked_sq"] <= r["bound_masked_sq"] for r in result.data["per_T"])


def test_raw_mask_rate_check_can_fail():
    config = iga.IGAConfig(tau=1.0, variance="raw")
    with sabotaged("sign_flip"):
        broken = rate_linear_check(SMALL, seed=0, config=config)
    assert not broken.passed


def test_skewed_noise_is_centred_with_the_same_variance():
    g = torch.Generator().manual_seed(0)
    x = domain_noise((200_000,), 2.0, "skewed", g)
    z = (x - x.mean()) / x.std()
    assert abs(float(x.mean())) < 0.02 and abs(float(x.std()) - 2.0) < 0.02
    assert abs(float(z.pow(3).mean()) - 2.0) < 0.1  # Exp(1) has skewness 2; Gaussian 0
    y = domain_noise((200_000,), 2.0, "gaussian", g)
    assert abs(float(((y - y.mean()) / y.std()).pow(3).mean())) < 0.05


def test_rotation_is_orthogonal_and_the_bound_sees_the_original_basis():
    Q = random_rotation(8, 0)
    assert torch.allclose(Q @ Q.T, torch.eye(8, dtype=Q.dtype), atol=1e-12)
    s = replace(Settings.quick(), reps_bound=10, train_steps=50)
    problem = regression_problem()
    plain = train_pair("regression", problem, 8, 10, s, 0, iga.IGAConfig(tau=0.0))
    rotated = train_pair("regression", problem, 8, 10, s, 0, iga.IGAConfig(tau=0.0), rotation=Q)
    # tau = 0: IGA = ERM = GD, which commutes with rotations: identical predictors.
    assert torch.allclose(plain.erm.ood, rotated.erm.ood, atol=1e-9)
    assert torch.allclose(rotated.iga.ood, rotated.erm.ood, atol=1e-12)


def test_lora_scale_is_used_by_the_pair_trainer():
    s = replace(Settings.quick(), reps_lora=4, lora_steps=20)
    problem = lora_problem()
    one = train_pair("lora", problem, 4, 4, s, 0, checks.OOD_CONFIG)
    two = train_pair("lora", problem, 4, 4, s, 0, checks.OOD_CONFIG, scale=2.0)
    assert not torch.allclose(one.iga.ood, two.iga.ood)  # s enters the factor dynamics
    assert torch.isfinite(two.iga.bound).all()


def test_peft_start_has_b_zero():
    problem = lora_problem(spu_scale=0.5)
    _, state, _ = lora_rate_setup(problem, 4, 0, start="peft")
    assert float(state.B.abs().max()) == 0 and float(state.A.abs().max()) > 0


def test_split_mask_is_the_library_mask_of_the_split_variance():
    from theory.trainers import SplitMask

    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn((4, 3, 5), generator=g, dtype=torch.float64) for _ in range(2))
    split = SplitMask(checks.OOD_CONFIG)
    split.halves = (a, b)
    res = split({"w": 0.5 * (a + b)})
    expected = iga.conflict_mask(iga.split_conflict_variance(a, b, "relative", 1e-12), 5.0)
    assert torch.allclose(res.masks["w"], expected)
    assert torch.allclose(res.grads["w"], expected * 0.5 * (a + b).mean(0))


def test_split_estimator_rate_row_passes_and_fails_when_the_estimator_is_broken():
    ok = rate_linear_check(SMALL, seed=0, config=checks.OOD_CONFIG, estimator="split")
    assert ok.passed, ok.detail
    with sabotaged("split_same_half"):
        broken = rate_linear_check(SMALL, seed=0, config=checks.OOD_CONFIG, estimator="split")
    assert not broken.passed and broken.numbers["slope"] > ok.numbers["slope"]
