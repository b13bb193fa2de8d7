"""The true R-D gain of refinement over the base codec as a function of the iteration budget, for
the paper's schedule cut short, the paper's schedule scaled to the budget, and other schedules.

    python benchmarks/budget.py IMAGES... --crop 256 --models q3,q5 --budgets 250,500,1000,2000 \
        --schedules budget,budget:tau_end=0.02 --out benchmarks/results/budget/NAME

``IMAGES``: files or folders. Every image is cut to its central ``--crop`` square, so a model's
images refine as batches of one size. Per model: one run of the paper's schedule (docs/method.md
§4) for the largest budget, its true loss read at every budget ("paper, cut short"); for every
smaller budget B, the paper's schedule with its temperature rate scaled by 2000 / B so that tau
ends where the paper's ends after 2000 iterations ("paper, scaled"); and every ``--schedules``
entry (``sgafast.ops.schedule.parse_schedule``) at every budget. The gain of an image is
1 - loss / base loss, with docs/method.md §6's true R-D loss of its hard latents; the share is
that gain over the gain of the paper's schedule at the largest budget (per image, then averaged).
With four or more models, the BD-rate against the base (bpp of the hard latents under the
entropy models, PSNR of their float reconstruction) is reported too. Writes ``results.json``
and ``results.md`` in ``--out``; ``--merge`` makes one table of several such runs (e.g. one
process per model on the same images).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
import warnings
from pathlib import Path

import bjontegaard as bd
import torch

from sgafast import codec, models
from sgafast.images import center_crop, list_images, read_image
from sgafast.ops.schedule import PRESETS, parse_schedule
from sgafast.refine import RefineConfig, Refinement, frozen

PAPER_BUDGET = 2000  # the paper's schedule is tuned for this many iterations
CUT, SCALED = "paper, cut short", "paper, scaled"


def load_crops(inputs: list[str], crop: int, limit: int | None) -> tuple[list[str], torch.Tensor]:
    paths = [p for text in inputs for p in (list_images(text) if Path(text).is_dir()
                                             else [Path(text)])][:limit]
    return [p.stem for p in paths], torch.stack([center_crop(read_image(p), crop) for p in paths])


def hard_terms(run: Refinement) -> list[dict]:
    """Each image's true R-D loss, bpp and PSNR with its latents now."""
    with torch.no_grad():
        loss, terms = codec.hard_rd(run.family, run.canvas, run.latents, run.lmbda)
    pixels = run.canvas.num_pixels
    return [{"loss": float(loss[b]), "bpp": float(terms["bits"][b] / pixels[b]),
             "psnr": -10 * math.log10(float(terms["mse"][b]))} for b in range(len(loss))]


def run_batches(model, names: list[str], x: torch.Tensor, cfg: RefineConfig, batch_size: int,
                checkpoints: list[int]) -> dict[int, list[dict]]:
    """Refine every image with ``cfg``; each image's hard terms after each checkpoint's
    number of updates (0: the base)."""
    torch._dynamo.reset()  # a new schedule is a new graph: never run into dynamo's limit
    found = {c: [] for c in checkpoints}
    with frozen(model.net):
        for start in range(0, len(names), batch_size):
            run = Refinement(model, x[start:start + batch_size],
                             names[start:start + batch_size], cfg)
            for c in checkpoints:
                run.advance(c - run.done)
                found[c] += hard_terms(run)
    return found


def model_runs(model, names, x, args) -> dict[str, dict[int, list[dict]]]:
    """{schedule label: {budget: per-image terms}}, and the base under budget 0."""
    budgets = sorted(args.budgets)
    config = RefineConfig.for_method(args.method, track_every=0, compile=args.compile,
                                     schedule=PRESETS["paper"])
    cut = run_batches(model, names, x, config.with_options(iters=max(*budgets, args.reference)),
                      args.batch_size, sorted({0, *budgets, args.reference}))
    runs = {"base": {0: cut.pop(0)}, CUT: cut, SCALED: {}}
    for budget in budgets:
        if args.scaled:
            scaled = config.with_options(iters=budget,
                                         tau_rate=config.tau_rate * PAPER_BUDGET / budget)
            runs[SCALED][budget] = (cut[budget] if budget == PAPER_BUDGET else run_batches(
                model, names, x, scaled, args.batch_size, [budget])[budget])
        for text in args.schedules:
            cfg = config.with_options(iters=budget, schedule=parse_schedule(text))
            runs.setdefault(text, {})[budget] = run_batches(model, names, x, cfg,
                                                            args.batch_size, [budget])[budget]
        print(f"  {model.name}: budget {budget} done ({time.strftime('%H:%M:%S')})", flush=True)
    return runs


def gains(base: list[dict], terms: list[dict]) -> list[float]:
    return [1 - t["loss"] / b["loss"] for b, t in zip(base, terms)]


def bd_rate(base_points: list[tuple[float, float]], points: list[tuple[float, float]]):
    if len(points) < 4:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = bd.bd_rate(*zip(*base_points), *zip(*points), method="akima",
                           require_matching_points=False, min_overlap=0)
    return None if math.isnan(value) else float(value)


