"""R-D effect of ``--precision`` (bf16 transforms) against fp32, on Kodak crops, one process.

    python benchmarks/precision_rd.py --kodak ../shared/data/kodak --out benchmarks/results/precision

The CPU protocol's setting (6 Kodak images, centre 256 x 256 crops, 600 iterations, tau rate
3.3e-3, SSL, batch of 6) at the default model, once per precision, the runs one after the other
(never beside each other). Reports per precision the mean bitstream bpp, PSNR, true R-D loss and
its change against the unrefined base, and the per-image differences against fp32. tf32 is not
run on a CPU: it changes only CUDA's convolutions and matmuls, so there it is fp32.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path

import torch
from bench_e2e import cpu_name

import sgafast
from sgafast.images import center_crop, read_image, write_png
from sgafast.inputs import Item
from sgafast.pipeline import refine_items
from sgafast.refine import RefineConfig

IMAGES = ("kodim01", "kodim05", "kodim07", "kodim13", "kodim21", "kodim23")


def run(items, out: Path, precision: str) -> dict:
    model = sgafast.load_model("default")
    cfg = RefineConfig(iters=600, tau_rate=3.3e-3, precision=precision, track_every=100)
    report = refine_items(items, out / precision, model, cfg, batch_size=len(items),
                          progress=False)
    return {r["name"]: r for r in report.records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kodak", required=True)
    parser.add_argument("--out", default="out/precision")
    parser.add_argument("--runs", default="out/precision-runs")
    args = parser.parse_args()
    runs = Path(args.runs)
    items = []
    for name in IMAGES:
        target = runs / "inputs" / f"{name}.png"
        if not target.is_file():
            write_png(target, center_crop(read_image(Path(args.kodak) / f"{name}.png"), 256))
        items.append(Item(f"{name}.png", target))
    results = {p: run(items, runs, p) for p in ("fp32", "bf16")}
    lines = [f"# `--precision` on the CPU: R-D effect against fp32 ({cpu_name()})",
             "", f"{datetime.date.today()}; torch {torch.__version__}, {torch.get_num_threads()} "
             "threads. 6 Kodak images (kodim01, 05, 07, 13, 21, 23), centre 256 x 256 crops, "
             "default model (q3), SSL, 600 iterations, tau rate 3.3e-3, batch of 6, compiled.",
             "", f"Command: `python {' '.join(sys.argv)}`", "",
             "| precision | bpp | PSNR (dB) | true R-D loss | change vs base | s / image |",
             "|---|---|---|---|---|---|"]
    for precision, records in results.items():
        rows = list(records.values())
        mean = lambda key: statistics.mean(r[key] for r in rows)  # noqa: E731
        change = statistics.mean(r["rd_loss"] / r["base"]["rd_loss"] - 1 for r in rows)
        lines.append(f"| {precision} | {mean('bpp'):.4f} | {mean('psnr'):.3f} | "
                     f"{mean('rd_loss'):.4f} | {100 * change:+.2f} % | {mean('seconds'):.1f} |")
    lines += ["", "Per image, bf16 minus fp32:", "",
              "| image | Δ bpp | Δ PSNR (dB) | Δ true R-D loss (%) |", "|---|---|---|---|"]
    for name, fp32 in results["fp32"].items():
        bf16 = results["bf16"][name]
        lines.append(f"| {name} | {bf16['bpp'] - fp32['bpp']:+.4f} | "
                     f"{bf16['psnr'] - fp32['psnr']:+.3f} | "
                     f"{100 * (bf16['rd_loss'] / fp32['rd_loss'] - 1):+.3f} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("\n".join(lines) + "\n")
    (out / "records.json").write_text(json.dumps(
        {p: {n: {k: r[k] for k in ("bpp", "psnr", "rd_loss", "seconds", "base")}
             for n, r in rec.items()} for p, rec in results.items()}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
