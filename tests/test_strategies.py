"""The strategies produce what they promise (array-api-tests habit)."""

import torch
from hypothesis import given

from tests.strategies import domain_grads, gapped_matrices, lora_points, matrices


@given(matrices())
def test_matrices_have_stated_spectrum(m):
    torch.testing.assert_close(torch.linalg.svdvals(m.matrix), m.singular_values)
    assert bool((m.singular_values >= 1.0).all())


@given(gapped_matrices())
def test_gapped_matrices_have_gap(gm):
    m, r = gm
    s = torch.linalg.svdvals(m.matrix)
    assert float(s[r - 1]) >= 10.0 - 1e-9 and float(s[r]) <= 1.0 + 1e-9


@given(lora_points())
def test_lora_points_full_rank(point):
    b, a, _ = point
    r = a.shape[0]
    assert int(torch.linalg.matrix_rank(b)) == r and int(torch.linalg.matrix_rank(a)) == r


@given(domain_grads())
def test_domain_grads_shape(g):
    assert g.dim() == 3 and g.shape[0] >= 1 and bool(torch.isfinite(g).all())
