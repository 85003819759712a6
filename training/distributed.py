"""torchrun support: the process group, gathering embeddings across processes, summing gradients.

Every process computes the loss of the WHOLE global batch from gathered embeddings; the gathered copy carries the
gradient only into the process's own rows (which is exact: those rows appear nowhere else). Summing the parameter
gradients over processes then gives exactly the single-process gradient of the global batch.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


@dataclasses.dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, n: int) -> tuple[int, int]:
        """[start, stop) of this process's rows of a global batch of n (n divisible by world)."""
        per = n // self.world
        return self.rank * per, (self.rank + 1) * per


def init(device_kind: str) -> Dist:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA), or run alone when WORLD_SIZE is unset."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown(ctx: Dist) -> None:
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: Dist) -> None:
    if ctx.world > 1:
        dist.barrier()


def gather(x: torch.Tensor, sizes: list[int], ctx: Dist) -> torch.Tensor:
    """Concatenate every process's rows of x (process r holds sizes[r] rows) in rank order; (sum(sizes), D).

    The result is differentiable with respect to the local x (its slice is x itself, not a copy).
    """
    if ctx.world == 1:
        return x
    if x.shape[0] != sizes[ctx.rank]:
        raise ValueError(f"rank {ctx.rank} holds {x.shape[0]} rows, expected {sizes[ctx.rank]}")
    m = max(sizes)
    padded = F.pad(x.detach(), (0, 0, 0, m - x.shape[0])).contiguous()  # (m, D)
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    trimmed = [p[:n] for p, n in zip(parts, sizes, strict=True)]
    trimmed[ctx.rank] = x
    return torch.cat(trimmed)


def sum_grads(params: list[torch.nn.Parameter], ctx: Dist) -> None:
    """All-reduce (sum) the gradients of params in one flat buffer."""
    if ctx.world == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
