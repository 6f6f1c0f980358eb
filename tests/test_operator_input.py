"""The operators refuse what they cannot mean (issue 18, items 10-12).

Each case names the function, the argument and a word of the message; the valid
companion of each family of cases runs without error, so a check that refused
everything would fail here too.
"""

from __future__ import annotations

import pytest
import torch

import iga
from iga.core.projection import lora_factor_grads, project_low_rank


def _g(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_item_10_conflict_mask_refuses_negative_nan_and_inf_variance():
    # Issue 18, item 10: V = [0.1, nan, -1, -1000] gave [0.607, nan, 148.4, inf].
    with pytest.raises(ValueError, match=r"conflict_mask: variance.*1 NaN.*2 negative"):
        iga.conflict_mask(torch.tensor([0.1, float("nan"), -1.0, -1000.0]), 5.0)
    with pytest.raises(ValueError, match="1 Inf"):
        iga.conflict_mask(torch.tensor([0.1, float("inf")]), 5.0)
    with pytest.raises(TypeError, match="variance has dtype torch.int64"):
        iga.conflict_mask(torch.tensor([0, 1]), 5.0)
    with pytest.raises(ValueError, match="meta tensor"):
        iga.conflict_mask(torch.zeros(3, device="meta"), 5.0)
    mask = iga.conflict_mask(torch.tensor([0.0, 0.1, 3.0]), 5.0)  # the valid companion
    assert bool(((mask > 0) & (mask <= 1)).all())


def test_item_11_conflict_variance_refuses_nan_and_inf_gradients():
    grads = _g(3, 4)
    grads[1, 2] = float("nan")  # issue 18, item 11: this coordinate gave V = 0 (mask 1)
    with pytest.raises(ValueError, match=r"conflict_variance: grads holds 1 NaN or Inf"):
        iga.conflict_variance(grads)
    grads[1, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        iga.conflict_variance(grads, kind="relative")
    with pytest.raises(ValueError, match="NaN or Inf"):
        iga.masked_mean(grads, 1.0)
    with pytest.raises(TypeError, match="dtype torch.int32"):
        iga.conflict_variance(torch.ones(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="meta tensor"):
        iga.conflict_variance(torch.zeros(3, 4, device="meta"))
    with pytest.raises(ValueError, match="grads_b holds"):
        iga.split_conflict_variance(_g(3, 4), grads)
    assert bool((iga.conflict_variance(_g(3, 4)) >= 0).all())  # the valid companion


def test_item_12_align_gradients_refuses_lora_factors_whose_ranks_disagree():
    config = iga.IGAConfig()
    grads = {"w": _g(2, 32, 16)}
    A, B = _g(4, 16, seed=1), _g(32, 5, seed=2)  # issue 18, item 12: grad_A came back (5, 16)
    with pytest.raises(ValueError, match=r"LoRAFactors: LoRA ranks disagree: A \(4, 16\)"):
        iga.LoRAFactors(A, B, 2.0)
    with pytest.raises(ValueError, match="ranks disagree"):
        lora_factor_grads(grads["w"][0], B, A, 2.0)
    with pytest.raises(TypeError, match="A is torch.float32 but B is torch.float64"):
        iga.LoRAFactors(A, B[:, :4].double(), 2.0)
    with pytest.raises(ValueError, match="scale must be a finite"):
        iga.LoRAFactors(A, B[:, :4], float("nan"))
    good = iga.LoRAFactors(A, B[:, :4], 2.0)
    out = iga.align_gradients(grads, config, {"w": good})  # the valid companion
    assert out.grads["w"].A.shape == (4, 16) and out.grads["w"].B.shape == (32, 4)
    with pytest.raises(TypeError, match="'w' has torch.float32 factors but a torch.float64"):
        iga.align_gradients({"w": grads["w"].double()}, config, {"w": good})


@pytest.mark.parametrize(
    "grads, error, words",
    [
        ({"w": torch.ones(2, 3, dtype=torch.long)}, TypeError, "gradient of 'w' has dtype"),
        ({"w": torch.zeros(2, 3, device="meta")}, ValueError, "meta tensor"),
        ({"w": torch.tensor([[0.0, float("nan")], [1.0, 2.0]])}, ValueError, "1 NaN or Inf"),
        ({"w": torch.tensor([[0.0, float("-inf")], [1.0, 2.0]])}, ValueError, "1 NaN or Inf"),
    ],
)
def test_align_gradients_names_the_bad_gradient(grads, error, words):
    with pytest.raises(error, match=words):
        iga.align_gradients(grads, iga.IGAConfig(projection="none"))


def test_project_low_rank_refuses_integer_meta_and_nan_matrices():
    with pytest.raises(TypeError, match="project_low_rank: matrix has dtype"):
        project_low_rank(torch.ones(4, 4, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="meta tensor"):
        project_low_rank(torch.zeros(4, 4, device="meta"), 2)
    bad = _g(4, 4)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        project_low_rank(bad, 2)
    assert torch.linalg.matrix_rank(project_low_rank(_g(4, 4), 2)) == 2  # the valid companion
