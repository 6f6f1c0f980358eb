"""An independent reference of the IGA step (THEOREMS.md section 0, "IGA step").

Written from the equations, sharing no code with ``iga/``: plain Python loops over
domains and coordinates, numpy float64, numpy's SVD. For per-domain gradients
``G_k`` of a LoRA layer's effective weight (K, out, in), factors ``B`` (out, r),
``A`` (r, in) and scale ``s``:

    Gbar_ij = (1/K) sum_k G_kij
    V_ij    = (1/K) sum_k (G_kij - Gbar_ij)^2                     (raw; ddof = 0)
    V_ij    = V_ij / ((1/K) sum_k G_kij^2 + eps)                   (relative; 0 if 0/0)
    M_ij    = m_f + (1 - m_f) exp(-tau V_ij)
    H       = P_r(M * Gbar)     (best rank-r approximation, Eckart-Young; r = rank(A))
    dB      = s H A^T,   dA = s B^T H                              (chain rule of s B A)

A plain parameter gets ``M * Gbar`` (no projection, no chain rule).
"""

from __future__ import annotations

import math

import numpy as np


def reference_mask(G: np.ndarray, tau: float, variance: str, eps: float, floor: float):
    """``(M, Gbar)`` for per-domain gradients ``G`` (K, *shape), by loops over coordinates."""
    G = np.asarray(G, dtype=np.float64)
    K = G.shape[0]
    flat = G.reshape(K, -1)
    mask = np.empty(flat.shape[1])
    mean = np.empty(flat.shape[1])
    for j in range(flat.shape[1]):
        m = 0.0
        for k in range(K):
            m += flat[k, j]
        m /= K
        var, second = 0.0, 0.0
        for k in range(K):
            var += (flat[k, j] - m) ** 2
            second += flat[k, j] ** 2
        var /= K
        second = second / K + eps
        if variance == "relative":
            var = var / second if second > 0 else 0.0
        mask[j] = floor + (1 - floor) * math.exp(-tau * var)
        mean[j] = m
    return mask.reshape(G.shape[1:]), mean.reshape(G.shape[1:])


def best_rank(H: np.ndarray, rank: int) -> np.ndarray:
    """Truncated SVD ``sum_{q < rank} s_q u_q v_q^T`` (Eckart-Young), summed by a loop."""
    u, sv, vt = np.linalg.svd(H, full_matrices=False)
    out = np.zeros_like(H)
    for q in range(min(rank, len(sv))):
        out += sv[q] * np.outer(u[:, q], vt[q])
    return out


def _matmul(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Plain triple loop (the reference avoids shared kernels on purpose)."""
    out = np.zeros((X.shape[0], Y.shape[1]))
    for i in range(X.shape[0]):
        for j in range(Y.shape[1]):
            acc = 0.0
            for q in range(X.shape[1]):
                acc += X[i, q] * Y[q, j]
            out[i, j] = acc
    return out


def reference_lora_step(
    G,
    A,
    B,
    scale: float,
    tau: float,
    variance: str,
    eps: float,
    floor: float = 0.0,
    rank: int | None = None,
):
    """``(dA, dB, M)`` of one IGA step on a full-space LoRA layer (module docstring)."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    mask, mean = reference_mask(G, tau, variance, eps, floor)
    H = best_rank(mask * mean, A.shape[0] if rank is None else rank)
    dB = scale * _matmul(H, A.T)
    dA = scale * _matmul(B.T, H)
    return dA, dB, mask


def reference_plain_step(G, tau: float, variance: str, eps: float, floor: float = 0.0):
    """``(M * Gbar, M)`` for a plain parameter."""
    mask, mean = reference_mask(G, tau, variance, eps, floor)
    return mask * mean, mask
