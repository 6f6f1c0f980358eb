"""theory.trainers, theory.convergence and theory.stats: the pieces the checks are built on."""

import math

import numpy as np
import pytest
import torch

import iga
from theory import convergence as cv
from theory.problems import DTYPE, LinearShortcut, LoRAShift
from theory.stats import clopper_pearson, loglog_fit, paired_test
from theory.trainers import (
    LoRAState,
    linear_sample_oracle,
    lora_align,
    lora_init,
    lora_sample_oracle,
    make_aligner,
    run_linear,
    train_linear,
    train_lora,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _linear_data(kind="regression", R=3, K=4, n=50, seed=0):
    problem = LinearShortcut(kind=kind)
    g = _gen(seed)
    mu = problem.sample_domains(R, K, g)
    X, y = problem.sample_data(mu, n, g)
    return problem, mu, X, y


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_sample_oracle_matches_autograd(kind):
    problem, _, X, y = _linear_data(kind)
    w = torch.randn((X.shape[0], problem.d), generator=_gen(1), dtype=DTYPE, requires_grad=True)
    f = (X @ w[:, None, :, None])[..., 0]  # (R, K, n)
    if kind == "regression":
        loss = (f - y).square().mean(-1)  # (R, K)
    else:
        loss = torch.nn.functional.softplus(-y * f).mean(-1)
    per_domain = torch.stack(
        [torch.autograd.grad(loss[:, k].sum(), w, retain_graph=True)[0] for k in range(X.shape[1])]
    )  # (K, R, d)
    assert torch.allclose(linear_sample_oracle(problem, X, y)(w.detach()), per_domain, atol=1e-12)


def test_lora_sample_oracle_matches_autograd():
    problem = LoRAShift()
    g = _gen(2)
    shifts = problem.sample_domains(2, 3, g)
    X, Y = problem.sample_data(shifts, 40, g)
    W = (problem.W0 + 0.1 * torch.randn(problem.W0.shape, generator=g, dtype=DTYPE)).expand(
        2, -1, -1
    )
    W = W.clone().requires_grad_(True)
    loss = (Y - X @ W[:, None].mT).square().sum(-1).mean(-1)  # (R, K)
    per_domain = torch.stack(
        [torch.autograd.grad(loss[:, k].sum(), W, retain_graph=True)[0] for k in range(3)], dim=1
    )  # (R, K, out, in)
    assert torch.allclose(lora_sample_oracle(X, Y)(W.detach()), per_domain, atol=1e-12)


def test_erm_aligner_is_the_mean_gradient_and_iga_tau0_equals_erm():
    problem, _, X, y = _linear_data()
    erm = train_linear(problem, X, y, make_aligner("erm", iga.IGAConfig()), 20, 0.05)
    tau0 = train_linear(
        problem, X, y, make_aligner("iga", iga.IGAConfig(tau=0.0, projection="none")), 20, 0.05
    )
    assert torch.allclose(erm.w, tau0.w, atol=1e-14)
    assert torch.all(erm.mask_trace == 1)
    oracle = linear_sample_oracle(problem, X, y)
    res = make_aligner("erm", iga.IGAConfig())({"w": oracle(erm.w)})
    assert torch.allclose(res.grads["w"], oracle(erm.w).mean(0))


@pytest.mark.parametrize("method", ["erm", "iga"])
def test_one_step_changes_the_parameters(method):
    problem, _, X, y = _linear_data()
    run = train_linear(problem, X, y, make_aligner(method, iga.IGAConfig(tau=10.0)), 1, 0.05)
    assert float(run.w.abs().max()) > 0
    lora = LoRAShift()
    g = _gen(3)
    shifts = lora.sample_domains(2, 3, g)
    Xl, Yl = lora.sample_data(shifts, 30, g)
    init = lora_init(lora, 2, 2, 1.0, g)
    out = train_lora(lora, Xl, Yl, init, make_aligner(method, iga.IGAConfig(tau=10.0)), 1, 0.1)
    assert float((out.state.B - init.B).abs().max()) > 0  # B starts at 0, so only B moves first


def test_batched_replications_equal_separate_runs():
    """The mask is elementwise over (R, d), so batching replications is exact."""
    problem, _, X, y = _linear_data(R=3)
    cfg = iga.IGAConfig(tau=5.0)
    both = train_linear(problem, X, y, make_aligner("iga", cfg), 15, 0.05)
    one = train_linear(problem, X[1:2], y[1:2], make_aligner("iga", cfg), 15, 0.05)
    assert torch.allclose(both.w[1:2], one.w, atol=1e-13)


def test_lora_align_equals_one_call_per_replication():
    problem = LoRAShift()
    g = _gen(4)
    G = torch.randn((3, 4, problem.out_dim, problem.in_dim), generator=g, dtype=DTYPE)
    state = LoRAState(
        torch.randn((3, 2, problem.in_dim), generator=g, dtype=DTYPE),
        torch.randn((3, problem.out_dim, 2), generator=g, dtype=DTYPE),
        0.5,
    )
    cfg = iga.IGAConfig(tau=3.0, projection="svd")
    dA, dB, masks = lora_align(make_aligner("iga", cfg), G, state)
    for i in range(3):
        res = iga.align_gradients(
            {"x": G[i]}, cfg, {"x": iga.LoRAFactors(state.A[i], state.B[i], 0.5)}
        )
        assert torch.allclose(dA[i], res.grads["x"].A) and torch.allclose(dB[i], res.grads["x"].B)
        assert torch.allclose(masks[i], res.masks["x"])


def test_run_linear_reports_divergence_instead_of_raising():
    problem, mu, _, _ = _linear_data()
    grad, L, _, _ = cv.linear_objective(problem, mu[0])
    m = problem.moments(mu[0])
    oracle = lambda w: 2 * (w[None] @ m.C.mT - m.c[:, None, :])  # noqa: E731
    run = run_linear(
        torch.zeros((2, problem.d), dtype=DTYPE),
        oracle,
        make_aligner("erm", iga.IGAConfig()),
        400,
        10.0 / L,
        full_grad=grad,
    )
    assert torch.isnan(run.w).all() and torch.isinf(run.grad_sq[-1]).all()
    assert run.grad_sq.shape == (400, 2)


def test_linear_objective_gradient_and_smoothness():
    problem, mu, _, _ = _linear_data()
    grad, L, f_star, value = cv.linear_objective(problem, mu[0])
    w = torch.randn((2, problem.d), generator=_gen(5), dtype=DTYPE, requires_grad=True)
    auto = torch.autograd.grad(value(w).sum(), w)[0]
    assert torch.allclose(grad(w.detach()), auto, atol=1e-12)
    assert f_star <= float(value(w.detach()).min())
    hess = 2 * problem.moments(mu[0]).C.mean(0)
    assert L == pytest.approx(float(torch.linalg.eigvalsh(hess).max()))


def test_mask_floor_bound_is_a_lower_bound_of_the_mask():
    g = _gen(6)
    for cfg in (iga.IGAConfig(tau=3.0), iga.IGAConfig(tau=3.0, mask_floor=0.2)):
        m0 = cv.mask_floor_bound(cfg)
        grads = torch.randn((5, 1000), generator=g, dtype=DTYPE) * torch.rand(
            1000, generator=g, dtype=DTYPE
        )
        _, mask = iga.masked_mean(grads, cfg.tau, cfg.variance, cfg.eps, cfg.mask_floor)
        assert float(mask.min()) >= m0 - 1e-12
    assert cv.mask_floor_bound(iga.IGAConfig(variance="raw")) == 0.0


def test_lora_smoothness_bounds_the_factor_hessian():
    """L = L_F s^2 (|A|^2 + |B|^2) + s |grad F| dominates the Hessian of f(A, B) = F(W0 + s B A)."""
    g = _gen(7)
    out, inn, r, s = 5, 6, 2, 0.7
    W0, W_bar = (torch.randn((out, inn), generator=g, dtype=DTYPE) for _ in range(2))
    for _ in range(5):
        A = torch.randn((r, inn), generator=g, dtype=DTYPE)
        B = torch.randn((out, r), generator=g, dtype=DTYPE)
        theta = torch.cat([A.flatten(), B.flatten()])

        def f(th):
            a, b = th[: r * inn].reshape(r, inn), th[r * inn :].reshape(out, r)
            return (W0 + s * b @ a - W_bar).square().sum()

        hess = torch.autograd.functional.hessian(f, theta)
        top = float(torch.linalg.eigvalsh(hess).abs().max())
        grad_op = float(torch.linalg.matrix_norm(2 * (W0 + s * B @ A - W_bar), ord=2))
        bound = cv.lora_smoothness(
            float(torch.linalg.matrix_norm(A, ord=2)),
            float(torch.linalg.matrix_norm(B, ord=2)),
            grad_op,
            s,
        )
        assert top <= bound + 1e-9


def test_probe_exposes_the_projection_and_eckart_young_gap():
    g = _gen(8)
    grads = torch.randn((4, 6, 7), generator=g, dtype=DTYPE)
    cfg = iga.IGAConfig(tau=2.0, projection="svd")
    P, H = cv.probe_projection(cfg, grads, rank=2)
    assert torch.allclose(P, iga.project_low_rank(H, 2, method="exact"), atol=1e-12)
    rank, gap = cv.eckart_young_gap(P, H, 2)
    assert rank == 2 and abs(gap) < 1e-9
    rank1, gap1 = cv.eckart_young_gap(iga.project_low_rank(H, 1), H, 2)
    assert rank1 == 1 and gap1 > 0.1


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(100, 100, 0.05)
    assert lo == pytest.approx(0.025 ** (1 / 100)) and hi == 1.0
    lo, hi = clopper_pearson(0, 10, 0.05)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))


