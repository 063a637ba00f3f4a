"""One run on several processes (``torchrun``): rank/world from the environment, process group, sampling.

``torchrun --nproc_per_node N -m pipelines.train --model M --dataset D`` sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything here is the single-process identity. The global batch stays
``train.batch``: every micro-batch of the index-derived stream (``benchmark.data.loading``) is split into
``world`` disjoint, contiguous slices, one per rank, and DDP averages the gradients, so N processes
take the same optimiser steps as one process (to float rounding). Only rank 0 writes checkpoints,
logs and MLflow records.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def setup(device: str) -> str:
    """Join the process group (gloo on CPU, NCCL on CUDA); returns this rank's device."""
    rank, size = world()
    if size == 1 or (dist.is_available() and dist.is_initialized()):
        return device
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return device


def rank_indices(start: int, total: int, batch: int, accumulate: int, rank: int, size: int) -> list[int]:
    """Sample indices this rank reads for global steps ``start..total-1``, in order."""
    micro = batch // accumulate
    if micro % size:
        raise ValueError(f"train.batch {batch} / train.accumulate {accumulate} = {micro} samples per "
                         f"micro-batch cannot be split over {size} processes")
    part = micro // size
    return [m * micro + rank * part + j for m in range(start * accumulate, total * accumulate) for j in range(part)]


def all_mean(t: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(t)
        t /= world()[1]
    return t


def all_max(t: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t
