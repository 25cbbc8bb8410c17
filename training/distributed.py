"""Data-parallel training across processes: ``torchrun --nproc-per-node N -m training train``.

torchrun starts N processes and sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; each process joins
one process group (NCCL on GPUs, gloo on CPUs). Every rank draws the same global batch (the
sampler is seeded alike) and takes its contiguous slice of it; DistributedDataParallel averages
the gradients, so N processes take exactly the optimiser steps one process would take on the
same global batch when the batch divides evenly (the losses are means over the batch); random
training terms (``new_item_dropout``, ``user_dropout``) draw their masks on each rank, from the
same distribution but not as the same draws. Rank 0 alone writes the bundle.

What does not scale yet: every rank propagates the whole graph and repeats the validation (so
N processes save only the per-triple work of a step), and the item and user tables are
replicated, not sharded. Past one machine: Ray Train around the same DDP step, and batch
scoring and feature extraction as sharded Kubernetes jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world: int

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def writes(self) -> bool:
        """Whether this process writes results (the bundle, reports)."""
        return self.rank == 0

    def shard(self, rows: int) -> slice:
        """This rank's contiguous part of a batch of ``rows`` rows."""
        bounds = np.linspace(0, rows, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))


SINGLE = Context(0, 1)


def context() -> Context:
    """The process group torchrun asked for, joined on first use (a single process: SINGLE)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Context(dist.get_rank(), dist.get_world_size())


def device_for(ctx: Context, device: torch.device) -> torch.device:
    """Each rank on its own GPU (LOCAL_RANK) when training on CUDA."""
    if ctx.active and device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return device
