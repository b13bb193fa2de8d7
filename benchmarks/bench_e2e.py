"""End-to-end refinement throughput: sgafast's step against the official-style loop, side by side.

    python benchmarks/bench_e2e.py --device cpu --models default --batches 1 --out DIR
    make bench-e2e        # the CPU run whose numbers the README quotes

For every (model, batch size) it builds one run of each variant on the same images, warms each
up (compilation included, reported apart), then times them interleaved, round by round
(official, official-notrack, sgafast-eager, sgafast, official, ...), so machine noise hits all
alike, and reports medians of seconds per image-iteration over the rounds:

* ``official``: ``benchmarks/official_style.py``, the authors' loop (batch 1, eager, a true-loss
  forward and two host reads per iteration); ``official-notrack``: the same without the
  per-iteration true-loss forward (pure compute);
* ``sgafast-eager``: sgafast's step with ``compile=False``; ``sgafast``: its default for long
  runs, the step compiled with ``torch.compile`` (a CUDA graph on CUDA); ``sgafast-bf16``: that
  with ``precision="bf16"`` transforms. All track the true loss every 100 iterations: its
  measured cost, divided by 100, is added to their per-iteration time.

Then a ``torch.profiler`` breakdown of one eager sgafast step by component (the
``record_function`` labels of ``sgafast.step`` and ``sgafast.refine``). Images are Kodak-sized
(512 x 768) crops of ``--images`` when given, else seeded uniform noise (speed does not depend on
content). ``mbt2018-mean:Q`` models use CompressAI's architecture with random weights.
Writes DIR/<date>_<device>.json (one record per measurement) and .md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from compressai.models import MeanScaleHyperprior
from official_style import OfficialStyleRun
from torch.profiler import ProfilerActivity, profile

import sgafast
from sgafast.images import center_crop, list_images, read_image
from sgafast.models import ZOO_LAMBDAS, BaseModel
from sgafast.ops.schedule import PRESETS
from sgafast.pipeline import refine_files
from sgafast.refine import RefineConfig, Refinement

BUNDLED = Path(sgafast.__file__).resolve().parent / "data" / "images"
KODAK = (512, 768)
ZOO_SIZES = {q: ((128, 192) if q <= 4 else (192, 320)) for q in range(1, 9)}
COMPONENTS = ("rounding", "hyper-synthesis", "synthesis", "rates", "backward", "optimiser",
              "tracking")
TRACK_EVERY = RefineConfig().track_every
VARIANTS = ("official", "official-notrack", "sgafast-eager", "sgafast", "sgafast-bf16")
PAPER = PRESETS["paper"]  # the official-style loop's schedule: the same trajectory, timed


def cpu_name() -> str:
    """The processor's model name and core count, from /proc/cpuinfo where there is one."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in lines if line.startswith(
            "model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def load_model(spec: str, device: torch.device) -> BaseModel:
    """A bundled model, or ``mbt2018-mean:Q`` with random weights at the zoo's sizes."""
    if spec.startswith("mbt2018-mean:"):
        quality = int(spec.split(":")[1])
        torch.manual_seed(quality)
        net = MeanScaleHyperprior(*ZOO_SIZES[quality]).to(device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        net.update(force=True)
        return BaseModel(net, spec, "mbt2018-mean", ZOO_LAMBDAS[quality - 1])
    return sgafast.load_model(spec, device)


def images(folder: str | None, batch: int, device: torch.device) -> torch.Tensor:
    """A (batch, 3, 512, 768) batch: crops of the folder's images, or seeded noise."""
    if folder:
        paths = list_images(folder)
        crops = [read_image(paths[i % len(paths)]) for i in range(batch)]
        crops = [center_crop(c if c.shape[-1] >= c.shape[-2] else c.transpose(-1, -2), 768)
                 [..., :KODAK[0], :KODAK[1]] for c in crops]
        return torch.stack(crops).to(device)
    gen = torch.Generator().manual_seed(batch)
    return torch.rand(batch, 3, *KODAK, generator=gen).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Variant:
    """One way of refining a batch, advanced in timed slices."""

    def __init__(self, name: str, model: BaseModel, x: torch.Tensor, iters: int):
        self.name, self.batch = name, x.shape[0]
        if name.startswith("official"):
            track = name == "official"
            self.runs = [OfficialStyleRun(model, x[i:i + 1], lmbda=model.lmbda, track=track)
                         for i in range(self.batch)]
        else:
            cfg = RefineConfig(iters=iters, compile=name != "sgafast-eager", schedule=PAPER,
                               precision="bf16" if name.endswith("bf16") else "fp32")
            self.runs = [Refinement(model, x, [str(i) for i in range(self.batch)], cfg)]

    def advance(self, iters: int) -> None:
        for run in self.runs:
            run.advance(iters)

    def tracking_per_iteration(self) -> float:
        """Seconds per image-iteration that tracking every TRACK_EVERY adds (sgafast only)."""
        if self.name.startswith("official"):
            return 0.0
        run = self.runs[0]
        tick = time.perf_counter()
        run.track()
        sync(run.x.device)
        return (time.perf_counter() - tick) / TRACK_EVERY / self.batch


def timed(device, fn) -> float:
    sync(device)
    tick = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - tick


def breakdown(model: BaseModel, x: torch.Tensor, iters: int) -> dict:
    """Seconds per image-iteration by component, from torch.profiler over eager sgafast steps."""
    run = Refinement(model, x, [str(i) for i in range(x.shape[0])],
                     RefineConfig(iters=iters + 1, compile=False, track_every=0, schedule=PAPER))
    run.advance(1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=activities) as prof:
        run.advance(iters)
        run.track()
        sync(x.device)
    per = iters * x.shape[0]
    totals = {}
    for event in prof.key_averages():
        if event.key in COMPONENTS:
            time_us = event.device_time_total if x.is_cuda else event.cpu_time_total
            totals[event.key] = time_us / 1e6 / (per if event.key != "tracking" else
                                                 TRACK_EVERY * x.shape[0])
    return totals


def bench(model_spec: str, batch: int, args, device, report: list) -> None:
    model = load_model(model_spec, device)
    x = images(args.images, batch, device)
    names = args.variants.split(",")
    iters = args.warmup + args.rounds * args.iters
    variants, warmups = [], {}
    for name in names:
        variant = Variant(name, model, x, iters)
        warmups[name] = timed(device, lambda: variant.advance(args.warmup))
        variants.append(variant)
    samples = {name: [] for name in names}
    for r in range(args.rounds):
        for variant in variants[r % len(variants):] + variants[:r % len(variants)]:
            seconds = timed(device, lambda: variant.advance(args.iters))
            samples[variant.name].append(seconds / (args.iters * batch))
    meta = {"model": model_spec, "batch": batch, "height": KODAK[0], "width": KODAK[1]}
    for variant in variants:
        extra = variant.tracking_per_iteration()
        median = statistics.median(samples[variant.name]) + extra
        report.append({**meta, "variant": variant.name, "warmup_s": warmups[variant.name],
                       "s_per_image_iter": median, "tracking_s_per_image_iter": extra,
                       "samples": samples[variant.name]})
        print(f"{model_spec} b{batch} {variant.name:17s} {median * 1e3:9.2f} ms/image-iter "
              f"(warm-up {warmups[variant.name]:.1f} s)", flush=True)
    if not args.no_profile:
        for component, seconds in breakdown(model, x, args.profile_iters).items():
            report.append({**meta, "variant": "sgafast-eager", "component": component,
                           "s_per_image_iter": seconds})


def pipeline_idle(args, device: torch.device, report: list) -> None:
    """The device's idle fraction over a whole ``refine`` run of ``--pipeline-images`` files.

    The files are copies of ``--images`` (or of the bundled sample crops) under new names; the
    run is sgafast's pipeline as the CLI runs it (reading, refining, coding, writing).
    """
    sources = list_images(args.images) if args.images else sorted(BUNDLED.glob("*.png"))
    model = load_model(args.models.split(",")[0], device)
    cfg = RefineConfig(iters=args.pipeline_iters)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.pipeline_images):
            source = sources[i % len(sources)]
            paths.append(Path(tmp) / f"{i:03d}_{source.name}")
            shutil.copyfile(source, paths[-1])
        run = refine_files(paths, Path(tmp) / "out", model, cfg, batch_size=args.pipeline_batch,
                           progress=False)
    record = {"model": model.name, "batch": args.pipeline_batch, "variant": "pipeline",
              "images": len(run.records), "iters": args.pipeline_iters,
              "wall_s": run.wall_seconds, "busy_s": run.busy_seconds,
              "idle_fraction": run.idle_fraction}
    report.append(record)
    print(f"pipeline: {len(run.records)} images, idle {run.idle_fraction:.1%} of "
          f"{run.wall_seconds:.1f} s", flush=True)


