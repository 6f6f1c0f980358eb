"""``split_conflict_variance``: unbiased for the between-domain variance (Lemma E)."""

import pytest
import torch

import iga

DT = torch.float64


def _halves(mu, sigma, n, g):
    """Two independent half-batch gradients per domain: mu + noise of variance sigma^2/(n/2)."""
    noise = sigma / (n / 2) ** 0.5
    a = mu + noise * torch.randn(mu.shape, generator=g, dtype=DT)
    b = mu + noise * torch.randn(mu.shape, generator=g, dtype=DT)
    return a, b


def test_unbiased_where_the_batch_variance_is_not():
    g = torch.Generator().manual_seed(0)
    # n large enough that the clamp at 0 rarely binds (it biases small-n estimates up;
    # test_clamp_bias_lies_between_target_and_batch covers that regime).
    K, D, n, sigma, reps = 4, 500, 256, 1.0, 400
    mu = 0.3 * torch.randn(K, D, generator=g, dtype=DT)  # (K, D)
    target = mu.var(dim=0, unbiased=False).mean()
    split, batch = [], []
    for _ in range(reps):
        a, b = _halves(mu, sigma, n, g)
        split.append(iga.split_conflict_variance(a, b).mean())
        batch.append(iga.conflict_variance(0.5 * (a + b)).mean())
    split, batch = torch.stack(split), torch.stack(batch)
    se = split.std() / reps**0.5
    assert abs(split.mean() - target) < 4 * se + 0.01 * target
    noise_term = (K - 1) / K**2 * K * sigma**2 / n
    assert float(batch.mean()) == pytest.approx(float(target) + noise_term, rel=0.05)


def test_clamp_bias_lies_between_target_and_batch():
    """At n = 8 the per-coordinate estimate is noisy and clamping it at 0 biases it up,
    but it stays below the minibatch variance, whose bias is the whole noise term."""
    g = torch.Generator().manual_seed(3)
    K, D, n, sigma, reps = 4, 500, 8, 1.0, 200
    mu = 0.3 * torch.randn(K, D, generator=g, dtype=DT)
    target = mu.var(dim=0, unbiased=False).mean()
    pairs = [_halves(mu, sigma, n, g) for _ in range(reps)]
    split = torch.stack([iga.split_conflict_variance(a, b).mean() for a, b in pairs]).mean()
    batch = torch.stack([iga.conflict_variance(0.5 * (a + b)).mean() for a, b in pairs]).mean()
    assert target < split < batch


def test_broken_estimator_fails_the_same_check():
    """Companion: squares of one piece (a_k^2, not a_k b_k) carry the noise and fail."""
    g = torch.Generator().manual_seed(1)
    K, D, n, sigma, reps = 4, 500, 8, 1.0, 200
    mu = 0.3 * torch.randn(K, D, generator=g, dtype=DT)
    target = mu.var(dim=0, unbiased=False).mean()
    pieces = [_halves(mu, sigma, n, g)[0] for _ in range(reps)]
    broken = torch.stack([iga.split_conflict_variance(a, a).mean() for a in pieces])
    assert broken.mean() > 1.5 * target


def test_relative_in_unit_interval_and_agreeing_domains_give_zero():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(5, 64, generator=g, dtype=DT), torch.randn(5, 64, generator=g, dtype=DT)
    rel = iga.split_conflict_variance(a, b, kind="relative")
    assert bool(((rel >= 0) & (rel <= 1)).all())
    same = torch.randn(1, 64, generator=g, dtype=DT).expand(5, 64)
    assert bool((iga.split_conflict_variance(same, same) == 0).all())


def test_one_domain_warns_and_gives_zero():
    a = torch.randn(1, 3, dtype=DT)
    with pytest.warns(UserWarning, match="K = 1"):
        v = iga.split_conflict_variance(a, a + 1)
    assert bool((v == 0).all())


@pytest.mark.parametrize(
    ("a", "b", "kind", "error", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(3, 3), "raw", ValueError, "same"),
        (torch.zeros(2, 3), torch.zeros(2, 3), "nope", ValueError, "unknown"),
        (
            torch.zeros(2, 3, dtype=torch.long),
            torch.zeros(2, 3, dtype=torch.long),
            "raw",
            TypeError,
            "dtype",
        ),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=DT), "raw", TypeError, "one dtype"),
    ],
)
def test_bad_input(a, b, kind, error, match):
    with pytest.raises(error, match=match):
        iga.split_conflict_variance(a, b, kind=kind)
