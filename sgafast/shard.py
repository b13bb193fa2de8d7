"""Which share of a run this process takes: torchrun's or Slurm's environment, else all of it."""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import threading
import time

import torch

from .errors import SgafastError
from .progress import say

TIMEOUT_VARIABLE = "SGAFAST_RANK_TIMEOUT"  # seconds rank 0 waits for the last rank's end
DEFAULT_TIMEOUT = 1800.0


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


def watch_launcher(shard: Shard, every: float = 1.0) -> None:
    """Under torchrun, stop this process as SIGTERM does (what is finished is written) once its
    launcher is gone: a worker orphaned by a killed torchrun would otherwise refine on, then
    wait for peers that never come."""
    if not shard.gathers:
        return
    launcher = os.getppid()

    def watch():
        while os.getppid() == launcher:
            time.sleep(every)
        say(f"{shard.label}the torchrun launcher (pid {launcher}) is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sgafast-watch", daemon=True).start()


def rank_timeout(env=os.environ) -> float:
    """How long the ranks wait for each other at the end: $SGAFAST_RANK_TIMEOUT seconds."""
    try:
        seconds = float(env.get(TIMEOUT_VARIABLE, DEFAULT_TIMEOUT))
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise SgafastError(f"{TIMEOUT_VARIABLE}={env[TIMEOUT_VARIABLE]}: give a number of "
                           "seconds > 0")
    return seconds


def gather(shard: Shard, value) -> list:
    """Every rank's ``value``, in rank order, once all ranks have finished their work (a torchrun
    group's one collective, over gloo); ``[value]`` without torchrun.

    It waits at most ``rank_timeout()`` on a thread, so that meanwhile a signal, or the end of
    the launcher (``watch_launcher``), still ends this process.
    """
    if not shard.gathers:
        return [value]
    timeout = rank_timeout()
    outcome: dict = {}
    waiting = threading.Thread(target=_all_gather, args=(value, shard.world, timeout, outcome),
                               name="sgafast-gather", daemon=True)
    waiting.start()
    while waiting.is_alive():
        waiting.join(0.5)
    if "error" in outcome:
        raise SgafastError(f"{shard.label}waiting for the other ranks failed "
                           f"({str(outcome['error']).splitlines()[0]}): a rank or the launcher "
                           f"ended early, or they did not all finish within {TIMEOUT_VARIABLE}="
                           f"{timeout:g} s; what each rank finished is written: rerun the same "
                           "command, or `sgafast merge OUTDIR` once all have ended"
                           ) from outcome["error"]
    return outcome["values"]


def _all_gather(value, world: int, timeout: float, outcome: dict) -> None:
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=timeout))
        values = [None] * world
        dist.all_gather_object(values, value)
        dist.destroy_process_group()
        outcome["values"] = values
    except Exception as exc:  # raised again on the main thread, as a message
        outcome["error"] = exc
