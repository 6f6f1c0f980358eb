"""Metrics of docs/design.md section 6."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from iga.distill.metrics import accuracy, answer_consistency, logical_consistency_score, set_spread
from tests.strategies import seeds


def _reps(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@given(st.integers(2, 6), st.integers(1, 16), seeds, st.floats(0.1, 10.0))
def test_identical_representations_score_zero(n, d, seed, scale):
    row = _reps(1, d, seed)
    assert abs(float(set_spread(scale * row.expand(n, d)))) < 1e-12


@given(st.integers(2, 6), st.integers(2, 16), seeds)
def test_lcs_invariant_to_isomer_order(n, d, seed):
    reps = _reps(n, d, seed)
    torch.testing.assert_close(set_spread(reps), set_spread(reps.flip(0)))


@given(st.integers(2, 6), st.integers(2, 16), seeds)
def test_lcs_equals_mean_pairwise_distance(n, d, seed):
    u = torch.nn.functional.normalize(_reps(n, d, seed), dim=-1)
    pair = torch.cdist(u, u).square().sum() / (n * (n - 1)) / 2
    torch.testing.assert_close(set_spread(u), pair)


def test_orthogonal_isomers_score_one_and_antipodal_more():
    assert float(set_spread(torch.eye(3))) == pytest.approx(1.0)
    assert float(set_spread(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))) == pytest.approx(2.0)


def test_lcs_averages_sets_and_rejects_empty():
    a, b = torch.eye(2), torch.ones(2, 2)
    assert logical_consistency_score([a, b]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        logical_consistency_score([torch.ones(1, 3)])


def test_answer_consistency_and_accuracy():
    assert answer_consistency({"s1": ["4", "4"], "s2": ["4", "5"], "s3": [None, None]}) == 1 / 3
    assert accuracy(["4", None, "yes"], ["4", "4", "yes"]) == 2 / 3
    with pytest.raises(ValueError):
        accuracy([], [])


def test_evaluate_reports_lcs_and_answer_consistency_per_family(monkeypatch):
    """``EvalResult.per_family[f]`` holds the LCS and answer consistency of family f's sets
    alone; the overall figures are those over every set (fixed generations and
    representations stand in for a model)."""
    import iga.distill.evaluate as ev_module
    from iga.isomers import generate_sets

    domains = ["mathematics", "law", "medicine"]
    sets = generate_sets("deduction", domains, 2, seed=1) + generate_sets(
        "ordering", domains, 2, seed=1
    )
    reps = torch.randn(len(sets) * len(domains), 8, generator=torch.Generator().manual_seed(0))
    # deduction's first set answers yes, yes, no (inconsistent); every other set is consistent
    texts = ["Answer: yes"] * len(reps)
    texts[2] = "Answer: no"

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size):
        return texts[: len(prompts)], reps[: len(prompts)]

    monkeypatch.setattr(ev_module, "generate_and_pool", fake_generate)
    result = ev_module.evaluate(torch.nn.Linear(1, 1), None, sets, domains[:2], domains[2:])
    by_set = reps.reshape(len(sets), len(domains), 8)  # rows are set-major
    for i, family in enumerate(("deduction", "ordering")):
        mine = by_set[2 * i : 2 * i + 2]
        assert result.per_family[family]["lcs"] == pytest.approx(logical_consistency_score(mine))
    assert result.per_family["deduction"]["answer_consistency"] == 0.5
    assert result.per_family["ordering"]["answer_consistency"] == 1.0
    assert result.lcs == pytest.approx(logical_consistency_score(by_set))
    assert result.answer_consistency == 0.75
