"""Data parallelism without wrapping the model: one process per device started by ``accelerate launch`` or torchrun
(both set RANK / WORLD_SIZE / LOCAL_RANK), each training on its own share of every global batch, with gradients
averaged by hand. A DDP wrapper would not see the JEPA passes, which call the decoder stack and the momentum encoder
directly. A single process needs none of this and never imports ``torch.distributed``.
"""

from __future__ import annotations

import os

import torch

from ..model.backbone import pick_device


def init_distributed() -> tuple[torch.device, int, int]:
    """(device, rank, world): one process on cuda/cpu, or one of several started by ``accelerate launch`` or torchrun
    (both set RANK / WORLD_SIZE / LOCAL_RANK); the process group is NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return pick_device(), 0, 1
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def all_reduce_grads(params: list[torch.Tensor], world: int) -> None:
    """Average gradients over processes (data parallel without wrapping the model: the JEPA passes call the decoder
    stack and the momentum encoder directly, which a DDP wrapper would not see)."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    off = 0
    for g in grads:
        g.copy_(flat[off : off + g.numel()].view_as(g))
        off += g.numel()


def mean_over_processes(values: list[float], device, world: int) -> list[float]:
    """The mean of each value over the processes (the values themselves with one process)."""
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world).tolist()
