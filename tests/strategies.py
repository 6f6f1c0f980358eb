"""Shared hypothesis strategies, built by construction (never by filtering).

Matrices are ``U diag(s) V^T`` with orthonormal ``U, V`` from a seeded QR and
singular values drawn by hypothesis, so conditioning, rank and spectral gaps are
known exactly and shrinking acts on the numbers that matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from hypothesis import strategies as st

DTYPE = torch.float64
seeds = st.integers(min_value=0, max_value=2**31 - 1)


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    """(n, k) matrix with orthonormal columns, from the QR of a seeded Gaussian."""
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=DTYPE))  # (n, k), (k, k)
    return q * torch.sign(torch.diagonal(r))  # unique sign convention


def from_svd(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * s) @ v.T  # (m, k) * (k,) @ (k, n) -> (m, n)


@dataclass
class Spectral:
    """A matrix with its exact singular values (descending)."""

    matrix: torch.Tensor
    singular_values: torch.Tensor


@st.composite
def matrices(draw, max_side: int = 12, cond: float = 1e3, rank: int | None = None) -> Spectral:
    """Well-conditioned (m, n) matrices: singular values in [1, cond] (``rank`` of them if set)."""
    m = draw(st.integers(1, max_side))
    n = draw(st.integers(1, max_side))
    k = min(m, n) if rank is None else min(m, n, rank)
    s = sorted(draw(st.lists(st.floats(1.0, cond), min_size=k, max_size=k)), reverse=True)
    s_t = torch.tensor(s, dtype=DTYPE)
    seed = draw(seeds)
    matrix = from_svd(orthonormal(m, k, seed), s_t, orthonormal(n, k, seed + 1))
    return Spectral(matrix, s_t)


@st.composite
def gapped_matrices(draw, max_side: int = 40) -> tuple[Spectral, int]:
    """(matrix, r) whose top-r singular values lie in [10, 20] and the rest in [0, 1]."""
    m = draw(st.integers(4, max_side))
    n = draw(st.integers(4, max_side))
    k = min(m, n)
    r = draw(st.integers(1, k - 1))
    top = draw(st.lists(st.floats(10.0, 20.0), min_size=r, max_size=r))
    rest = draw(st.lists(st.floats(0.0, 1.0), min_size=k - r, max_size=k - r))
    s_t = torch.tensor(sorted(top + rest, reverse=True), dtype=DTYPE)
    seed = draw(seeds)
    matrix = from_svd(orthonormal(m, k, seed), s_t, orthonormal(n, k, seed + 1))
    return Spectral(matrix, s_t), r


@st.composite
def domain_grads(draw, max_k: int = 6, max_numel: int = 24, min_k: int = 1) -> torch.Tensor:
    """Per-domain gradient stacks (K, d1, d2) with per-domain scales over 4 decades."""
    k = draw(st.integers(min_k, max_k))
    d1 = draw(st.integers(1, max_numel // 4))
    d2 = draw(st.integers(1, 4))
    scales = draw(st.lists(st.floats(1e-2, 1e2), min_size=k, max_size=k))
    g = torch.Generator().manual_seed(draw(seeds))
    base = torch.randn(k, d1, d2, generator=g, dtype=DTYPE)  # (K, d1, d2)
    return base * torch.tensor(scales, dtype=DTYPE)[:, None, None]


@st.composite
def lora_points(draw, max_side: int = 10, max_rank: int = 4):
    """(B (out, r), A (r, in), H (out, in)) with well-conditioned full-rank factors."""
    out = draw(st.integers(2, max_side))
    inp = draw(st.integers(2, max_side))
    r = draw(st.integers(1, min(max_rank, out, inp)))
    seed = draw(seeds)
    sb = torch.tensor(draw(st.lists(st.floats(0.5, 2.0), min_size=r, max_size=r)), dtype=DTYPE)
    sa = torch.tensor(draw(st.lists(st.floats(0.5, 2.0), min_size=r, max_size=r)), dtype=DTYPE)
    b = from_svd(orthonormal(out, r, seed), sb, orthonormal(r, r, seed + 1))
    a = from_svd(orthonormal(r, r, seed + 2), sa, orthonormal(inp, r, seed + 3))
    h = torch.randn(out, inp, generator=torch.Generator().manual_seed(seed + 4), dtype=DTYPE)
    return b, a, h


taus = st.floats(0.0, 50.0)
positive_scales = st.floats(1e-3, 1e3)