def markdown(meta: dict, records: list[dict]) -> str:
    lines = [f"# End-to-end refinement throughput, {meta['device_name']}", "",
             f"{meta['date']}; torch {meta['torch']}, triton {meta['triton']}, compressai "
             f"{meta['compressai']}, Python {meta['python']}, {meta['threads']} threads; fp32; "
             f"images {meta['images']}; {meta['rounds']} interleaved rounds of {meta['iters']} "
             f"iterations after {meta['warmup']} warm-up iterations; medians.", "",
             f"Command: `{meta['command']}`", "",
             "| model | batch | variant | ms / image-iteration | image-iterations / s | "
             "warm-up (s) | vs official | vs official-notrack |", "|---|---|---|---|---|---|---|---|"]
    timing = [r for r in records if "component" not in r and r["variant"] != "pipeline"]
    for r in timing:
        same = {v["variant"]: v["s_per_image_iter"] for v in timing
                if (v["model"], v["batch"]) == (r["model"], r["batch"])}
        t = r["s_per_image_iter"]
        ratios = " | ".join(f"{same[b] / t:.2f}x" if b in same else "-"
                            for b in ("official", "official-notrack"))
        lines.append(f"| {r['model']} | {r['batch']} | {r['variant']} | {t * 1e3:.2f} | "
                     f"{1 / t:.2f} | {r['warmup_s']:.1f} | {ratios} |")
    parts = [r for r in records if "component" in r]
    if parts:
        lines += ["", "Eager sgafast step by component (torch.profiler, inclusive times; "
                  "tracking amortised over its every-100 period):", "",
                  "| model | batch | component | ms / image-iteration |", "|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['batch']} | {r['component']} | "
                  f"{r['s_per_image_iter'] * 1e3:.2f} |" for r in parts]
    for r in records:
        if r["variant"] == "pipeline":
            lines += ["", f"Whole `refine` pipeline, {r['images']} images of "
                      f"{meta['pipeline_source']}, {r['iters']} iterations, batch {r['batch']}, "
                      f"model {r['model']}: the device refined {r['busy_s']:.1f} s of "
                      f"{r['wall_s']:.1f} s, idle {r['idle_fraction']:.1%}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="default", help="comma list: bundled names or "
                        "mbt2018-mean:Q (random weights)")
    parser.add_argument("--batches", default="1", help="comma list of batch sizes")
    parser.add_argument("--images", default=None, help="folder of images to crop (default: "
                        "seeded noise)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma list, of: " + ", ".join(VARIANTS))
    parser.add_argument("--warmup", type=int, default=3, help="warm-up iterations per variant")
    parser.add_argument("--iters", type=int, default=4, help="iterations per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--profile-iters", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--pipeline-images", type=int, default=0,
                        help="also time a whole refine run over this many files (0: no)")
    parser.add_argument("--pipeline-iters", type=int, default=20)
    parser.add_argument("--pipeline-batch", type=int, default=1)
    parser.add_argument("--out", default="out/bench-e2e")
    args = parser.parse_args()
    device = torch.device(args.device)
    import compressai
    import triton

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    meta = {"device_name": name, "date": datetime.datetime.now(datetime.timezone.utc)
            .isoformat(timespec="seconds"), "torch": torch.__version__,
            "triton": triton.__version__, "compressai": compressai.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "images": args.images or "seeded noise", "rounds": args.rounds, "iters": args.iters,
            "warmup": args.warmup, "command": "python " + " ".join(__import__("sys").argv)}
    records = []
    for model_spec in args.models.split(","):
        for batch in map(int, args.batches.split(",")):
            bench(model_spec, batch, args, device, records)
    if args.pipeline_images:
        meta["pipeline_source"] = args.images or "the bundled 256x256 sample crops"
        pipeline_idle(args, device, records)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{meta['date'][:10]}_{args.device}").strip("-")
    (out / f"{slug}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=1))
    (out / f"{slug}.md").write_text(markdown(meta, records))
    print(markdown(meta, records))


if __name__ == "__main__":
    main()
