"""Why the compiled step has static shapes: steady time per iteration of the eager step, the
static compiled step and a regionally compiled one (rounding, rates and distortion compiled with
dynamic shapes, the transforms eager), and how many graphs dynamic shapes compile over sizes.

    python benchmarks/dynamic_shapes.py --size 512x768 --sizes 192x256,256x192,256x320 --threads 2

Regional compilation is one graph for all sizes but keeps less of the compiled gain; full
dynamic shapes (``dynamic=True``) recompile per size (docs/running.md, "Many image sizes").
The arms alternate in slices of ``--slice`` iterations; medians are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import statistics
import time

import torch
import torch._dynamo.utils

from sgafast import models
from sgafast.images import Canvas

refine = importlib.import_module("sgafast.refine")  # the module, not sgafast.refine()
TRANSFORMS = ("g_s", "h_s")  # the default model's synthesis and hyper-synthesis


@contextlib.contextmanager
def transforms_eager(net: torch.nn.Module, eager: bool):
    """The transforms outside dynamo (a graph break around each) while ``eager``."""
    forwards = {name: getattr(net, name).forward for name in TRANSFORMS}
    if eager:
        for name, forward in forwards.items():
            getattr(net, name).forward = torch._dynamo.disable(forward)
    try:
        yield
    finally:
        for name, forward in forwards.items():
            getattr(net, name).forward = forward


def refinement(model, x: torch.Tensor, arm: str):
    cfg = refine.RefineConfig.for_method("ssl", iters=100_000, compile=arm == "static",
                                         track_every=0)
    run = refine.Refinement(model, Canvas.of(x), ["a"], cfg)
    if arm in ("regional", "dynamic"):
        run.relaxed_loss = torch.compile(run.problem.relaxed_loss, dynamic=True)
    return run


def graphs_over_sizes(model, sizes: list[tuple[int, int]], arm: str) -> list[int]:
    """Dynamo's count of compiled graphs after each size (a graph break makes several)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    counts = []
    with torch._dynamo.config.patch(recompile_limit=64):
        for height, width in sizes:
            with transforms_eager(model.net, arm == "regional"):
                refinement(model, torch.rand(1, 3, height, width), arm).advance(2)
            counts.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parse_size = lambda s: tuple(int(v) for v in s.split("x"))  # noqa: E731
    p.add_argument("--size", type=parse_size, default=(512, 768))
    p.add_argument("--sizes", type=lambda s: [parse_size(v) for v in s.split(",")],
                   default=[(192, 256), (256, 192), (256, 320)])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--slice", type=int, default=10)
    p.add_argument("--slices", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = models.load("default")
    arms = ("eager", "static", "regional")
    x = torch.rand(1, 3, *args.size, generator=torch.Generator().manual_seed(0))
    with refine.frozen(model.net), torch.enable_grad():
        runs, warmup, times = {}, {}, {arm: [] for arm in arms}
        for arm in arms:
            tick = time.perf_counter()
            with transforms_eager(model.net, arm == "regional"):
                runs[arm] = refinement(model, x, arm)
                runs[arm].advance(1)
            warmup[arm] = time.perf_counter() - tick
        for _ in range(args.slices):
            for arm in arms:
                with transforms_eager(model.net, arm == "regional"):
                    tick = time.perf_counter()
                    runs[arm].advance(args.slice)
                    times[arm].append((time.perf_counter() - tick) / args.slice)
        graphs = {arm: graphs_over_sizes(model, args.sizes, arm) for arm in ("regional",
                                                                            "dynamic")}
    print(f"{args.size[0]}x{args.size[1]}, {args.threads} thread(s), torch {torch.__version__}")
    print("| step | warm-up (s) | ms per iteration (median) | × eager |")
    print("|---|---|---|---|")
    eager = statistics.median(times["eager"])
    for arm in arms:
        median = statistics.median(times[arm])
        print(f"| {arm} | {warmup[arm]:.1f} | {1e3 * median:.0f} | {eager / median:.2f} |")
    sizes = ", ".join(f"{h}x{w}" for h, w in args.sizes)
    for arm, count in graphs.items():
        print(f"{arm} compile over {sizes}: graphs after each size {count}")


if __name__ == "__main__":
    main()
