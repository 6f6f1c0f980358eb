"""All-reduce of the per-domain gradient buffers under data parallelism (docs/distributed.md).

DDP averages ``.grad`` over ranks, but IGA overwrites ``.grad`` from its own
per-domain buffers, which DDP never sees. So at the synchronizing step (after
the last micro-batch's backward, before the IGA edit) every rank sums its
buffers with the others and divides by the world size, which is the same
average DDP applies to ``.grad``: ``mean_k G_k`` stays equal to the averaged
``.grad`` and every rank computes the same mask, projection and update.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def world_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of ranks in ``group``, or 1 when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def all_reduce_mean_(
    tensors: Sequence[torch.Tensor], group: dist.ProcessGroup | None = None
) -> None:
    """Average ``tensors`` in place over the ranks of ``group`` with one collective per dtype.

    The tensors are packed into one flat buffer per (dtype, device) so that a
    model with hundreds of LoRA layers costs one all-reduce, not hundreds. A
    no-op in a single process.
    """
    n = world_size(group)
    if n == 1 or not tensors:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for ts in groups.values():
        flat = torch.cat([t.reshape(-1) for t in ts])  # (sum of numels,)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
        flat.div_(n)
        offset = 0
        for t in ts:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()


def all_reduce_sum_(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> None:
    """Sum one small tensor (domain counts, flags) over the ranks, in place."""
    if world_size(group) > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
