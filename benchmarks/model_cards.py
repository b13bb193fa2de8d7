"""Write the bundled models' cards from a Kodak evaluation of the ladder with ``--methods none``.

    sgafast eval ../shared/data/kodak -o out/ladder --methods none --models ladder \
        --jpeg 5,10,20,30,40,50,60,70,80,90,95
    python benchmarks/model_cards.py out/ladder
"""

import json
import sys
from pathlib import Path

import torch

from sgafast import models


FINE_TUNE_NOTE = """
Note: the fine-tunes started from a copy of `q3` whose buffers had been stored in fp16, which
turned CompressAI's 1e-9 likelihood bound into 0; the few batches whose rate became infinite
were skipped (sgafast now stores buffers in fp32, and the bundled files carry the exact bounds).
"""


def card(name: str, path: Path, records: list[dict]) -> str:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    training = payload.get("training", {})

    def mean(key):
        values = [r[key] for r in records if r.get(key) is not None]
        return sum(values) / len(values)

    return f"""# Model card: `{name}`

| | |
|---|---|
| architecture | CompressAI `MeanScaleHyperprior` (mbt2018-mean), N = {payload['N']}, M = {payload['M']} |
| trained for | MSE, λ = {payload['lmbda']} (λ·255²·MSE + bpp) |
| data | the project's 380 training images (BSDS500 train+val, Sun-Hays 80), random {training.get('crop')}² crops with horizontal flips; research-only licences, not redistributed |
| recipe | {"fine-tuned from `" + Path(training['init']).stem + "`" if training.get('init') else "trained from scratch"}, {training.get('steps')} steps of batch {training.get('batch_size')}, Adam 3e-4 → 1e-4 for the last 20 %, gradient clip 1.0, aux loss (Adam 1e-3) so the medians are learned |
| storage | fp16 parameters, fp32 buffers, CDF tables rebuilt on load ({path.stat().st_size / 1e6:.2f} MB) |
{FINE_TUNE_NOTE if training.get('init') else ''}
Kodak (24 images, full size, real bitstreams, header included), measured by
`sgafast eval ../shared/data/kodak --methods none --models ladder` (see
`benchmarks/results/ladder-kodak/`):

| bpp (bitstream) | bpp (likelihood) | PSNR-RGB | MS-SSIM |
|---|---|---|---|
| {mean('bpp'):.4f} | {mean('bpp_likelihood'):.4f} | {mean('psnr'):.2f} dB | {mean('ms_ssim'):.4f} |
"""


def main(eval_dir: str) -> None:
    bundled = models.bundled_models()
    for name in models.ladder():
        run = Path(eval_dir) / "runs" / "none" / name
        records = [json.loads(p.read_text()) for p in sorted(run.glob("*.json"))]
        if not records:
            sys.exit(f"{run}: no records; run the eval command in this file's docstring first")
        target = bundled[name].with_suffix(".md")
        target.write_text(card(name, bundled[name], records))
        print(f"wrote {target}")


if __name__ == "__main__":
    main(sys.argv[1])
