"""Which share of a run this process takes: torchrun's or Slurm's environment, else all of it."""

from __future__ import annotations

import dataclasses
import os

import torch


@dataclasses.dataclass(frozen=True)
class Shard:
    """This process's rank among ``world`` processes, ``local`` of them on this machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local: int = 1
    launcher: str = "none"  # "torchrun", "slurm-array", "slurm" or "none"

    def take(self, items: list) -> list:
        """This rank's items of the sorted list: ``items[rank::world]``, no collective needed."""
        return items[self.rank::self.world]

    @property
    def gathers(self) -> bool:
        """Whether the ranks meet at the end (torchrun's), so that rank 0 counts them all."""
        return self.launcher == "torchrun" and self.world > 1

    @property
    def label(self) -> str:
        return f"rank {self.rank}/{self.world} " if self.world > 1 else ""


def from_environment(env=os.environ) -> Shard:
    """torchrun's RANK/WORLD_SIZE, a Slurm array's task id/count, or a Slurm step's procid."""
    if "WORLD_SIZE" in env and "RANK" in env:
        return Shard(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)),
                     int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])), "torchrun")
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        first = int(env.get("SLURM_ARRAY_TASK_MIN", 0))
        return Shard(int(env["SLURM_ARRAY_TASK_ID"]) - first, int(env["SLURM_ARRAY_TASK_COUNT"]),
                     launcher="slurm-array")
    if "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        return Shard(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                     int(env.get("SLURM_LOCALID", 0)), int(env.get("SLURM_NTASKS_PER_NODE", 1)),
                     "slurm")
    return Shard()


def device_for(shard: Shard, device: torch.device) -> torch.device:
    """One device per rank: the local rank's GPU; on CPUs, this rank's share of the cores
    (threads oversubscribed by several processes were measured here to slow a run tenfold)."""
    if device.type == "cuda":
        device = torch.device("cuda", shard.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)  # CUDA graphs and caching allocators follow the current one
        return device
    if shard.local > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // shard.local))
    return device


def gather(shard: Shard, value) -> list:
    """Every rank's ``value``, in rank order, once all ranks have finished their work (a torchrun
    group's one collective, over gloo); ``[value]`` without torchrun."""
    if not shard.gathers:
        return [value]
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    values = [None] * shard.world
    dist.all_gather_object(values, value)
    dist.destroy_process_group()
    return values
