"""The refine job over many image files: batching, per-image records, bitstreams, resumption.

Each image gets ``OUTDIR/<stem>.bin`` and ``OUTDIR/<stem>.json`` (the JSON, written last, is the
commit); a rerun with the same settings skips finished images; an unreadable image fails alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from . import bitstream, codec
from .errors import SgafastError
from .images import pad, read_image, unpad
from .io import atomic_write_bytes, atomic_write_json, read_json
from .metrics import msssim, psnr
from .models import BaseModel
from .refine import RefineConfig, Refined, lmbda_of, refine_batch


@dataclasses.dataclass
class Failure:
    source: str
    reason: str


@dataclasses.dataclass
class RunReport:
    records: list[dict]
    failures: list[Failure]


def settings(model: BaseModel, cfg: RefineConfig) -> dict:
    """What makes two runs of an image the same run (used to skip finished images)."""
    return {"model": model.describe(), "fingerprint": f"{model.fingerprint:016x}",
            **dataclasses.asdict(cfg), "lmbda": lmbda_of(model, cfg)}


def measure(model: BaseModel, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
            lmbda: float) -> tuple[dict, bytes]:
    """Metrics of hard latents (batch of one): bitstream and likelihood bpp, PSNR, MS-SSIM."""
    net = model.net
    height, width = x.shape[-2:]
    num_pixels = height * width
    tick = time.perf_counter()
    data = bitstream.encode(model, y, z, height, width)
    encode_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    decoded = bitstream.decode(model, data)
    decode_seconds = time.perf_counter() - tick
    with torch.no_grad():
        _, unpadding = pad(x)
        y_hat, z_hat, scales, means = codec.hard_latents(net, y, z)
        terms = codec.rd_terms(net, x, y_hat, z_hat, scales, means, lambda t: unpad(t, unpadding))
        loss = codec.rd_loss(terms["mse"], terms["bits"], lmbda, num_pixels)
    return {
        "bpp": 8 * len(data) / num_pixels,
        "bpp_likelihood": float(terms["bits"][0]) / num_pixels,
        "psnr": psnr(x, decoded),
        "ms_ssim": msssim(x, decoded),
        "rd_loss": float(loss[0]),
        "bytes": len(data),
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
    }, data


def _probe(paths: list[Path]) -> tuple[dict, list[Failure]]:
    """Group readable images by size, without decoding them; record unreadable ones."""
    groups, failures, stems = defaultdict(list), [], {}
    for path in paths:
        if path.stem in stems:
            failures.append(Failure(str(path), f"its name collides with {stems[path.stem]} "
                                               f"(outputs are named by stem); rename one"))
            continue
        stems[path.stem] = path
        try:
            with Image.open(path) as img:
                groups[img.size].append(path)
        except (OSError, ValueError) as exc:
            failures.append(Failure(str(path), f"cannot read the image ({exc})"))
    return groups, failures


def _record(path: Path, model: BaseModel, cfg: RefineConfig, run_settings: dict,
            refined: Refined, base: dict, final: dict) -> dict:
    return {
        "source": str(path), "model": model.name, "method": cfg.method,
        "classes": cfg.rounding.classes if cfg.rounding else None,
        "iterations": cfg.iters if cfg.refines else 0,
        "lmbda": run_settings["lmbda"],
        **{k: final[k] for k in ("bpp", "bpp_likelihood", "psnr", "ms_ssim", "rd_loss",
                                 "bytes")},
        "seconds": refined.seconds + final["encode_seconds"],
        "decode_seconds": final["decode_seconds"],
        "base": base,
        "history": {"relaxed_loss": refined.relaxed_loss, "true_loss": refined.true_loss,
                    "tracking_seconds": refined.tracking_seconds},
        "settings": run_settings,
    }


def _finished(path: Path, outdir: Path, run_settings: dict) -> dict | None:
    """The record of an image already refined with these settings, or None."""
    record = read_json(outdir / f"{path.stem}.json")
    if (record is None or record.get("settings") != run_settings
            or record.get("source") != str(path) or not (outdir / f"{path.stem}.bin").is_file()):
        return None
    return record


def refine_files(paths: list[Path], outdir: Path, model: BaseModel, cfg: RefineConfig,
                 batch_size: int = 1, progress: bool = True) -> RunReport:
    """Refine every image, writing its ``.bin`` and ``.json``; finished images are skipped."""
    if batch_size < 1:
        raise SgafastError(f"batch size must be >= 1, got {batch_size}")
    run_settings = settings(model, cfg)
    lmbda = run_settings["lmbda"]
    device = next(model.net.parameters()).device
    records, todo = [], []
    for path in map(Path, paths):
        done = _finished(path, outdir, run_settings)
        if done is not None:
            records.append(done)
        else:
            todo.append(path)
    groups, failures = _probe(todo)
    bar = tqdm(total=len(todo), desc=f"refine [{cfg.method}]", disable=not progress,
               dynamic_ncols=True)
    bar.update(len(failures))
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            loaded = []
            for path in group[start:start + batch_size]:
                try:
                    loaded.append((path, read_image(path)))
                except SgafastError as exc:
                    failures.append(Failure(str(path), str(exc)))
                    bar.update(1)
            if not loaded:
                continue
            x = torch.stack([img for _, img in loaded]).to(device)
            results = refine_batch(model, x, [p.stem for p, _ in loaded], cfg, progress)
            for i, ((path, _), refined) in enumerate(zip(loaded, results)):
                if not refined.finite:  # the entropy coder never sees a non-finite latent
                    failures.append(Failure(str(path), refined.divergence_message()))
                    bar.update(1)
                    continue
                xi = x[i:i + 1]
                base, _ = measure(model, xi, refined.y_base, refined.z_base, lmbda)
                final, data = measure(model, xi, refined.y, refined.z, lmbda)
                record = _record(path, model, cfg, run_settings, refined, base, final)
                atomic_write_bytes(outdir / f"{path.stem}.bin", data)
                atomic_write_json(outdir / f"{path.stem}.json", record)
                records.append(record)
                bar.update(1)
                bar.set_postfix(bpp=f"{final['bpp']:.3f}", psnr=f"{final['psnr']:.2f}")
    bar.close()
    return RunReport(records, failures)


def summary(records: list[dict], name: str, description: str) -> dict:
    """CompressAI eval_model's JSON schema: dataset means, one list entry per quality point."""
    def mean(key, rows):
        values = [r[key] for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "name": name,
        "description": description,
        "results": {
            "psnr-rgb": [mean("psnr", records)],
            "ms-ssim-rgb": [mean("ms_ssim", records)],
            "bpp": [mean("bpp", records)],
            "encoding_time": [mean("seconds", records)],
            "decoding_time": [mean("decode_seconds", records)],
        },
        "bpp-likelihood": [mean("bpp_likelihood", records)],
        "rd-loss": [mean("rd_loss", records)],
        "base": {k: [mean(k, [r["base"] for r in records])]
                 for k in ("psnr", "ms_ssim", "bpp", "bpp_likelihood", "rd_loss")},
        "images": len(records),
    }
