"""The losses every training path shares: next-token cross-entropy on completion tokens,
the distillation KL term, and the per-domain mean ``L = (1/K) sum_k L_k`` (paper, eq. 1:
the ERM objective over the K domains of an isomer set; docs/design.md, section 2).

One definition each, used by ``iga.core.step``, ``iga.distill.trainer`` and
``empirical.methods``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of a prompt or padding token: no loss


def completion_token_losses(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy (B, T-1) and its supervision mask (B, T-1)."""
    target = labels[:, 1:]  # (B, T-1): token t+1 is predicted at position t
    mask = target != IGNORE_INDEX
    losses = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), target.clamp_min(0), reduction="none"
    )  # (B, T-1)
    return losses, mask


def kd_token_losses(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Per-token ``T^2 KL(teacher || student)`` on softened distributions, (B, T-1)."""
    s = F.log_softmax(student[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    t = F.log_softmax(teacher[:, :-1].float() / temperature, dim=-1)  # (B, T-1, V)
    return (t.exp() * (t - s)).sum(dim=-1) * temperature**2


def per_domain_losses(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor | None,
    domain_ids: torch.Tensor,
    num_domains: int,
    token_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L_k``, the mean loss over domain k's supervised tokens, as a (K,) tensor.

    ``per_token_loss`` (B, T) or (B,), ``mask`` of the same shape (1 for
    supervised tokens) or None, ``domain_ids`` (B,) in ``[0, K)``. A domain with
    no supervised token has ``L_k = 0``.

    ``token_counts`` (K,) replaces the per-domain token counts of this batch as
    denominators: pass the counts over the whole optimizer step (all
    micro-batches) and sum the micro-batch losses instead of averaging them,
    and ``L`` is exactly the step's per-domain token mean even when
    micro-batches hold unequal numbers of tokens per domain (see ``domain_mean_loss``).
    """
    ids = check_domain_ids(domain_ids, num_domains)
    batch = ids.numel()
    if per_token_loss.shape[0] != batch:
        raise ValueError(
            f"per_domain_losses: per_token_loss has {per_token_loss.shape[0]} rows but "
            f"domain_ids has {batch} entries; both must be batch-first."
        )
    if mask is None:
        mask = torch.ones_like(per_token_loss)
    if mask.shape != per_token_loss.shape:
        raise ValueError(
            f"per_domain_losses: mask shape {tuple(mask.shape)} != loss shape "
            f"{tuple(per_token_loss.shape)}."
        )
    mask = mask.to(per_token_loss.dtype)
    ids = ids.to(per_token_loss.device)
    per_example = (per_token_loss * mask).reshape(batch, -1).sum(dim=1)  # (B,)
    sums = per_token_loss.new_zeros(num_domains).index_add(0, ids, per_example)  # (K,)
    if token_counts is None:
        tokens = mask.reshape(batch, -1).sum(dim=1)  # (B,)
        token_counts = per_token_loss.new_zeros(num_domains).index_add(0, ids, tokens)  # (K,)
    counts = torch.as_tensor(token_counts, dtype=sums.dtype, device=sums.device)
    return sums / counts.clamp_min(1.0)  # (K,)


def domain_mean_loss(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor | None,
    domain_ids: torch.Tensor,
    num_domains: int,
    token_counts: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L = (1/K) sum_k L_k``: the mean of ``per_domain_losses`` (same arguments).

    A domain with no supervised token adds 0 and still counts in K. With
    ``token_counts`` over a whole optimizer step, summing the micro-batch losses
    gives exactly the step's per-domain token mean.
    """
    return per_domain_losses(per_token_loss, mask, domain_ids, num_domains, token_counts).mean()


def check_domain_ids(domain_ids: torch.Tensor, num_domains: int) -> torch.Tensor:
    ids = torch.as_tensor(domain_ids)
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(
            f"domain ids must be a 1-D integer tensor with one entry per example, got "
            f"dtype {ids.dtype} and shape {tuple(ids.shape)}."
        )
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= num_domains):
        raise ValueError(
            f"domain ids must lie in [0, {num_domains}); got values from {int(ids.min())} to "
            f"{int(ids.max())}. Map your domain names to 0..K-1."
        )
    return ids.long()


def supervised_token_losses(model, inputs: dict, labels: torch.Tensor):
    """``completion_token_losses`` with the LM head applied to supervised positions only.

    A forward pre-hook on the output embedding (``model.get_output_embeddings()``)
    hands it the hidden states of the N supervised positions, (N, d), instead of all
    (B, T, d): over a 49,152-word vocabulary most of the head's work is prompt and
    padding. The N losses are scattered back into a (B, T-1) tensor that is zero
    off the mask, so ``domain_mean_loss(losses, mask, ...)`` gives the same value and
    gradients as the full-logit loss (tests/test_completion_logits.py). Returns
    (losses (B, T-1), mask (B, T-1), model outputs whose ``logits`` are (N, V)).
    Models without an output embedding fall back to full logits.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        outputs = model(**inputs)
        return (*completion_token_losses(outputs.logits, labels), outputs)
    mask = labels[:, 1:] != IGNORE_INDEX  # (B, T-1)

    def keep_supervised(module, args):
        hidden = args[0]  # (B, T, d): every position, logits_to_keep=0
        if hidden.dim() != 3 or hidden.shape[:2] != labels.shape:
            raise RuntimeError(
                f"supervised_token_losses: the output embedding got hidden states of shape "
                f"{tuple(hidden.shape)}, not (B, T, d) = {tuple(labels.shape)} + (d,); "
                "this model slices positions before its head, use completion_token_losses."
            )
        return (hidden[:, :-1][mask], *args[1:])  # (N, d)

    handle = head.register_forward_pre_hook(keep_supervised)
    try:
        outputs = model(**inputs)
    finally:
        handle.remove()
    target = labels[:, 1:][mask]  # (N,)
    picked = F.cross_entropy(outputs.logits.float(), target, reduction="none")  # (N,)
    losses = picked.new_zeros(mask.shape).masked_scatter(mask, picked)  # (B, T-1)
    return losses, mask, outputs
