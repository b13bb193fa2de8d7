"""BD-rates of a ladder of MS-SSIM models refined for MS-SSIM and for MSE, against their base.

    python benchmarks/msssim_ladder.py MSSSIM_EVAL MSE_EVAL... > table.md

MSSSIM_EVAL: an ``sgafast eval`` output folder of the whole ladder with methods ``none,ssl``
and ``--distortion ms-ssim`` (its ``none.json`` is the anchor, its ``ssl.json`` one curve).
MSE_EVAL: ``sgafast eval`` folders of the ladder's models, in ladder order, each refined with
``--distortion mse`` at that model's own MSE lambda (one folder per model, since lambda
differs); their ``ssl.json`` points make the other curve. BD-rates are taken over the bitstream
bpp against MS-SSIM in dB (-10 log10(1 - MS-SSIM)) and against PSNR, as ``sgafast eval``
takes them (``sgafast.evaluate.bd_row``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sgafast.evaluate import bd_row, ms_ssim_db


def curve(folder: Path, method: str) -> dict:
    return json.loads((folder / f"{method}.json").read_text())


def joined(docs: list[dict]) -> dict:
    """One curve from one-model curves, in the order given."""
    keys = docs[0]["results"].keys()
    return {"results": {k: [v for d in docs for v in d["results"][k]] for k in keys},
            "bpp-likelihood": [v for d in docs for v in d["bpp-likelihood"]],
            "rd-loss": [v for d in docs for v in d["rd-loss"]],
            "models": [m for d in docs for m in d["models"]]}


def _fmt(value: float | None, unit: str) -> str:
    return "n/a" if value is None else f"{value:+.2f} {unit}"


def main(msssim_eval: Path, mse_evals: list[Path]) -> None:
    base = curve(msssim_eval, "none")
    refined = {"refined for MS-SSIM": curve(msssim_eval, "ssl"),
               "refined for MSE": joined([curve(f, "ssl") for f in mse_evals])}
    for doc in refined.values():
        if doc["models"] != base["models"]:
            raise SystemExit(f"models differ: {doc['models']} against {base['models']}")
    print(f"Ladder: {', '.join(base['models'])}; anchor: the base codec (no refinement).\n")
    print("| model | base bpp | MS-SSIM dB | PSNR | " + " | ".join(
        f"{name}: bpp | MS-SSIM dB | PSNR" for name in refined) + " |")
    print("|---" * (4 + 3 * len(refined)) + "|")
    for i, model in enumerate(base["models"]):
        cells = [f"{doc['results']['bpp'][i]:.4f} | "
                 f"{ms_ssim_db(doc['results']['ms-ssim-rgb'][i]):.3f} | "
                 f"{doc['results']['psnr-rgb'][i]:.2f}" for doc in (base, *refined.values())]
        print(f"| {model} | " + " | ".join(cells) + " |")
    print("\n| curve | BD-rate (MS-SSIM dB) | BD-MS-SSIM | BD-rate (PSNR) | BD-PSNR |")
    print("|---|---|---|---|---|")
    for name, doc in refined.items():
        rate_ms, gain_ms = bd_row(base, doc, "bpp", "ms-ssim")
        rate_psnr, gain_psnr = bd_row(base, doc, "bpp", "mse")
        print(f"| {name} | {_fmt(rate_ms, '%')} | {_fmt(gain_ms, 'dB')} | "
              f"{_fmt(rate_psnr, '%')} | {_fmt(gain_psnr, 'dB')} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