def test_paired_test_detects_a_shift_and_not_identity():
    rng = np.random.default_rng(0)
    b = rng.normal(size=200)
    shifted = paired_test(b + 0.3 + 0.1 * rng.normal(size=200), b)
    assert shifted.p_value < 1e-10 and shifted.ci[0] > 0
    same = paired_test(b, b)
    assert same.p_value == 1.0
    assert paired_test(b - 0.3, b).p_value == 1.0  # constant negative difference
    bad = paired_test(np.array([1.0, np.nan]), np.array([0.0, 0.0]))
    assert bad.p_value == 1.0


def test_loglog_fit_recovers_a_power_law():
    rng = np.random.default_rng(1)
    x = np.repeat([64, 128, 256, 512, 1024], 20).astype(float)
    y = 3.0 * x**-0.5 * np.exp(0.05 * rng.normal(size=x.size))
    fit = loglog_fit(x, y)
    assert fit.ci[0] <= -0.5 <= fit.ci[1]
    assert fit.intercept == pytest.approx(math.log(3.0), abs=0.1) and fit.r2 > 0.9
    assert math.isnan(loglog_fit(x, -y).slope)


def test_lemma_3_2_tangent_projection_is_invisible_to_the_chain_rule():
    """THEOREMS.md Lemma 3.2: J^* T_{BA} = J^*, so projection='tangent' gives the factor
    gradients of projection='none' (B = 0 at peft's init included)."""
    g = _gen(9)
    grads = torch.randn((4, 6, 7), generator=g, dtype=DTYPE)
    for B in (torch.zeros((6, 2), dtype=DTYPE), torch.randn((6, 2), generator=g, dtype=DTYPE)):
        factors = {"x": iga.LoRAFactors(torch.randn((2, 7), generator=g, dtype=DTYPE), B, 0.8)}
        out = [
            iga.align_gradients({"x": grads}, iga.IGAConfig(tau=2.0, projection=p), factors)
            for p in ("tangent", "none")
        ]
        assert torch.allclose(out[0].grads["x"].A, out[1].grads["x"].A, atol=1e-12)
        assert torch.allclose(out[0].grads["x"].B, out[1].grads["x"].B, atol=1e-12)


def test_lemma_3_3_full_space_mask_can_make_the_lora_step_an_ascent_direction():
    """THEOREMS.md Lemma 3.3, on iga's own aligner: B = 0, A = [1, 1], two domains that
    disagree on the first coordinate only; the masked step has <grad f, d> < 0."""
    grads = torch.tensor([[[4.0, -0.9]], [[-2.0, -0.9]]], dtype=DTYPE)  # (K=2, out=1, in=2)
    factors = {
        "x": iga.LoRAFactors(
            A=torch.ones((1, 2), dtype=DTYPE), B=torch.zeros((1, 1), dtype=DTYPE), scale=1.0
        )
    }
    res = iga.align_gradients({"x": grads}, iga.IGAConfig(tau=6.0, projection="svd"), factors)
    grad_f = iga.lora_factor_grads(grads.mean(0), factors["x"].B, factors["x"].A, 1.0)
    assert float(res.masks["x"][0, 0]) < 0.02 and float(res.masks["x"][0, 1]) == 1.0
    directional = float((grad_f.B * res.grads["x"].B).sum() + (grad_f.A * res.grads["x"].A).sum())
    assert float(grad_f.B.square().sum()) > 0 and directional < 0
