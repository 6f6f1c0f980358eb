"""The split capture (issue 14, item 3): two halves per domain in the same one backward."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from iga.core.capture import PerDomainGradients
from iga.core.domain_split import DomainSplit
from iga.core.losses import domain_mean_loss
from tests.test_capture_models import (
    Batch,
    assert_rel_close,
    lora_mlp,
    make_batch,
    mse_per_token,
    reference_per_domain,
)


def _run(model, micro: list[Batch], k: int, space: str, halves: bool, seed: int):
    """Backward of each micro-batch's own domain mean / len(micro); returns the capture."""
    cap = PerDomainGradients(model, k, space, halves=halves)
    model.zero_grad(set_to_none=True)
    for i, b in enumerate(micro):
        torch.manual_seed(seed + i)
        cap.set_domains(b.ids, b.mask.sum(dim=1))
        loss = domain_mean_loss(mse_per_token(model, b.x, b.y), b.mask, b.ids, k)
        (loss / len(micro)).backward()
    return cap


@settings(max_examples=20, deadline=None)
@given(
    k=st.integers(1, 4),
    extra=st.integers(0, 8),
    tokens=st.integers(1, 3),
    n_micro=st.integers(1, 3),
    space=st.sampled_from(["full", "factor"]),
    shuffle=st.booleans(),
    lora_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_halves_add_up_to_the_per_domain_gradients(
    k, extra, tokens, n_micro, space, shuffle, lora_bias, seed
):
    """Sum of the two half buffers == the batch capture's G_k, and mean_k G_k == .grad."""
    micro = [make_batch(k, extra, tokens, 5, 3, seed + 7 * i, shuffle) for i in range(n_micro)]
    model = lora_mlp(lora_bias=lora_bias, seed=seed)
    plain = _run(model, micro, k, space, halves=False, seed=seed)
    expected = {key: g.clone() for key, g in plain.per_domain().items()}
    plain.remove()
    split = _run(model, micro, k, space, halves=True, seed=seed)
    got = split.per_domain()
    assert set(got) == set(expected)
    for key, g in got.items():
        assert g.shape == expected[key].shape
        assert_rel_close(g, expected[key])
    split.remove()


@pytest.mark.parametrize("space", ["full", "factor"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_each_half_is_its_own_mean_loss_gradient(space, shuffle):
    """a_k (b_k) == the gradient of the token-mean loss over half a (b) of domain k alone:
    an unbiased estimate of mu_k, also with halves of unequal weight."""
    k, seed = 3, 5
    batch = make_batch(k, 8, 3, 5, 3, seed, shuffle)
    model = lora_mlp(seed=seed)
    cap = _run(model, [batch], k, space, halves=True, seed=seed)
    halves = {key: (a.clone(), b.clone()) for key, (a, b) in cap.halves().items()}
    groups = cap.split.groups
    cap.remove()
    as_groups = Batch(batch.x, batch.y, batch.mask, groups)
    ref = reference_per_domain(model, [as_groups], 2 * k, space, seed)  # (2K, *shape)
    for key, (a, b) in halves.items():
        assert_rel_close(a, ref[key][0::2])
        assert_rel_close(b, ref[key][1::2])


def test_a_wrong_half_weight_fails_the_same_check():
    """Companion: dividing by the example share instead of the token share is biased, and
    the exact comparison above catches it (the batch has unequal token counts)."""
    k, seed = 3, 5
    batch = make_batch(k, 8, 3, 5, 3, seed, False)
    model = lora_mlp(seed=seed)
    cap = PerDomainGradients(model, k, "factor", halves=True)
    cap.set_domains(batch.ids)  # no token weights: halves weighed by examples
    domain_mean_loss(mse_per_token(model, batch.x, batch.y), batch.mask, batch.ids, k).backward()
    a = {key: pair[0].clone() for key, pair in cap.halves().items()}
    groups = cap.split.groups
    cap.remove()
    ref = reference_per_domain(
        model, [Batch(batch.x, batch.y, batch.mask, groups)], 2 * k, "factor", seed
    )
    with pytest.raises(AssertionError):
        for key, g in a.items():
            assert_rel_close(g, ref[key][0::2])


def test_halves_are_balanced_and_single_examples_alternate():
    load = torch.zeros(2, 2, dtype=torch.float64)
    ids = torch.tensor([0, 0, 0, 0, 1])
    s = DomainSplit(ids, 2, weights=torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0]), half_load=load)
    assert s.num_groups == 4
    assert s.groups.tolist() == [0, 0, 1, 1, 2]  # domain 0 cut 2 | 2; domain 1's one example -> a
    assert load.tolist() == [[0.5, 0.5], [1.0, 0.0]]
    DomainSplit(torch.tensor([1]), 2, half_load=load)  # the next single example goes to b
    assert load[1].tolist() == [1.0, 1.0]
    # token weights, not example counts, are balanced: 3 | 1 + 1 + 1
    load = torch.zeros(1, 2, dtype=torch.float64)
    s = DomainSplit(
        torch.zeros(4, dtype=torch.long), 1, weights=torch.tensor([3.0, 1, 1, 1]), half_load=load
    )
    assert s.groups.tolist() == [0, 1, 1, 1]


def test_a_domain_with_one_example_in_the_step_is_an_error():
    model = lora_mlp(seed=0)
    batch = make_batch(2, 0, 2, 5, 3, 0, False)  # one example per domain
    cap = _run(model, [batch], 2, "factor", halves=True, seed=0)
    assert cap.half_shortfall() == [0, 1]
    with pytest.raises(RuntimeError, match=r"fewer than 2 examples.*--batch-sets"):
        cap.halves()
    cap.remove()


def test_bad_weights_name_the_problem():
    with pytest.raises(ValueError, match="one per example"):
        DomainSplit(torch.tensor([0, 1]), 2, weights=torch.ones(3), half_load=torch.zeros(2, 2))
