"""theory.problems and theory.bound: closed forms against Monte Carlo, Theorem 1's algebra."""

import math

import pytest
import torch

from theory import bound as bd
from theory.problems import DTYPE, LinearShortcut, LoRAShift


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_linear_squared_risk_matches_monte_carlo(kind):
    problem = LinearShortcut(kind=kind)
    g = _gen(1)
    mu = problem.sample_domains(1, 3, g)[0]  # (3, d_spu)
    w = torch.randn((3, problem.d), generator=g, dtype=DTYPE)
    X, y = problem.sample_data(mu, 200_000, g)  # (3, n, d), (3, n)
    loss = (y - (X * w[:, None, :]).sum(-1)).square()  # (3, n)
    mc, se = loss.mean(-1), loss.std(-1) / math.sqrt(loss.shape[-1])
    exact = problem.risk(w, problem.moments(mu))
    assert torch.all((mc - exact).abs() < 5 * se), (mc, exact, se)


def test_classification_error_matches_monte_carlo():
    problem = LinearShortcut(kind="classification")
    g = _gen(2)
    mu = problem.sample_domains(1, 3, g)[0]
    w = torch.randn((3, problem.d), generator=g, dtype=DTYPE)
    X, y = problem.sample_data(mu, 200_000, g)
    wrong = (y * (X * w[:, None, :]).sum(-1) <= 0).to(DTYPE)
    se = (wrong.std(-1) / math.sqrt(wrong.shape[-1])).clamp_min(1e-4)
    assert torch.all((wrong.mean(-1) - problem.error(w, mu)).abs() < 5 * se)


def test_meta_moments_average_the_finite_meta_distribution():
    problem = LinearShortcut(spu_mean=0.3, d_spu=3)
    support = problem.all_domains()
    assert support.shape == (8, 3)
    g = _gen(3)
    mu = problem.sample_domains(20_000, 1, g)[:, 0]  # (20000, d_spu)
    emp = problem.moments(mu)
    meta = problem.meta_moments()
    assert torch.allclose(emp.c.mean(0), meta.c, atol=0.03)
    assert torch.allclose(emp.C.mean(0), meta.C, atol=0.05)


def test_ood_optimum_is_invariant_when_shortcuts_average_out():
    problem = LinearShortcut(spu_mean=0.0)
    w = problem.ood_optimum()
    assert torch.allclose(w[problem.spu], torch.zeros(problem.d_spu, dtype=DTYPE), atol=1e-12)
    assert torch.allclose(w[problem.inv], problem.beta, atol=1e-12)
    assert float(problem.ood_risk(w)) == pytest.approx(problem.noise_y**2)


def test_deviation_stats_are_exact_for_rademacher_shortcuts():
    problem = LinearShortcut(spu_mean=0.0, spu_scale=0.7, d_spu=4)
    stats = problem.deviation_stats()
    v, s, d = problem.label_second_moment, 0.7, 4
    assert stats["g"] == pytest.approx((v * s * math.sqrt(d),) * 2)  # ||v s u|| is constant
    assert stats["si"] == pytest.approx((s * math.sqrt(d) * float(problem.beta.norm()),) * 2)
    assert stats["ss"][1] == pytest.approx(v * s**2 * math.sqrt(d * (d - 1)))
    for sigma, b in stats.values():
        assert sigma <= b + 1e-12


@pytest.mark.parametrize("side", ["in", "out"])
def test_lora_shift_structure_and_risk(side):
    problem = LoRAShift(side=side, spu_scale=2.0)
    g = _gen(4)
    shifts = problem.sample_domains(5, 7, g)  # (5, 7, out, in)
    assert torch.allclose(shifts.square().sum((-2, -1)), torch.full((5, 7), 4.0, dtype=DTYPE))
    outside = shifts.clone()
    outside[problem.spurious_index()] = 0
    assert float(outside.abs().max()) == 0.0  # shifts live on the spurious block only
    assert float(problem.spurious_part(problem.delta_star).abs().max()) == 0.0
    W = problem.W0 + 0.1 * torch.randn(problem.W0.shape, generator=g, dtype=DTYPE)
    X, Y = problem.sample_data(shifts[0, :2], 100_000, g)
    loss = (Y - X @ W.T).square().sum(-1)  # (2, n)
    se = loss.std(-1) / math.sqrt(loss.shape[-1])
    assert torch.all((loss.mean(-1) - problem.risk(W, shifts[0, :2])).abs() < 5 * se)
    # E over the meta-distribution: shifts average to 0 with constant norm.
    many = problem.sample_domains(1, 4000, g)[0]
    assert float(problem.risk(W, many).mean()) == pytest.approx(
        float(problem.ood_risk(W)), rel=2e-3
    )


