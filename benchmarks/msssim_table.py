"""Per-image MS-SSIM dB, bpp and MS-SSIM R-D cost of one model's base and two refinements.

    python benchmarks/msssim_table.py LMBDA MODEL NAME=EVAL_OUT... > table.md

Each EVAL_OUT is an ``sgafast eval`` output folder of MODEL (its label) with an ``ssl`` run; its
records hold the base too. LMBDA weighs 1 - MS-SSIM in the cost J = LMBDA * (1 - MS-SSIM) + bpp,
computed from the decoded 8-bit image's MS-SSIM and the bitstream bpp, so that refinements for
different distortions are compared on one scale (see benchmarks/results/msssim/README.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sgafast.evaluate import ms_ssim_db


def records(folder: Path, model: str) -> dict[str, dict]:
    paths = sorted((folder / "runs" / "ssl" / model).glob("*.json"))
    return {p.stem: json.loads(p.read_text()) for p in paths}


def point(metrics: dict, lmbda: float) -> dict:
    return {"bpp": metrics["bpp"], "db": ms_ssim_db(metrics["ms_ssim"]),
            "psnr": metrics["psnr"], "cost": lmbda * (1 - metrics["ms_ssim"]) + metrics["bpp"]}


def cells(p: dict, base: dict | None = None) -> str:
    if base is None:
        return f"{p['bpp']:.4f} | {p['db']:.3f} | {p['psnr']:.2f} | {p['cost']:.4f}"
    change = 100 * (p["cost"] - base["cost"]) / base["cost"]
    return (f"{p['bpp']:.4f} ({100 * (p['bpp'] / base['bpp'] - 1):+.1f} %) | "
            f"{p['db']:.3f} ({p['db'] - base['db']:+.3f}) | {p['psnr']:.2f} | "
            f"{p['cost']:.4f} ({change:+.2f} %)")


def mean(points: list[dict]) -> dict:
    return {k: sum(p[k] for p in points) / len(points) for k in points[0]}


def main(lmbda: float, model: str, runs: list[str]) -> None:
    named = [run.split("=", 1) for run in runs]
    found = {name: records(Path(folder), model) for name, folder in named}
    images = sorted(next(iter(found.values())))
    head = "| image | base: bpp | MS-SSIM dB | PSNR | J |"
    for name, _ in named:
        head += f" {name}: bpp | MS-SSIM dB | PSNR | J |"
    print(head)
    print("|---" * (1 + 4 * (1 + len(named))) + "|")
    columns = [[] for _ in range(1 + len(named))]
    for image in images + ["mean"]:
        if image == "mean":
            points = [mean(c) for c in columns]
        else:
            first = found[named[0][0]][image]
            points = [point(first["base"], lmbda)] + [point(found[n][image], lmbda)
                                                      for n, _ in named]
            for column, p in zip(columns, points):
                column.append(p)
        print(f"| {image} | {cells(points[0])} | "
              + " | ".join(cells(p, points[0]) for p in points[1:]) + " |")


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2], sys.argv[3:])
