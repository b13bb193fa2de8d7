"""A dataset of 24 image sizes refined three ways, each in a fresh process with an empty Inductor
cache: the default (the step compiled only for the padded sizes and batch sizes whose work pays
back the warm-up), ``--compile`` (one graph per padded size and batch size, up to dynamo's
recompile limit, the eager step beyond, said once) and ``--no-compile``.

    python benchmarks/bench_sizes.py --kodak DIR --iters 200 --out benchmarks/results/sizes

The 24 images are crops of the landscape Kodak images, 200x200 to 512x768 (height x width), 24
distinct sizes over fewer padded sizes. Reports per arm the wall time of the whole run (model
load, compilation, refinement, coding), dynamo's compilations, the total warm-up (the first step
of each batch), the steady time per iteration per megapixel of the compiled batches and of all
batches, and images per hour; ``make bench-sizes`` runs it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_e2e import cpu_name
from PIL import Image

from sgafast.images import Geometry, read_image, write_png

ARMS = {"default": [], "compile": ["--compile"], "no-compile": ["--no-compile"]}
COUNT = 24


def sizes() -> list[tuple[int, int]]:
    """24 distinct (height, width) over 17 padded sizes: heights 200-512 in order, widths
    200-768 interleaved, consecutive pairs 9 px apart in width (often one padded size)."""
    return [(200 + round(i * 312 / 23), 209 + round((i // 2 * 5 % 12) * 559 / 11) - i % 2 * 9)
            for i in range(COUNT)]


def make_folder(kodak: Path, folder: Path) -> None:
    """Centre crops of the landscape Kodak images at every size of ``sizes()``."""
    landscape = [p for p in sorted(kodak.glob("kodim*.png")) if Image.open(p).size == (768, 512)]
    folder.mkdir(parents=True, exist_ok=True)
    for i, (h, w) in enumerate(sizes()):
        image = read_image(landscape[i % len(landscape)])
        top, left = (512 - h) // 2, (768 - w) // 2
        write_png(folder / f"{i:02d}_{h}x{w}.png", image[:, top:top + h, left:left + w])


def child(argv: list[str], counters_path: Path) -> None:
    """Run the CLI in this process, then write dynamo's counters (its compilations)."""
    import torch._dynamo.utils

    from sgafast.cli import main

    code = main(argv)
    stats = dict(torch._dynamo.utils.counters["stats"])
    counters_path.write_text(json.dumps({"code": code, "stats": stats}))


def run_arm(name: str, folder: Path, out: Path, iters: int, batch: int) -> dict:
    """One arm in a fresh process with an empty Inductor cache: wall time, counters, records."""
    with tempfile.TemporaryDirectory() as cache:
        counters = Path(cache) / "counters.json"
        argv = ["refine", str(folder), "-o", str(out), "--iters", str(iters), "--batch-size",
                str(batch), "--track-every", "0", "--quiet", *ARMS[name]]
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(cache) / "inductor"),
               "TRITON_CACHE_DIR": str(Path(cache) / "triton")}
        tick = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--child", str(counters), "--", *argv],
                       env=env, check=True)
        wall = time.perf_counter() - tick
        result = json.loads(counters.read_text())
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    compiled = [r for r in records if r["history"]["compiled"]]

    def steady_ms_per_megapixel(rows):
        pixel_iters = sum(Geometry(*_size(r)).num_pixels * (iters - 1) for r in rows)
        seconds = sum(r["seconds"] - r["history"]["warmup_seconds"] for r in rows)
        return 1e3 * seconds / pixel_iters * 1e6 if rows else None

    return {"arm": name, "options": ARMS[name], "wall_seconds": wall,
            "compilations": result["stats"].get("unique_graphs", 0),
            "images": len(records), "compiled_images": len(compiled),
            "warmup_seconds": sum(r["history"]["warmup_seconds"] for r in records),
            "steady_ms_per_iter_megapixel_compiled": steady_ms_per_megapixel(compiled),
            "steady_ms_per_iter_megapixel_all": steady_ms_per_megapixel(records),
            "images_per_hour": 3600 * len(records) / wall}


def _size(record: dict) -> tuple[int, int]:
    h, w = record["name"].split("_")[1].split(".")[0].split("x")
    return int(h), int(w)


def table(rows: list[dict], meta: dict) -> str:
    base = next(r for r in rows if r["arm"] == "no-compile")
    lines = [f"# Mixed image sizes, compiled and eager ({meta['machine']})", "",
             f"{meta['date']}, commit {meta['commit']}; torch {meta['torch']}, "
             f"{meta['threads']} threads. {COUNT} images of {COUNT} sizes "
             f"({meta['padded_sizes']} padded sizes), default model, SSL, {meta['iters']} "
             f"iterations, batch {meta['batch']}, --track-every 0; each arm a fresh process "
             "with an empty Inductor cache, one after the other.", "",
             f"Command: `{meta['command']}`", "",
             "| arm | wall (s) | × no-compile | compilations | compiled images | warm-up (s) "
             "| steady ms/iter/MP, compiled | steady ms/iter/MP, all | images/hour |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        compiled = r["steady_ms_per_iter_megapixel_compiled"]
        lines.append(f"| {r['arm']} | {r['wall_seconds']:.0f} | "
                     f"{r['wall_seconds'] / base['wall_seconds']:.2f} | {r['compilations']} | "
                     f"{r['compiled_images']}/{r['images']} | {r['warmup_seconds']:.1f} | "
                     f"{'-' if compiled is None else f'{compiled:.0f}'} | "
                     f"{r['steady_ms_per_iter_megapixel_all']:.0f} | "
                     f"{r['images_per_hour']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kodak", required=True, help="the 24 Kodak PNGs")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--runs", default="out/bench-sizes")
    parser.add_argument("--out", default="benchmarks/results/sizes")
    args = parser.parse_args()
    runs = Path(args.runs)
    make_folder(Path(args.kodak), runs / "inputs")
    rows = []
    for name in ARMS:
        out = runs / name
        for old in out.glob("*"):  # a fresh run: nothing to resume
            if old.is_file():
                old.unlink()
        rows.append(run_arm(name, runs / "inputs", out, args.iters, args.batch_size))
        print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"machine": cpu_name(), "date": str(datetime.date.today()), "commit": commit,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "iters": args.iters, "batch": args.batch_size,
            "padded_sizes": len({Geometry(h, w).padded_size for h, w in sizes()}),
            "command": f"python {' '.join(sys.argv)}"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{meta['date']}-cpu"
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (out / f"{stem}.md").write_text(table(rows, meta))
    print(table(rows, meta))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[4:], Path(sys.argv[2]))
    else:
        main()
