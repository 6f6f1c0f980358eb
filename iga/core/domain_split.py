"""Which rows of a micro-batch feed which per-domain buffer (docs/design.md section 3).

``DomainSplit`` groups a micro-batch's examples by domain (K groups) or, for the
``split`` estimator (theory/THEOREMS.md, Lemma E; ``iga.split_conflict_variance``), by
domain and half (2K groups: group ``2k`` is domain k's half a, ``2k + 1`` its half b),
inside the same single backward pass.

Halves. Each domain's examples of a micro-batch are cut into a prefix (half a) and a
suffix (half b) whose loss weights (supervised tokens, or 1 per example) are as equal
as possible; a domain with a single example in the micro-batch puts it in the half
that holds less weight so far in the step, so accumulated micro-batches stay balanced.
The cut keeps a domain-sorted batch sorted by group, so groups are still sliced
without a copy.

Unbiased halves. With the loss ``mean_k L_k`` of token means, the part of domain k's
gradient ``G_k`` that flows through half h is ``f_h * g_h``, where ``g_h`` is the mean
loss gradient of half h alone and ``f_h = W_h / W_k`` its share of the domain's loss
weight. So the buffers of the two halves add up to ``G_k`` exactly, and
``g_h = buffer_h / f_h`` is an unbiased estimate of the domain's mean gradient
``mu_k``, independent of the other half (disjoint examples). Over micro-batches (each
loss its own domain mean, scaled by ``1 / accumulation_steps``) the shares add up:
``g_h = buffer_h * F_k / F_h`` with ``F_h = sum_mb f_h`` and ``F_k = F_a + F_b``.
"""

from __future__ import annotations

import torch

from iga.core.losses import check_domain_ids


def _cut(weights: torch.Tensor, load: torch.Tensor) -> int:
    """Prefix length for half a of one domain's (n,) weights, given the step's (2,) load."""
    n = weights.numel()
    if n == 1:
        return 1 if float(load[0]) <= float(load[1]) else 0
    cum = torch.cumsum(weights, 0)  # (n,)
    total = cum[-1]
    imbalance = (2 * cum[:-1] - total).abs()  # (n - 1,): |W_a - W_b| for a prefix of 1..n-1
    return int(torch.argmin(imbalance)) + 1


class DomainSplit:
    """Rows of each group of one micro-batch: K domains, or 2K domain halves.

    ``domain_ids`` (B,) integers in [0, K). ``weights`` (B,) is each example's loss
    weight (its supervised tokens), used only to balance and weigh the halves (1 per
    example if None). ``half_load`` (K, 2), the step's accumulated half shares ``F``,
    turns the halves on; it is updated in place with this micro-batch's shares.

    A batch laid out in group blocks (sorted) is split by slicing, with no copy;
    otherwise each group's rows are gathered. Both cost O(rows), never a one-hot
    product (which would multiply the work of ``dy^T x`` by K).
    """

    def __init__(
        self,
        domain_ids: torch.Tensor,
        num_domains: int,
        *,
        weights: torch.Tensor | None = None,
        half_load: torch.Tensor | None = None,
    ) -> None:
        ids = check_domain_ids(domain_ids, num_domains).cpu()
        self.batch_size = ids.numel()
        self.num_domains = num_domains
        self.counts = torch.bincount(ids, minlength=num_domains)  # (K,)
        if half_load is None:
            groups, self.num_groups = ids, num_domains
        else:
            groups, self.num_groups = self._halves(ids, weights, half_load), 2 * num_domains
        self.groups = groups  # (B,): each example's group (its domain, or 2k + half)
        group_counts = torch.bincount(groups, minlength=self.num_groups).tolist()  # (G,)
        self.present = [g for g in range(self.num_groups) if group_counts[g] > 0]
        self._index: list[torch.Tensor] | None = None
        self._slices: list[slice] = []
        if bool((groups[1:] >= groups[:-1]).all()):
            start = 0
            for n in group_counts:
                self._slices.append(slice(start, start + n))
                start += n
        else:
            self._index = [torch.nonzero(groups == g).squeeze(1) for g in range(self.num_groups)]

    def _halves(
        self, ids: torch.Tensor, weights: torch.Tensor | None, load: torch.Tensor
    ) -> torch.Tensor:
        """(B,) group ids ``2k + h``; adds this micro-batch's shares ``f_h`` to ``load``."""
        if weights is None:
            w = torch.ones(ids.numel(), dtype=torch.float64)
        else:
            w = torch.as_tensor(weights).detach().to("cpu", torch.float64).reshape(-1)
            if w.numel() != ids.numel() or bool((w < 0).any()) or not bool(w.isfinite().all()):
                raise ValueError(
                    f"IGA capture: example weights must be {ids.numel()} finite numbers >= 0 "
                    f"(one per example, e.g. its supervised tokens); got shape "
                    f"{tuple(w.shape)}."
                )
        groups = 2 * ids  # (B,)
        for k in range(self.num_domains):
            rows = torch.nonzero(ids == k).squeeze(1)  # (n_k,)
            if rows.numel() == 0:
                continue
            wk = w[rows]  # (n_k,)
            if float(wk.sum()) <= 0:  # no supervised token: weigh the examples equally
                wk = torch.ones_like(wk)
            cut = _cut(wk, load[k])
            groups[rows[cut:]] += 1
            share_a = float(wk[:cut].sum() / wk.sum())
            load[k, 0] += share_a
            load[k, 1] += 1.0 - share_a
        return groups

    def rows(self, t: torch.Tensor, g: int) -> torch.Tensor:
        """Group g's rows of ``t`` (B, ..., d), flattened to (n_g * ..., d)."""
        if self._index is None:
            part = t[self._slices[g]]  # (n_g, ..., d)
        else:
            part = t.index_select(0, self._index[g].to(t.device))  # (n_g, ..., d)
        return part.reshape(-1, t.shape[-1])  # (n_g * tokens, d)
