"""What per-image early stop (``--stop-below EPS``) saves and costs, per schedule and budget.

    python benchmarks/early_stop.py IMAGES... --crop 128 --limit 8 --models q3 \
        --runs "paper:2000;budget:2000;budget:500" --every 50 --eps 0.001,0.003,0.01 --out DIR

Each run refines the images once with true-loss tracking every ``--every`` iterations and no
stop; an image's trajectory does not depend on the others of its batch, so the driver's rule
(stop where the true loss improved by less than EPS, relative, over the last STOP_POINTS
tracking points; the latents there are the result) is applied to each tracked trajectory
exactly as ``Refinement`` applies it. Reports per (run, EPS): the mean gain over the base codec
(1 - loss / base loss) against the run without stop, the mean share of the iterations an image
runs (what a slot-refilling pipeline would save) and the share a batch runs (the driver today:
a batch ends when its last image stops).
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import torch
from budget import load_crops

from sgafast import models
from sgafast.ops.schedule import parse_schedule
from sgafast.refine import STOP_POINTS, RefineConfig, Refinement, frozen


def trajectories(model, x, cfg: RefineConfig, batch_size: int) -> list[list[tuple[int, float]]]:
    """Each image's (updates, true loss) at every tracking point and at the end."""
    found = []
    with frozen(model.net), torch.enable_grad():
        for start in range(0, len(x), batch_size):
            run = Refinement(model, x[start:start + batch_size], [str(i) for i in range(
                start, min(start + batch_size, len(x)))], cfg)
            run.advance(cfg.iters)
            run.track()  # the loss after the last update
            found += [[(done, float(loss[b])) for done, loss in run.tracked]
                      for b in range(len(run.tracked[0][1]))]
    return found


def stopped(trajectory: list[tuple[int, float]], eps: float) -> tuple[int, float]:
    """(updates run, final loss) under the driver's rule (refine.Refinement._stop_converged):
    checked after each tracking point before the end, once STOP_POINTS + 1 points exist."""
    for i in range(STOP_POINTS, len(trajectory) - 1):
        before, now = trajectory[i - STOP_POINTS][1], trajectory[i][1]
        if (before - now) / abs(before) < eps:
            return trajectory[i]
    return trajectory[-1]


def rows_for(label: str, found: list, eps_values: list[float], batch_size: int) -> list[dict]:
    iters = found[0][-1][0]
    full = [1 - t[-1][1] / t[0][1] for t in found]
    rows = []
    for eps in eps_values:
        ends = [stopped(t, eps) for t in found]
        gains = [1 - loss / t[0][1] for (_, loss), t in zip(ends, found)]
        batches = [ends[i:i + batch_size] for i in range(0, len(ends), batch_size)]
        rows.append({"run": label, "eps": eps,
                     "gain_percent": 100 * sum(gains) / len(gains),
                     "full_gain_percent": 100 * sum(full) / len(full),
                     "image_share_percent": 100 * sum(d for d, _ in ends) / len(ends) / iters,
                     "batch_share_percent": 100 * sum(max(d for d, _ in b) * len(b)
                                                      for b in batches) / len(ends) / iters,
                     "stopped_images": sum(d < iters for d, _ in ends)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="+")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--models", default="q3")
    p.add_argument("--runs", default="paper:2000;budget:2000;budget:500",
                   help="';'-separated SCHEDULE:ITERS")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--eps", type=lambda s: [float(v) for v in s.split(",")],
                   default=[0.001, 0.003, 0.01])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    names, x = load_crops(args.images, args.crop, args.limit)
    rows = []
    for name in args.models.split(","):
        model = models.load(name, "cpu")
        for spec in args.runs.split(";"):
            schedule, iters = spec.rsplit(":", 1)
            cfg = RefineConfig.for_method("ssl", iters=int(iters), track_every=args.every,
                                          schedule=parse_schedule(schedule))
            found = trajectories(model, x, cfg, args.batch_size)
            rows += rows_for(f"{name} {spec}", found, args.eps, args.batch_size)
            print(json.dumps(rows[-len(args.eps):]), flush=True)
    lines = [f"{len(names)} images ({args.crop}² centre crops), SSL, true loss tracked every "
             f"{args.every} iterations, stop after {STOP_POINTS} points; batch {args.batch_size}",
             "", "| run | EPS | gain (no stop) | gain with stop | iterations run per image | "
             "per batch | images stopped |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['eps']:g} | {r['full_gain_percent']:.2f} % | "
                     f"{r['gain_percent']:.2f} % | {r['image_share_percent']:.0f} % | "
                     f"{r['batch_share_percent']:.0f} % | {r['stopped_images']}/{len(names)} |")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "images": names, "crop": args.crop, "models": args.models, "runs": args.runs,
            "every": args.every}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