def mean_point(terms: list[dict]) -> tuple[float, float]:
    return (sum(t["bpp"] for t in terms) / len(terms), sum(t["psnr"] for t in terms) / len(terms))


def table(results: dict, budgets: list[int], reference: int) -> list[dict]:
    """One row per (schedule, budget): mean gain, mean and lowest share, BD-rate."""
    rows = []
    labels = [label for label in next(iter(results.values())) if label != "base"]
    for label in labels:
        for budget in budgets:
            gain, share, points, base_points = [], [], [], []
            for runs in results.values():
                if budget not in runs[label]:
                    continue
                base, terms = runs["base"][0], runs[label][budget]
                image_gains = gains(base, terms)
                gain += image_gains
                share += [g / r for g, r in zip(image_gains, gains(base, runs[CUT][reference]))]
                points.append(mean_point(terms))
                base_points.append(mean_point(base))
            if gain:
                rows.append({"schedule": label, "budget": budget,
                             "gain_percent": 100 * sum(gain) / len(gain),
                             "share_percent": 100 * sum(share) / len(share),
                             "lowest_share_percent": 100 * min(share),
                             "bd_rate_percent": bd_rate(base_points, points)})
    return rows


def markdown(rows: list[dict], header: str, reference: int) -> str:
    lines = [header, "", "| schedule | iterations | gain | share of the paper's "
             f"{reference} | lowest image's share | BD-rate |", "|---|---|---|---|---|---|"]
    for r in rows:
        bdr = "n/a" if r["bd_rate_percent"] is None else f"{r['bd_rate_percent']:+.2f} %"
        lines.append(f"| {r['schedule']} | {r['budget']} | {r['gain_percent']:.2f} % | "
                     f"{r['share_percent']:.1f} % | {r['lowest_share_percent']:.1f} % | {bdr} |")
    return "\n".join(lines) + "\n"


def measure(args) -> tuple[dict, dict]:
    """Refine ``args.images`` with every model and schedule: the run's meta and per-image terms
    ({model: {schedule label: {budget: terms}}})."""
    names, x = load_crops(args.images, args.crop, args.limit)
    start = time.perf_counter()
    results = {}
    for name in args.models.split(","):
        model = models.load(name, "cpu")
        results[name] = {label: {str(b): terms for b, terms in runs.items()}
                         for label, runs in model_runs(model, names, x, args).items()}
    meta = {"date": datetime.date.today().isoformat(), "machine": platform.processor() or
            platform.machine(), "torch": torch.__version__, "images": names,
            "crop": args.crop, "models": args.models, "method": args.method,
            "schedules": args.schedules, "scaled": args.scaled, "budgets": args.budgets,
            "reference": args.reference,
            "compile": args.compile, "seconds": time.perf_counter() - start}
    return meta, results


def merge(paths: list[Path]) -> tuple[dict, dict]:
    """Several runs' results.json (e.g. one process per model, same images) as one run."""
    runs = [json.loads(path.read_text()) for path in paths]
    meta = dict(runs[0]["meta"], models=",".join(r["meta"]["models"] for r in runs),
                seconds=sum(r["meta"]["seconds"] for r in runs), merged=[str(p) for p in paths])
    if any(r["meta"]["images"] != meta["images"] for r in runs):
        raise SystemExit("budget.py --merge: the runs refined different images")
    return meta, {model: terms for r in runs for model, terms in r["per_image"].items()}


def write(out: Path, meta: dict, results: dict) -> None:
    """results.json and results.md (the table of :func:`table`) in ``out``."""
    reference = meta.get("reference", PAPER_BUDGET)
    rows = table({m: {label: {int(b): t for b, t in runs.items()} for label, runs in r.items()}
                  for m, r in results.items()}, sorted({*meta["budgets"], reference}), reference)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "rows": rows, "per_image": results}, indent=1))
    header = (f"{len(meta['images'])} images ({meta['crop']}² centre crops), models "
              f"{meta['models']}, {meta['method']}; gain: true R-D loss against the base codec, "
              "mean over images and models")
    (out / "results.md").write_text(markdown(rows, header, reference))
    print(markdown(rows, header, reference))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("images", nargs="*", help="image files or folders")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="the first N images only")
    p.add_argument("--models", default="q3,q5")
    p.add_argument("--method", default="ssl")
    p.add_argument("--budgets", type=lambda s: [int(v) for v in s.split(",")],
                   default=[250, 500, 1000, 2000])
    p.add_argument("--reference", type=int, default=PAPER_BUDGET,
                   help="the paper's schedule at this many iterations is the 100 %% of shares")
    p.add_argument("--schedules", type=lambda s: [v for v in s.split(";") if v],
                   default=["budget"], help="';'-separated schedules (parse_schedule)")
    p.add_argument("--scaled", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the paper's schedule scaled to each budget")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--merge", type=Path, nargs="+", metavar="RESULTS_JSON",
                   help="refine nothing: one table from these runs' results.json")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    if not args.merge and not args.images:
        p.error("give images to refine, or --merge")
    write(args.out, *(merge(args.merge) if args.merge else measure(args)))


if __name__ == "__main__":
    main()
