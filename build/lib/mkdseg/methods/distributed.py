"""Per-rank state under DDP: each rank has its own random streams and image pools, so a checkpoint
(written by rank 0) holds a list with one entry per rank."""

from __future__ import annotations

import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_warn


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_per_rank(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (a collective call under DDP; ``[obj]`` otherwise).

    ``obj`` must be picklable and hold CPU tensors only.
    """
    rank, size = _world()
    if size == 1:
        return [obj]
    parts: list = [None] * size
    dist.all_gather_object(parts, obj)
    return parts


def pick_rank(per_rank: list):
    """This rank's entry of a list written by :func:`gather_per_rank` (rank modulo its length if the
    world size changed since, which makes the resume approximate and is warned about)."""
    rank, size = _world()
    if len(per_rank) != size:
        rank_zero_warn(
            f"the checkpoint holds the training state of {len(per_rank)} process(es), this run has {size}: "
            "random streams and image pools are reused round-robin, so the resumed run is not the exact continuation"
        )
    return per_rank[rank % len(per_rank)]
