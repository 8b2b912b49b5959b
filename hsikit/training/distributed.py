"""Which process of a distributed (DDP) training run this is, and how work is shared between the processes.

Light on purpose: nothing here imports torch at module level, so the data pipelines and the CLI can use it.
Lightning's launcher and torchrun start the other ranks with RANK / LOCAL_RANK / NODE_RANK / GROUP_RANK set;
only the global rank 0 writes checkpoints, logs and reports."""

from __future__ import annotations

import os


def launched_rank_zero() -> bool:
    """Whether this process is the first (or only) one of a run, from the variables Lightning's launcher and
    torchrun set for the other ranks (no torch needed)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def is_global_zero() -> bool:
    """Whether this process is the global rank 0, or no distributed job at all: only it writes outputs. Works
    before ``trainer.fit`` too, from the variables Lightning's launcher and torchrun set for the other ranks."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return launched_rank_zero()


def shard_info() -> tuple[int, int]:
    """(rank, world size) of this process in a running distributed job, (0, 1) otherwise. Streamed datasets call it
    when iterated (inside ``trainer.fit``) to draw different samples on every rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_size(devices: int | list[int] = 1, num_nodes: int = 1) -> int:
    """Processes of a run on ``devices`` per node (an int, or a list of device indices) times ``num_nodes``."""
    n = len(devices) if isinstance(devices, (list, tuple)) else int(devices)
    return max(1, n) * max(1, int(num_nodes))


def sharded_steps(steps: int, world: int) -> int:
    """Optimiser steps of one epoch when ``steps`` batches are shared by ``world`` ranks (Lightning's
    DistributedSampler pads the last share)."""
    return max(1, -(-int(steps) // max(1, int(world))))
