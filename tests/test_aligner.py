"""The aligner (docs/design.md section 2) and its configuration."""

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import iga
from tests import invariants as inv
from tests.strategies import DTYPE, domain_grads, lora_points, taus

ERM_CONFIG = iga.IGAConfig(tau=0.0, projection="none")


def erm_aligner(per_domain):
    return iga.align_gradients(per_domain, ERM_CONFIG).grads


@given(domain_grads(min_k=2), st.sampled_from(["raw", "relative"]))
def test_tau_zero_no_projection_returns_mean_exactly(grads, kind):
    config = iga.IGAConfig(tau=0.0, projection="none", variance=kind)
    inv.aligner_reduces_to_mean(lambda d: iga.align_gradients(d, config).grads, grads)


@given(lora_points(), st.integers(2, 5), st.floats(0.5, 3.0), taus)
def test_lora_entry_is_mask_project_chain_rule(point, k, scale, tau):
    b, a, h = point
    grads = h + torch.randn(k, *h.shape, generator=torch.Generator().manual_seed(k), dtype=DTYPE)
    config = iga.IGAConfig(tau=tau, projection="svd", svd_method="exact")
    out = iga.align_gradients({"w": grads}, config, {"w": iga.LoRAFactors(a, b, scale)})
    masked, _ = iga.masked_mean(grads, tau, "relative", config.eps)
    expected = iga.lora_factor_grads(iga.project_low_rank(masked, a.shape[0], "exact"), b, a, scale)
    torch.testing.assert_close(out.grads["w"].A, expected.A)
    torch.testing.assert_close(out.grads["w"].B, expected.B)


@given(domain_grads(min_k=2), taus)
def test_identical_domains_give_erm_for_any_tau(grads, tau):
    same = grads[:1].expand_as(grads).clone()
    out = iga.align_gradients({"w": same}, iga.IGAConfig(tau=tau, projection="none"))
    assert torch.equal(out.grads["w"], same.mean(dim=0))


def test_tau_zero_lora_equals_erm_chain_rule():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 6, 5, generator=g, dtype=DTYPE)
    b, a = torch.randn(6, 2, generator=g, dtype=DTYPE), torch.randn(2, 5, generator=g, dtype=DTYPE)
    out = iga.align_gradients({"w": grads}, ERM_CONFIG, {"w": iga.LoRAFactors(a, b, 2.0)})
    expected = iga.lora_factor_grads(grads.mean(0), b, a, 2.0)
    assert torch.equal(out.grads["w"].B, expected.B) and torch.equal(out.grads["w"].A, expected.A)


def test_single_domain_warns_and_returns_erm():
    grads = torch.randn(1, 4, dtype=DTYPE)
    with pytest.warns(UserWarning, match="K = 1"):
        out = iga.align_gradients({"w": grads}, iga.IGAConfig(tau=5.0))
    assert torch.equal(out.grads["w"], grads[0])


def test_warmup_returns_erm_then_masks():
    aligner = iga.GradientAligner(iga.IGAConfig(tau=10.0, projection="none", warmup_steps=2))
    grads = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=DTYPE)  # coordinate 1 conflicts
    first, second, third = (aligner({"w": grads}).grads["w"] for _ in range(3))
    assert torch.equal(first, grads.mean(0)) and torch.equal(second, grads.mean(0))
    assert third[0] == 1.0 and third[1] == 0.0  # invariant coordinate kept, conflicting one masked
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aligner({"w": grads})


def test_mask_target_update_returns_unmasked_grad_and_mask():
    grads = torch.tensor([[1.0, 2.0], [1.0, -2.0]], dtype=DTYPE)
    out = iga.align_gradients({"w": grads}, iga.IGAConfig(tau=1.0, mask_target="update"))
    assert torch.equal(out.grads["w"], grads.mean(0))
    assert out.masks["w"][0] == 1.0 and out.masks["w"][1] < 1.0


def test_mask_damps_conflicting_coordinates_only():
    grads = torch.tensor([[2.0, 3.0], [2.0, -1.0], [2.0, 1.0]], dtype=DTYPE)
    out = iga.align_gradients({"w": grads}, iga.IGAConfig(tau=5.0, projection="none"))
    assert out.grads["w"][0] == 2.0 and 0 < out.grads["w"][1] < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tau": -0.1}, "tau"),
        ({"tau": float("inf")}, "tau"),
        ({"rank": 0}, "rank"),
        ({"variance": "std"}, "variance"),
        ({"projection": "qr"}, "projection"),
        ({"space": "half"}, "space"),
        ({"mask_target": "loss"}, "mask_target"),
        ({"mask_floor": 1.0}, "mask_floor"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        iga.IGAConfig(**kwargs)


def test_aligner_rejects_bad_inputs():
    config = iga.IGAConfig()
    with pytest.raises(ValueError, match="empty"):
        iga.align_gradients({}, config)
    with pytest.raises(ValueError, match="same number of domains"):
        iga.align_gradients({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)}, config)
    with pytest.raises(ValueError, match="'a'.*NaN"):
        iga.align_gradients({"a": torch.tensor([[1.0, float("nan")]])}, config)
    with pytest.raises(ValueError, match="expected effective-weight"):
        f = iga.LoRAFactors(torch.zeros(1, 3), torch.zeros(4, 1), 1.0)
        iga.align_gradients({"a": torch.zeros(2, 3, 4)}, config, {"a": f})


def first_domain_aligner(per_domain):
    return {name: g[0] for name, g in per_domain.items()}


def test_broken_aligner_is_caught():
    grads = torch.tensor([[1.0, 2.0], [3.0, -2.0]], dtype=DTYPE)
    with pytest.raises(AssertionError):
        inv.aligner_reduces_to_mean(first_domain_aligner, grads)
    inv.aligner_reduces_to_mean(erm_aligner, grads)
