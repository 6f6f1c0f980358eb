"""The estimators of V in the IGA step (issue 14): batch, split, ema; diagnostics; state."""

from __future__ import annotations

import math

import pytest
import torch

from iga.core.config import IGAConfig
from iga.core.step import IGAStep, noise_mask
from tests.test_capture_models import lora_mlp
from tests.test_step import K, _backward, _micro_batches, _params


def _steps(model, iga: IGAStep, opt, start: int, stop: int) -> list[dict]:
    stats = []
    for t in range(start, stop):
        opt.zero_grad(set_to_none=True)
        _backward(model, _micro_batches(t), iga)
        stats.append(iga.step(opt, max_grad_norm=1.0))
    return stats


def _fresh(config: IGAConfig):
    model = lora_mlp(seed=0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    return model, opt, IGAStep(model, config, K)


def test_ema_with_beta_zero_is_the_batch_estimator():
    runs = []
    for est in ("batch", "ema"):
        model, opt, iga = _fresh(IGAConfig(estimator=est, ema_beta=0.0))
        _steps(model, iga, opt, 0, 3)
        runs.append(_params(model))
    for name, p in runs[0].items():
        torch.testing.assert_close(runs[1][name], p, rtol=1e-6, atol=1e-7)


def test_ema_with_a_long_memory_differs_from_batch():
    """Companion of the test above: with beta = 0.9 the two estimators part ways."""
    runs = []
    for est in ("batch", "ema"):
        model, opt, iga = _fresh(IGAConfig(estimator=est, ema_beta=0.9))
        _steps(model, iga, opt, 0, 3)
        runs.append(_params(model))
    assert any(not torch.allclose(runs[1][n], p) for n, p in runs[0].items())


def _resumed(load: bool):
    config = IGAConfig(estimator="ema", ema_beta=0.8)
    model, opt, iga = _fresh(config)
    _steps(model, iga, opt, 0, 2)
    saved = ({n: p.clone() for n, p in _params(model).items()}, opt.state_dict(), iga.state_dict())
    iga.remove()
    model2, opt2, iga2 = _fresh(config)
    model2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    if load:
        iga2.load_state_dict(saved[2])
    else:
        iga2.aligner.steps = 2
    _steps(model2, iga2, opt2, 2, 4)
    return _params(model2)


def test_ema_state_resumes_to_the_uninterrupted_result():
    model, opt, iga = _fresh(IGAConfig(estimator="ema", ema_beta=0.8))
    _steps(model, iga, opt, 0, 4)
    straight = _params(model)
    resumed = _resumed(load=True)
    for name, p in straight.items():
        torch.testing.assert_close(resumed[name], p, rtol=1e-6, atol=1e-7)
    # Companion: restarting the averages from zero (state not loaded) changes the result.
    restarted = _resumed(load=False)
    assert any(not torch.allclose(restarted[n], p) for n, p in straight.items())


def test_ema_resumed_without_its_state_is_a_clear_error():
    _, _, iga = _fresh(IGAConfig(estimator="ema"))
    for state in (None, {"steps": 3, "estimator": {"estimator": "batch"}}):
        with pytest.raises(ValueError, match="no EMA state.*fresh run"):
            iga.load_state_dict(state)
    _, _, batch = _fresh(IGAConfig(estimator="batch"))
    batch.load_state_dict(None)  # stateless estimators resume from old checkpoints


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"estimator": "median"}, r"IGAConfig.estimator='median' is unknown.*'split'"),
        ({"ema_beta": 1.0}, r"ema_beta must lie in \[0, 1\)"),
        ({"ema_beta": -0.1}, r"ema_beta must lie in \[0, 1\)"),
    ],
)
def test_bad_estimator_settings_name_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IGAConfig(**kwargs)


@pytest.mark.parametrize("estimator", ["batch", "split", "ema"])
def test_diagnostics_are_logged(estimator):
    config = IGAConfig(estimator=estimator, tau=3.0, mask_floor=0.1)
    model, opt, iga = _fresh(config)
    stats = _steps(model, iga, opt, 0, 2)[-1]
    assert stats["iga/noise_mask"] == pytest.approx(0.1 + 0.9 * math.exp(-3.0 * (K - 1) / K))
    assert 0.0 <= stats["iga/mask_below_half"] <= 1.0
    assert 0.1 <= stats["iga/mask_mean"] <= 1.0
    assert ("iga/snr" in stats) == (estimator == "split")
    if estimator == "split":
        assert math.isfinite(stats["iga/snr"])


def test_noise_mask_only_for_the_relative_variance():
    model, opt, iga = _fresh(IGAConfig(variance="raw", tau=1.0))
    assert "iga/noise_mask" not in _steps(model, iga, opt, 0, 1)[-1]
    assert noise_mask(IGAConfig(tau=2.0), 4) == pytest.approx(math.exp(-1.5))


def _noise_only_mask_mean(estimator: str, seed: int) -> tuple[float, float]:
    """Every domain draws from one distribution (V_between = 0): (mask mean, snr)."""
    from iga.core.losses import domain_mean_loss
    from tests.test_capture_models import make_batch, mse_per_token

    model = lora_mlp(seed=seed, dtype=torch.float64)
    iga = IGAStep(model, IGAConfig(estimator=estimator, tau=5.0, projection="none"), K)
    b = make_batch(K, 8 * K, 2, 5, 3, seed, shuffle=False)
    iga.set_domains(b.ids, b.mask.sum(dim=1))
    x, y, mask = b.x.double(), b.y.double(), b.mask.double()
    domain_mean_loss(mse_per_token(model, x, y), mask, b.ids, K).backward()
    stats = iga.apply()
    iga.remove()
    return stats["iga/mask_mean"], stats.get("iga/snr", float("nan"))


def test_split_mask_stays_open_where_batch_noise_closes_it():
    """No between-domain difference at all: the batch mask falls toward exp(-tau (K-1)/K),
    the split estimator (unbiased for V = 0, clamped) leaves most of it open."""
    batch = [_noise_only_mask_mean("batch", s)[0] for s in range(3)]
    split = [_noise_only_mask_mean("split", s)[0] for s in range(3)]
    assert max(batch) < 0.5
    assert min(split) > max(batch) + 0.15