def test_theorem1_decomposition_is_exact_and_dominated():
    """Rhat_K - R_Q is the moment expression of THEOREMS.md (1.2), and its size is at most
    Dev_K evaluated with the realized moment deviations in place of eps_j."""
    problem = LinearShortcut(spu_mean=0.2)
    g = _gen(5)
    mu = problem.sample_domains(1, 6, g)[0]
    meta, train = problem.meta_moments(), problem.moments(mu)
    dg = train.c.mean(0)[problem.spu] - meta.c[problem.spu]
    dss = train.C.mean(0)[problem.spu, problem.spu] - meta.C[problem.spu, problem.spu]
    dsi = train.C.mean(0)[problem.spu, problem.inv] - meta.C[problem.spu, problem.inv]
    for _ in range(20):
        w = 3 * torch.randn(problem.d, generator=g, dtype=DTYPE)
        ws, wi = w[problem.spu], w[problem.inv]
        gap = float(problem.risk(w, train).mean() - problem.ood_risk(w))
        expr = float(-2 * ws @ dg + ws @ dss @ ws + 2 * ws @ dsi @ wi)
        assert gap == pytest.approx(expr, abs=1e-10)
        dom = (
            2 * ws.norm() * dg.norm()
            + ws.norm() ** 2 * dss.norm()
            + 2 * ws.norm() * wi.norm() * dsi.norm()
        )
        assert abs(gap) <= float(dom) + 1e-10


def test_radii_scale_like_inverse_sqrt_k_with_a_union_bound():
    stats = {"a": (1.0, 2.0), "b": (0.5, 0.5)}
    r8, r32 = bd.radii(stats, 8, 0.1), bd.radii(stats, 32, 0.1)
    assert r8["a"] == pytest.approx(1 / math.sqrt(8) + 2 * math.sqrt(2 * math.log(2 / 0.1) / 8))
    assert r32["a"] == pytest.approx(r8["a"] / 2)
    with pytest.raises(ValueError, match="delta"):
        bd.radii(stats, 8, 1.5)


def test_invariant_predictor_has_zero_deviation():
    problem = LinearShortcut()
    w = problem.ood_optimum()[None]
    assert float(bd.linear_deviation(problem, w, 8, 0.05)) == pytest.approx(0.0, abs=1e-15)
    lora = LoRAShift()
    assert float(bd.lora_deviation(lora, lora.ood_optimum()[None], 8, 0.05)) == 0.0


def test_classification_bound_dominates_zero_one_error_for_every_scale():
    """0-1 loss <= squared loss on +-1 labels, at any scale of w: the basis of the 0-1 bound."""
    problem = LinearShortcut(kind="classification")
    g = _gen(6)
    mu = problem.all_domains()
    meta = problem.meta_moments()
    for _ in range(10):
        w = torch.randn(problem.d, generator=g, dtype=DTYPE)
        err = float(problem.error(w, mu).mean())
        for a in (0.1, 0.5, 1.0, 3.0):
            assert err <= float(problem.risk(a * w, meta)) + 1e-12


def test_classification_bound_holds_for_the_meta_distribution_itself():
    problem = LinearShortcut(kind="classification")
    g = _gen(7)
    mu = problem.sample_domains(50, 8, g)
    w = torch.randn((50, problem.d), generator=g, dtype=DTYPE)
    terms = bd.linear_bound(problem, w, mu, 0.05)
    assert torch.all(terms.bound <= 1.0)
    assert float((terms.ood <= terms.bound).double().mean()) >= 0.95
