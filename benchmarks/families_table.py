"""A markdown table of ``sgafast eval`` runs (none and ssl) of several model families, side by side.

    python benchmarks/families_table.py OUT FAMILY... > table.md

Each ``OUT/FAMILY`` is an eval output folder (see benchmarks/families.sh): per ladder point the
base and refined bitstream bpp, PSNR and true R-D loss, then per family the BD-rate of SSL
against its own base curve.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _fmt_bd(value) -> str:
    return "n/a" if value is None else f"{value:+.2f} %"


def family_rows(folder: Path, family: str) -> tuple[list[str], str]:
    base, refined = (json.loads((folder / f"{m}.json").read_text()) for m in ("none", "ssl"))
    (bd,) = json.loads((folder / "bd.json").read_text())
    rows = []
    for i, model in enumerate(refined["models"]):
        b, r = ({k: doc["results"][k][i] for k in ("bpp", "psnr-rgb")} | {"rd": doc["rd-loss"][i]}
                for doc in (base, refined))
        change = 100 * (r["rd"] - b["rd"]) / b["rd"]
        rows.append(f"| {family} | {model} | {b['bpp']:.4f} | {b['psnr-rgb']:.2f} | "
                    f"{b['rd']:.4f} | {r['bpp']:.4f} | {r['psnr-rgb']:.2f} | {r['rd']:.4f} | "
                    f"{change:+.2f} % |")
    summary = (f"| {family} | {_fmt_bd(bd['bd_rate_bpp'])} | {_fmt_bd(bd['bd_rate_likelihood'])} "
               f"| {bd['bd_psnr_bpp']:+.3f} dB | {_fmt_bd(bd['rd_loss_change'])} |")
    return rows, summary


def main(out: str, families: list[str]) -> None:
    points, summaries = [], []
    for family in families:
        rows, summary = family_rows(Path(out) / family, family)
        points += rows
        summaries.append(summary)
    print("| family | model | base bpp | base PSNR | base R-D | SSL bpp | SSL PSNR | SSL R-D | "
          "true R-D change |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(points))
    print()
    print("| family | BD-rate (bitstream) | BD-rate (likelihood) | BD-PSNR (bitstream) | "
          "mean true R-D change |")
    print("|---|---|---|---|---|")
    print("\n".join(summaries))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
