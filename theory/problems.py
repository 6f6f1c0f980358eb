"""Seeded synthetic multi-domain problems with closed-form population risks.

Two families, both batched over Monte Carlo replications (leading axis R) and
over training domains (axis K), all float64 on CPU:

* ``LinearShortcut``: invariant features with a fixed relation to the label and
  spurious "shortcut" features whose relation to the label changes per domain
  (the anti-causal linear unit test of Arjovsky et al. 2019, arXiv 1907.02893,
  and Aubin et al. 2021, arXiv 2102.10867). Domain e has a shortcut strength
  ``mu_e = spu_mean + spu_scale * u_e`` with ``u_e`` uniform on {-1, +1}^d_spu:

      regression:      x_inv ~ N(0, I),  y = beta . x_inv + noise_y * xi
      classification:  y = +-1 (fair coin), x_inv = y * beta + N(0, I)
      both:            x_spu = mu_e * y + noise_spu * zeta

* ``LoRAShift``: matrix regression ``y = (W0 + U V^T + S_e) x + noise`` with a
  frozen base ``W0``, an invariant rank-``r_inv`` update ``U V^T`` on the
  invariant input columns, and a domain-specific rank-1 component
  ``S_e = spu_scale * a_e b_e^T / sqrt(out * d_spu)`` (``a_e``, ``b_e`` Rademacher)
  on the spurious input columns, so ``||S_e||_F = spu_scale`` and ``E S_e = 0``.

Every population quantity is a function of the squared-loss moments
``(E y^2, E[x y^T], E[x x^T])`` (or, for ``LoRAShift``, of ``W_e``), so the risk on a
training domain, on the meta-distribution (a fresh domain) and the OOD-optimal
predictor are exact. The shortcut meta-distribution is finite (2^d_spu domains),
so meta-expectations are exact averages over it, not Monte Carlo.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch

DTYPE = torch.float64


def rademacher(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen, dtype=torch.int64).to(DTYPE) * 2 - 1


def _all_signs(d: int) -> torch.Tensor:
    """Every vector of {-1, +1}^d, (2^d, d)."""
    return torch.tensor(list(itertools.product((-1.0, 1.0), repeat=d)), dtype=DTYPE)


@dataclass(frozen=True)
class Moments:
    """Squared-loss moments of a domain.

    ``syy = E y^2`` (...), ``c = E[x y]`` (..., d), ``C = E[x x^T]`` (..., d, d).
    """

    syy: torch.Tensor
    c: torch.Tensor
    C: torch.Tensor


@dataclass
class LinearShortcut:
    """Linear multi-domain regression or binary classification with shortcut features."""

    kind: str = "regression"
    d_inv: int = 4
    d_spu: int = 4
    spu_mean: float = 0.0
    spu_scale: float = 1.0
    noise_y: float = 0.5
    noise_spu: float = 0.5
    signal: float = 1.0
    seed: int = 0
    beta: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("regression", "classification"):
            raise ValueError(
                f"LinearShortcut.kind must be 'regression' or 'classification', got {self.kind!r}."
            )
        if self.d_spu > 12:
            raise ValueError(
                "LinearShortcut enumerates the 2^d_spu domains exactly; keep d_spu <= 12."
            )
        gen = torch.Generator().manual_seed(self.seed)
        b = torch.randn(self.d_inv, generator=gen, dtype=DTYPE)
        self.beta = self.signal * b / b.norm()

    @property
    def d(self) -> int:
        return self.d_inv + self.d_spu

    @property
    def inv(self) -> slice:
        return slice(0, self.d_inv)

    @property
    def spu(self) -> slice:
        return slice(self.d_inv, self.d)

    @property
    def label_second_moment(self) -> float:
        """``E y^2``: the same in every domain."""
        if self.kind == "classification":
            return 1.0
        return float(self.beta.square().sum()) + self.noise_y**2

    def domains_from_signs(self, u: torch.Tensor) -> torch.Tensor:
        return self.spu_mean + self.spu_scale * u  # (..., d_spu)

    def sample_domains(self, R: int, K: int, gen: torch.Generator) -> torch.Tensor:
        """Shortcut strengths ``mu`` of K iid domains per replication, (R, K, d_spu)."""
        return self.domains_from_signs(rademacher((R, K, self.d_spu), gen))

    def all_domains(self) -> torch.Tensor:
        """The support of the meta-distribution (uniform over it), (2^d_spu, d_spu)."""
        return self.domains_from_signs(_all_signs(self.d_spu))

    def sample_data(self, mu: torch.Tensor, n: int, gen: torch.Generator):
        """``n`` examples per domain: X (..., n, d), y (..., n) for ``mu`` (..., d_spu)."""
        batch = mu.shape[:-1]
        if self.kind == "regression":
            x_inv = torch.randn((*batch, n, self.d_inv), generator=gen, dtype=DTYPE)
            y = x_inv @ self.beta + self.noise_y * torch.randn(
                (*batch, n), generator=gen, dtype=DTYPE
            )
        else:
            y = rademacher((*batch, n), gen)
            noise = torch.randn((*batch, n, self.d_inv), generator=gen, dtype=DTYPE)
            x_inv = y[..., None] * self.beta + noise
        zeta = torch.randn((*batch, n, self.d_spu), generator=gen, dtype=DTYPE)
        x_spu = y[..., None] * mu[..., None, :] + self.noise_spu * zeta  # (..., n, d_spu)
        return torch.cat([x_inv, x_spu], dim=-1), y

    def moments(self, mu: torch.Tensor) -> Moments:
        """Exact moments of the domains ``mu`` (..., d_spu)."""
        v = self.label_second_moment
        h = self.beta  # E[x_inv y] in both kinds
        batch = mu.shape[:-1]
        c = torch.cat([h.expand(*batch, self.d_inv), v * mu], dim=-1)  # (..., d)
        c_ii = torch.eye(self.d_inv, dtype=DTYPE)
        if self.kind == "classification":
            c_ii = c_ii + torch.outer(self.beta, self.beta)
        c_si = mu[..., :, None] * h  # (..., d_spu, d_inv)
        c_ss = v * mu[..., :, None] * mu[..., None, :] + self.noise_spu**2 * torch.eye(
            self.d_spu, dtype=DTYPE
        )
        top = torch.cat([c_ii.expand(*batch, -1, -1), c_si.mT], dim=-1)  # (..., d_inv, d)
        bottom = torch.cat([c_si, c_ss], dim=-1)  # (..., d_spu, d)
        C = torch.cat([top, bottom], dim=-2)  # (..., d, d)
        return Moments(syy=torch.full(batch, v, dtype=DTYPE), c=c, C=C)

    def meta_moments(self) -> Moments:
        """Moments of a fresh domain in expectation: exact average over the 2^d_spu domains."""
        m = self.moments(self.all_domains())
        return Moments(syy=m.syy.mean(0), c=m.c.mean(0), C=m.C.mean(0))

    def risk(self, w: torch.Tensor, m: Moments) -> torch.Tensor:
        """Squared-loss population risk ``E (y - w.x)^2``; ``w`` (..., d) broadcasts with ``m``."""
        cw = (m.C @ w[..., None])[..., 0]  # (..., d)
        return m.syy - 2 * (w * m.c).sum(-1) + (w * cw).sum(-1)

    def train_risk(self, w: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Mean population risk of the training domains: w (R, d), mu (R, K, d_spu) -> (R,)."""
        return self.risk(w[:, None, :], self.moments(mu)).mean(-1)

    def ood_risk(self, w: torch.Tensor) -> torch.Tensor:
        """Risk on a fresh domain from the meta-distribution (expected), (...,)."""
        return self.risk(w, self.meta_moments())

    def ood_optimum(self) -> torch.Tensor:
        """Minimizer of the fresh-domain squared risk (invariant when spu_mean = 0)."""
        m = self.meta_moments()
        return torch.linalg.solve(m.C, m.c)

    def error(self, w: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """0-1 error of ``sign(w.x)`` on domains ``mu`` (classification only), closed form."""
        if self.kind != "classification":
            raise ValueError("error() is defined for the classification problem only.")
        margin = (w[..., self.inv] * self.beta).sum(-1) + (w[..., self.spu] * mu).sum(-1)
        noise_sd = torch.sqrt(
            w[..., self.inv].square().sum(-1)
            + self.noise_spu**2 * w[..., self.spu].square().sum(-1)
        )
        return torch.special.ndtr(-margin / noise_sd.clamp_min(1e-300))

    def ood_error(self, w: torch.Tensor) -> torch.Tensor:
        """Expected 0-1 error on a fresh domain: exact mean over the 2^d_spu domains."""
        return self.error(w[..., None, :], self.all_domains()).mean(-1)

    def deviation_stats(self) -> dict[str, tuple[float, float]]:
        """``(sigma, b)`` of each domain-varying moment block: sigma^2 = E||X_e - E X||^2,
        b = max ||X_e - E X||, norms Frobenius; exact over the finite meta-distribution.

        Blocks: ``g`` = E[x_spu y], ``ss`` = E[x_spu x_spu^T], ``si`` = E[x_spu x_inv^T].
        """
        m = self.moments(self.all_domains())
        mean = self.meta_moments()
        blocks = {
            "g": (m.c[:, self.spu] - mean.c[self.spu]).flatten(1),
            "ss": (m.C[:, self.spu, self.spu] - mean.C[self.spu, self.spu]).flatten(1),
            "si": (m.C[:, self.spu, self.inv] - mean.C[self.spu, self.inv]).flatten(1),
        }
        out = {}
        for name, dev in blocks.items():
            norms = dev.norm(dim=1)  # (2^d_spu,)
            out[name] = (float(norms.square().mean().sqrt()), float(norms.max()))
        return out


@dataclass
class LoRAShift:
    """Matrix regression: frozen base, invariant low-rank update, spurious rank-1 shifts.

    ``side`` says where the spurious shifts live: ``"in"``, on ``d_spu`` input columns
    (spurious input features, the analogue of ``LinearShortcut``), or ``"out"``, on
    ``d_spu`` output rows. The invariant update lives on the other columns/rows.
    The two differ for LoRA (``dW = s B A`` with peft's init ``B = 0``, ``A`` random):
    THEOREMS.md section 3.
    """

    out_dim: int = 8
    in_dim: int = 12
    d_spu: int = 4
    r_inv: int = 2
    side: str = "in"
    spu_scale: float = 1.0
    noise_y: float = 0.5
    signal: float = 1.0
    base_scale: float = 0.5
    seed: int = 0
    W0: torch.Tensor = field(init=False, repr=False)
    delta_star: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.side not in ("in", "out"):
            raise ValueError(f"LoRAShift.side must be 'in' or 'out', got {self.side!r}.")
        n_side = self.in_dim if self.side == "in" else self.out_dim
        if not 0 < self.d_spu < n_side:
            raise ValueError(f"LoRAShift.d_spu must lie in (0, {n_side}) for side={self.side!r}.")
        gen = torch.Generator().manual_seed(self.seed)
        self.W0 = self.base_scale * torch.randn(
            (self.out_dim, self.in_dim), generator=gen, dtype=DTYPE
        )
        self.W0 /= math.sqrt(self.in_dim)
        rows, cols = self._inv_shape()
        u, _ = torch.linalg.qr(torch.randn((rows, self.r_inv), generator=gen, dtype=DTYPE))
        v, _ = torch.linalg.qr(torch.randn((cols, self.r_inv), generator=gen, dtype=DTYPE))
        # Singular values signal * (1, 0.8, 0.6, ...): distinct, so the rank-r fit is unique.
        sv = self.signal * (1.0 - 0.2 * torch.arange(self.r_inv, dtype=DTYPE) / max(self.r_inv, 1))
        delta = torch.zeros((self.out_dim, self.in_dim), dtype=DTYPE)
        delta[self._inv_index()] = (u * sv) @ v.T  # the invariant update U V^T
        self.delta_star = delta

    def _inv_shape(self) -> tuple[int, int]:
        if self.side == "in":
            return self.out_dim, self.in_dim - self.d_spu
        return self.out_dim - self.d_spu, self.in_dim

    def _inv_index(self):
        if self.side == "in":
            return (slice(None), slice(0, self.in_dim - self.d_spu))
        return (slice(0, self.out_dim - self.d_spu), slice(None))

    def spurious_index(self):
        """Index of the spurious block of an (..., out, in) tensor."""
        if self.side == "in":
            return (Ellipsis, slice(None), slice(self.in_dim - self.d_spu, self.in_dim))
        return (Ellipsis, slice(self.out_dim - self.d_spu, self.out_dim), slice(None))

    def spurious_part(self, M: torch.Tensor) -> torch.Tensor:
        return M[self.spurious_index()]

    def sample_domains(self, R: int, K: int, gen: torch.Generator) -> torch.Tensor:
        """Spurious shifts ``S_e`` of K iid domains per replication, (R, K, out, in)."""
        rows = self.out_dim if self.side == "in" else self.d_spu
        cols = self.d_spu if self.side == "in" else self.in_dim
        a = rademacher((R, K, rows), gen)
        b = rademacher((R, K, cols), gen)
        s = torch.zeros((R, K, self.out_dim, self.in_dim), dtype=DTYPE)
        s[self.spurious_index()] = (
            self.spu_scale / math.sqrt(rows * cols) * a[..., :, None] * b[..., None, :]
        )
        return s

    def domain_weights(self, shifts: torch.Tensor) -> torch.Tensor:
        """True maps ``W_e = W0 + U V^T + S_e`` (..., out, in)."""
        return self.W0 + self.delta_star + shifts

    def sample_data(self, shifts: torch.Tensor, n: int, gen: torch.Generator):
        """``n`` examples per domain: X (..., n, in), Y (..., n, out)."""
        batch = shifts.shape[:-2]
        x = torch.randn((*batch, n, self.in_dim), generator=gen, dtype=DTYPE)
        noise = self.noise_y * torch.randn((*batch, n, self.out_dim), generator=gen, dtype=DTYPE)
        return x, x @ self.domain_weights(shifts).mT + noise

    def risk(self, W: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """``E ||y - W x||^2`` on domains ``shifts`` with ``x ~ N(0, I)``: (...,)."""
        return (W - self.domain_weights(shifts)).square().sum(
            (-2, -1)
        ) + self.out_dim * self.noise_y**2

    def train_risk(self, W: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """``W`` (R, out, in), ``shifts`` (R, K, out, in) -> (R,)."""
        return self.risk(W[:, None], shifts).mean(-1)

    def ood_risk(self, W: torch.Tensor) -> torch.Tensor:
        """Expected risk on a fresh domain: ``E S_e = 0`` and ``||S_e||_F = spu_scale``."""
        resid = W - self.W0 - self.delta_star
        return resid.square().sum((-2, -1)) + self.spu_scale**2 + self.out_dim * self.noise_y**2

    def ood_optimum(self) -> torch.Tensor:
        return self.W0 + self.delta_star

    def population_grads(self, W: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Per-domain population gradients ``2 (W - W_e)``: W (R, out, in) -> (R, K, out, in)."""
        return 2 * (W[:, None] - self.domain_weights(shifts))

    def deviation_stats(self) -> dict[str, tuple[float, float]]:
        """``(sigma, b)`` of the one domain-varying block, the shift ``S_e``: both ``spu_scale``."""
        return {"g": (self.spu_scale, self.spu_scale)}
