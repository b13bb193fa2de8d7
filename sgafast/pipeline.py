"""The refine job over many image files: batching, per-image records, bitstreams, resumption.

Each image gets ``OUTDIR/<stem>.bin`` and ``OUTDIR/<stem>.json`` (the JSON, written last, is the
commit); a rerun with the same settings skips finished images; an unreadable image fails alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from . import bitstream, codec
from .errors import SgafastError
from .images import oriented_size, pad, read_image_with_notes, unpad
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
    busy_seconds: float = 0.0  # in refinement (the device's work)
    wall_seconds: float = 0.0

    @property
    def idle_fraction(self) -> float:
        """The share of the run's wall time the device did not spend refining."""
        return 1 - self.busy_seconds / self.wall_seconds if self.wall_seconds else 0.0


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
                groups[oriented_size(img)].append(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            failures.append(Failure(str(path), f"cannot read the image ({exc})"))
    return groups, failures


def _record(path: Path, notes: dict, model: BaseModel, cfg: RefineConfig, run_settings: dict,
            refined: Refined, base: dict, final: dict) -> dict:
    return {
        "source": str(path), "conversion": notes, "model": model.name, "method": cfg.method,
        "classes": cfg.rounding.classes if cfg.rounding else None,
        "iterations": cfg.iters if cfg.refines else 0,
        "lmbda": run_settings["lmbda"],
        **{k: final[k] for k in ("bpp", "bpp_likelihood", "psnr", "ms_ssim", "rd_loss",
                                 "bytes")},
        "seconds": refined.seconds + final["encode_seconds"],
        "decode_seconds": final["decode_seconds"],
        "base": base,
        "history": {"relaxed_loss": refined.relaxed_loss, "true_loss": refined.true_loss,
                    "tracking_seconds": refined.tracking_seconds,
                    "warmup_seconds": refined.warmup_seconds},
        "settings": run_settings,
    }


def _finished(path: Path, outdir: Path, run_settings: dict) -> dict | None:
    """The record of an image already refined with these settings, or None."""
    record = read_json(outdir / f"{path.stem}.json")
    if (record is None or record.get("settings") != run_settings
            or record.get("source") != str(path) or not (outdir / f"{path.stem}.bin").is_file()):
        return None
    return record


def _load(paths: list[Path]) -> tuple[list[tuple[Path, torch.Tensor, dict]], list[Failure]]:
    """Read a batch's images (with notes on their conversion); an unreadable one fails alone."""
    loaded, failures = [], []
    for path in paths:
        try:
            loaded.append((path, *read_image_with_notes(path)))
        except SgafastError as exc:
            failures.append(Failure(str(path), str(exc)))
    return loaded, failures


class _Finisher:
    """Entropy codes, measures and writes refined images on a worker thread, in order.

    While it works on one batch the device refines the next; ``drain`` waits for all of it.
    """

    def __init__(self, model: BaseModel, cfg: RefineConfig, run_settings: dict, outdir: Path,
                 bar):
        self.model, self.cfg, self.settings, self.outdir, self.bar = (
            model, cfg, run_settings, outdir, bar)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgafast-finish")
        self.jobs = []

    def submit(self, x: torch.Tensor, loaded: list, results: list[Refined]) -> None:
        self.jobs.append(self.pool.submit(self._finish, x, loaded, results))

    def _finish(self, x, loaded, results) -> tuple[list[dict], list[Failure]]:
        records, failures, lmbda = [], [], self.settings["lmbda"]
        for i, ((path, _, notes), refined) in enumerate(zip(loaded, results)):
            if not refined.finite:  # the entropy coder never sees a non-finite latent
                failures.append(Failure(str(path), refined.divergence_message()))
                self.bar.update(1)
                continue
            xi = x[i:i + 1]
            base, _ = measure(self.model, xi, refined.y_base, refined.z_base, lmbda)
            final, data = measure(self.model, xi, refined.y, refined.z, lmbda)
            record = _record(path, notes, self.model, self.cfg, self.settings, refined, base,
                             final)
            atomic_write_bytes(self.outdir / f"{path.stem}.bin", data)
            atomic_write_json(self.outdir / f"{path.stem}.json", record)
            records.append(record)
            self.bar.update(1)
            self.bar.set_postfix(bpp=f"{final['bpp']:.3f}", psnr=f"{final['psnr']:.2f}")
        return records, failures

    def drain(self) -> tuple[list[dict], list[Failure]]:
        """Every finished image's record and every failure, in submission order."""
        records, failures = [], []
        try:
            for job in self.jobs:
                done, failed = job.result()
                records += done
                failures += failed
        finally:
            self.pool.shutdown(wait=True)
        return records, failures


def refine_files(paths: list[Path], outdir: Path, model: BaseModel, cfg: RefineConfig,
                 batch_size: int = 1, progress: bool = True) -> RunReport:
    """Refine every image, writing its ``.bin`` and ``.json``; finished images are skipped.

    Three stages overlap: a reader thread loads the next batch, the device refines the
    current one, and a finisher thread codes, measures and writes the previous one.
    """
    if batch_size < 1:
        raise SgafastError(f"batch size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    run_settings = settings(model, cfg)
    device = next(model.net.parameters()).device
    records, todo = [], []
    for path in map(Path, paths):
        done = _finished(path, outdir, run_settings)
        if done is not None:
            records.append(done)
        else:
            todo.append(path)
    groups, failures = _probe(todo)
    batches = [group[i:i + batch_size] for group in groups.values()
               for i in range(0, len(group), batch_size)]
    bar = tqdm(total=len(todo), desc=f"refine [{cfg.method}]", disable=not progress,
               dynamic_ncols=True)
    bar.update(len(failures))
    finisher = _Finisher(model, cfg, run_settings, outdir, bar)
    busy = 0.0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgafast-read") as reader:
        upcoming = [reader.submit(_load, batch) for batch in batches[:1]]
        try:
            for k in range(len(batches)):
                loaded, unreadable = upcoming[k].result()
                if k + 1 < len(batches):
                    upcoming.append(reader.submit(_load, batches[k + 1]))
                failures += unreadable
                bar.update(len(unreadable))
                if not loaded:
                    continue
                tick = time.perf_counter()
                x = torch.stack([img for _, img, _ in loaded]).to(device)
                results = refine_batch(model, x, [p.stem for p, _, _ in loaded], cfg, progress)
                busy += time.perf_counter() - tick
                finisher.submit(x, loaded, results)
        finally:
            done, failed = finisher.drain()  # what is complete is written, even on Ctrl-C
    bar.close()
    return RunReport(records + done, failures + failed, busy_seconds=busy,
                     wall_seconds=time.perf_counter() - start)


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
