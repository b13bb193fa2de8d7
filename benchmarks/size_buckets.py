"""Whether static size buckets would pay: the wall time of ``bench_sizes.py``'s 24-size folder if
every image were padded up to a coarser grid (so that several padded sizes share one compiled
step), projected from the constants that ``bench_sizes.py`` measured.

    python benchmarks/size_buckets.py benchmarks/results/sizes/2026-12-06-cpu.json

The constants: seconds per compilation (the compiled arm's warm-up over its compilations), and
the steady milliseconds per iteration of the compiled and eager steps, taken per padded
megapixel (the measured per-pixel figures times the folder's real-to-padded pixel ratio; a step's
work is its padded canvas). A bucket grid G pads each side up to a multiple of G (64: each
image's own padded size, today's step); each bucket and batch size compiles once. The projection
leaves out what a real bucket step would add (masking inside every transform layer, so that an
image padded beyond its own canvas keeps its own trajectory), so it favours the buckets.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from bench_sizes import sizes


def round_up(side: int, grid: int) -> int:
    return -(-side // grid) * grid


def compilations(groups: Counter, batch: int) -> int:
    """One per (bucket, batch size): a bucket of n images runs full batches and one remainder."""
    return sum(len({min(n, batch), n % batch} - {0}) for n in groups.values())


def projection(result: dict, grids: list[int], budgets: list[int]) -> str:
    rows = {r["arm"]: r for r in result["rows"]}
    batch = result["meta"]["batch"]
    real = sum(h * w for h, w in sizes())
    own = sum(round_up(h, 64) * round_up(w, 64) for h, w in sizes())
    per_compile = rows["compile"]["warmup_seconds"] / rows["compile"]["compilations"]
    compiled_ms = rows["compile"]["steady_ms_per_iter_megapixel_compiled"] * real / own
    eager_ms = rows["no-compile"]["steady_ms_per_iter_megapixel_all"] * real / own
    lines = [f"Constants ({result['meta']['machine']}, {result['meta']['date']}): "
             f"{per_compile:.1f} s per compilation; {compiled_ms:.0f} ms (compiled) and "
             f"{eager_ms:.0f} ms (eager) per iteration and padded megapixel; batch {batch}.", "",
             "| grid | buckets | compilations | padded pixels × | "
             + " | ".join(f"{b} iterations: wall × eager" for b in budgets) + " |",
             "|---|---|---|---|" + "---|" * len(budgets)]
    for grid in grids:
        groups = Counter((round_up(h, grid), round_up(w, grid)) for h, w in sizes())
        pixels = sum(h * w for h, w in groups.elements())
        count = compilations(groups, batch)
        ratios = [(count * per_compile + iters * pixels / 1e6 * compiled_ms / 1e3)
                  / (iters * own / 1e6 * eager_ms / 1e3) for iters in budgets]
        lines.append(f"| {grid} | {len(groups)} | {count} | {pixels / own:.2f} | "
                     + " | ".join(f"{r:.2f}" for r in ratios) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("result", type=Path, help="a bench_sizes.py results .json")
    parser.add_argument("--grids", default="64,128,192,256,384,512,768")
    parser.add_argument("--budgets", default="200,500,2000")
    args = parser.parse_args()
    print(projection(json.loads(args.result.read_text()),
                     [int(v) for v in args.grids.split(",")],
                     [int(v) for v in args.budgets.split(",")]))


if __name__ == "__main__":
    main()
