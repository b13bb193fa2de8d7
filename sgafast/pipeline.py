"""The refine job over many images: batching, per-image records and bitstreams, crash-safe resume.

Each item ``a/0001.png`` (named by its path below the folder given, see ``sgafast.inputs``) gets
``OUTDIR/a/0001.bin`` and then ``OUTDIR/a/0001.json``, each written atomically; the JSON is the
commit. A rerun skips an item only when its record parses, was made with the run's settings
and the input's current content, and its ``.bin`` has the recorded size and hash; results made
with other settings are refused, never mixed. A failed item is recorded in
``OUTDIR/_sgafast/failed/`` and retried by the next run; the rest of the run goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from . import bitstream, codec
from .errors import SgafastError
from .images import Canvas, Geometry, oriented_size, read_image_with_notes
from .inputs import RUN_FOLDER, Item, collect
from .io import atomic_write_bytes, atomic_write_json, read_json
from .metrics import msssim, psnr
from .models import BaseModel
from .progress import Progress, say
from .refine import RefineConfig, Refined, distortion_of, lmbda_of, refine_batch
from .shard import Shard

SPEED_OPTIONS = ("backend", "compile", "track_every")  # change the time, not the result
LARGE_PIXELS = 1 << 22  # a batch of 4 Mpixel or more says what it costs before it starts
PEAK_PER_ACTIVATION = 3  # refinement's peak memory / the forward's activations (measured, CPU)


@dataclasses.dataclass(frozen=True)
class Failure:
    source: str
    reason: str


@dataclasses.dataclass
class Counts:
    """What a run did with its items: each one done (refined now), skipped (finished by an
    earlier run with these settings) or failed; the done ones that refined ran compiled or
    eagerly. Counts of several ranks or runs add up."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    compiled: int = 0
    eager: int = 0

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(dataclasses.astuple(self),
                                              dataclasses.astuple(other))))

    def describe(self, done_in: Path, failed_in: Path, unit: str = "images") -> str:
        """``N images: D done (C compiled, E eager), S skipped (already done in X), F failed
        (listed in Y)``: every item counted once, as the run left it."""
        steps = self.compiled + self.eager
        compiled = f" ({self.compiled} compiled, {self.eager} eager)" if steps else ""
        skipped = f" (already done in {done_in})" if self.skipped else ""
        listed = f" (listed in {failed_in})" if self.failed else ""
        return (f"{self.total} {unit}: {self.done} done{compiled}, {self.skipped} "
                f"skipped{skipped}, {self.failed} failed{listed}")

    @classmethod
    def of(cls, done: list[dict], skipped: int, failed: int) -> Counts:
        """The counts of the records ``done`` now, ``skipped`` and ``failed`` items."""
        steps = [r["history"]["compiled"] for r in done
                 if r.get("iterations") and "compiled" in r.get("history", {})]
        return cls(len(done), skipped, failed, sum(steps), len(steps) - sum(steps))


@dataclasses.dataclass(frozen=True)
class LoadedImage:
    """An item read for refinement: its (3, H, W) image in [0, 1], what reading it converted
    (``images.read_image_with_notes``), and the input file's SHA-256."""

    item: Item
    image: torch.Tensor
    notes: dict
    sha256: str


@dataclasses.dataclass
class RunReport:
    records: list[dict]  # every finished item's: refined now or skipped
    failures: list[Failure]
    counts: Counts = dataclasses.field(default_factory=Counts)
    busy_seconds: float = 0.0  # in refinement (the device's work)
    wall_seconds: float = 0.0

    @property
    def idle_fraction(self) -> float:
        """The share of the run's wall time the device did not spend refining."""
        return 1 - self.busy_seconds / self.wall_seconds if self.wall_seconds else 0.0


def settings(model: BaseModel, cfg: RefineConfig) -> dict:
    """What makes two results of an image the same result: every resolved setting but speed."""
    run = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in SPEED_OPTIONS}
    return {"model": model.describe(), "fingerprint": f"{model.fingerprint:016x}", **run,
            "lmbda": lmbda_of(model, cfg), "distortion": distortion_of(model, cfg)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_folder(outdir: Path) -> Path:
    """Where the run-level files live: no image output can be named like them."""
    return outdir / RUN_FOLDER


def failure_file(outdir: Path, key: str) -> Path:
    """Where a failure is recorded: ``failed/<key>.json``, the key an item's stem or, for an
    input refused before it became an item, ``refused_key``'s."""
    return run_folder(outdir) / "failed" / f"{key}.json"


def refused_key(source: str) -> str:
    """The failure key of a refused input: below ``_sgafast/``, where no item's stem can be,
    its file name and a digest of its path (two refused ``0001.png`` never share a file)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"{RUN_FOLDER}/{Path(source).name}-{digest}"


def measure(model: BaseModel, x: torch.Tensor, latents, geometry: Geometry, lmbda: float,
            distortion: str = "mse") -> tuple[dict, bytes]:
    """Metrics of hard latents (batch of one): bitstream and likelihood bpp, PSNR, MS-SSIM, and
    the true R-D loss weighing ``distortion``."""
    num_pixels = geometry.num_pixels
    tick = time.perf_counter()
    data = bitstream.encode(model, latents, geometry)
    encode_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    decoded = bitstream.decode(model, data)
    decode_seconds = time.perf_counter() - tick
    with torch.no_grad():
        loss, terms = codec.hard_rd(model.family, Canvas.of(x), latents, lmbda, distortion)
    return {
        "bpp": 8 * len(data) / num_pixels,
        "bpp_likelihood": float(terms["bits"][0]) / num_pixels,
        "psnr": psnr(x, decoded),
        "ms_ssim": msssim(x, decoded),
        "rd_loss": float(loss[0]),
        "distortion": distortion,  # what the R-D loss weighs
        "bytes": len(data),
        "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds,
    }, data


def _probe(items: list[Item], distortion: str) -> tuple[dict, list[tuple[Item, str]]]:
    """Group readable images by padded size (images of different sizes share a batch when
    their padded sizes agree), without decoding them; record unreadable ones and those too
    small for the ``distortion``."""
    groups, failures = defaultdict(list), []
    for item in items:
        try:
            with Image.open(item.path) as img:
                width, height = oriented_size(img)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            failures.append((item, f"cannot read the image ({exc})"))
            continue
        try:
            codec.check_sizes(distortion, [Geometry(height, width)])
        except SgafastError as exc:
            failures.append((item, str(exc)))
            continue
        groups[Geometry(height, width).padded_size].append(item)
    return groups, failures


def _record(entry: LoadedImage, model: BaseModel, cfg: RefineConfig, run_settings: dict,
            refined: Refined, base: dict, final: dict, data: bytes) -> dict:
    return {
        "source": str(entry.item.path), "name": entry.item.name, "input_sha256": entry.sha256,
        "conversion": entry.notes, "model": model.name, "method": cfg.method,
        "classes": cfg.rounding.classes if cfg.rounding else None,
        "iterations": cfg.iters if cfg.refines else 0,
        "schedule": cfg.schedule.describe() if cfg.refines else None,
        "lmbda": run_settings["lmbda"],
        **{k: final[k] for k in ("bpp", "bpp_likelihood", "psnr", "ms_ssim", "rd_loss",
                                 "distortion", "bytes")},
        "bin_sha256": hashlib.sha256(data).hexdigest(),
        "seconds": refined.seconds + final["encode_seconds"],
        "decode_seconds": final["decode_seconds"],
        "base": base,
        "history": {"relaxed_loss": refined.relaxed_loss, "true_loss": refined.true_loss,
                    "tracking_seconds": refined.tracking_seconds,
                    "warmup_seconds": refined.warmup_seconds,
                    "peak_memory_bytes": refined.peak_memory_bytes,
                    "compiled": refined.compiled, "stopped_at": refined.stopped_at},
        "settings": run_settings,
        "speed_options": {k: getattr(cfg, k) for k in SPEED_OPTIONS},
    }


def _finished(item: Item, outdir: Path, run_settings: dict) -> tuple[dict | None, str | None]:
    """(the record of an item already done with these settings and this content, or None;
    how a record made with other settings differs from them, or None)."""
    record = read_json(item.output(outdir, ".json"))
    if not isinstance(record, dict):
        return None, None
    if record.get("settings") != run_settings:
        return None, _difference(record.get("settings"), run_settings)
    data_path = item.output(outdir, ".bin")
    if (record.get("input_sha256") != file_sha256(item.path) or not data_path.is_file()
            or data_path.stat().st_size != record.get("bytes")
            or file_sha256(data_path) != record.get("bin_sha256")):
        return None, None
    return record, None


def _difference(there, here: dict) -> str:
    """The settings that differ, with both values: ``iters 4 there, 3 now``."""
    there = there if isinstance(there, dict) else {}
    keys = [k for k in here if there.get(k) != here[k]] or sorted(set(there) - set(here))
    return "; ".join(f"{k} {there.get(k)!r} there, {here.get(k)!r} now" for k in keys)


def activation_bytes_per_pixel(net: torch.nn.Module, side: int = 64) -> float:
    """Bytes of the activations of one forward pass of ``net``, per image pixel."""
    total = 0

    def count(module, inputs, outputs):
        nonlocal total
        for t in outputs if isinstance(outputs, (tuple, list)) else [outputs]:
            total += t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0

    device = next(net.parameters()).device
    hooks = [m.register_forward_hook(count) for m in net.modules() if not any(m.children())]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, side, side, device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return total / side**2


def _pixels(loaded: list[LoadedImage]) -> int:
    return sum(e.image.shape[-2] * e.image.shape[-1] for e in loaded)


def _cost(loaded: list[LoadedImage], bytes_per_pixel: float) -> str:
    """What refining a large batch costs, said before it starts: its pixels and memory."""
    height, width = loaded[0].image.shape[-2:]
    padded = Geometry(height, width).padded_size
    memory = PEAK_PER_ACTIVATION * bytes_per_pixel * padded[0] * padded[1] * len(loaded)
    size = (f"{width}x{height}" if len(loaded) == 1 else
            f"{len(loaded)} images padded to {padded[1]}x{padded[0]}")
    return (f"{', '.join(e.item.name for e in loaded)}: {size} ({_pixels(loaded) / 1e6:.1f} "
            f"Mpixel): refining takes about {memory / 1e9:.1f} GB of memory and a long first "
            "step; downscale or tile it to go faster")


def _load(items: list[Item]) -> tuple[list[LoadedImage], list[tuple[Item, str]]]:
    """Read a batch's images; an unreadable one fails alone."""
    loaded, failures = [], []
    for item in items:
        try:
            loaded.append(LoadedImage(item, *read_image_with_notes(item.path),
                                      file_sha256(item.path)))
        except (SgafastError, OSError) as exc:
            failures.append((item, str(exc)))
    return loaded, failures


class _Writer:
    """Entropy codes, measures and writes refined images on a worker thread, in order, and
    records failures. While it works on one batch the device refines the next."""

    def __init__(self, model: BaseModel, cfg: RefineConfig, run_settings: dict, outdir: Path,
                 progress: Progress):
        self.model, self.cfg, self.settings, self.outdir, self.progress = (
            model, cfg, run_settings, outdir, progress)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgafast-write")
        self.jobs, self.failed = [], 0

    def fail(self, item: Item, reason: str) -> Failure:
        """Record a failed item in OUTDIR/_sgafast/failed/ (the next run retries it)."""
        return self._record_failure(item.stem, str(item.path), item.name, reason)

    def refuse(self, source: str, reason: str) -> Failure:
        """Record an input refused before it became an item (a name collision, a missing
        ``@list`` entry) in OUTDIR/_sgafast/failed/."""
        return self._record_failure(refused_key(source), source, None, reason)

    def _record_failure(self, key: str, source: str, name: str | None, reason: str) -> Failure:
        atomic_write_json(failure_file(self.outdir, key),
                          {"source": source, "name": name, "reason": reason})
        self.failed += 1
        self.progress.advance(f"{name or source}: failed: {reason}", failed=self.failed)
        return Failure(source, reason)

    def submit(self, canvas: Canvas, loaded: list[LoadedImage], results: list[Refined]) -> None:
        self.jobs.append(self.pool.submit(self._finish, canvas, loaded, results))

    def _finish(self, canvas, loaded, results) -> tuple[list[dict], list[Failure]]:
        records, failures = [], []
        lmbda, distortion = self.settings["lmbda"], self.settings["distortion"]
        for i, (entry, refined) in enumerate(zip(loaded, results)):
            item = entry.item
            if not refined.codable:  # the entropy coder never sees a non-finite latent
                failures.append(self.fail(item, refined.divergence_message()))
                continue
            xi = canvas.image(i)
            base, data = measure(self.model, xi, refined.base, refined.geometry, lmbda,
                                 distortion)
            if self.cfg.refines:  # else the latents are the base's: coded and decoded once
                final, data = measure(self.model, xi, refined.latents, refined.geometry, lmbda,
                                      distortion)
            else:
                final = base
            record = _record(entry, self.model, self.cfg, self.settings, refined, base, final,
                             data)
            atomic_write_bytes(item.output(self.outdir, ".bin"), data)
            atomic_write_json(item.output(self.outdir, ".json"), record)  # the commit
            failure_file(self.outdir, item.stem).unlink(missing_ok=True)
            records.append(record)
            self.progress.advance(f"{item.name}: {final['bpp']:.4f} bpp, {final['psnr']:.2f} dB "
                                  f"(base {base['bpp']:.4f} bpp, {base['psnr']:.2f} dB)",
                                  bpp=f"{final['bpp']:.3f}", psnr=f"{final['psnr']:.2f}",
                                  failed=self.failed)
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


def _shared_work(batches: list[tuple[tuple[int, int], list[Item]]],
                 iters: int) -> Counter[tuple[tuple[int, int], int]]:
    """The pixel-iterations of the run per compiled step: per (padded size, batch size)."""
    work = Counter()
    for (height, width), batch in batches:
        work[(height, width), len(batch)] += len(batch) * height * width * iters
    return work


def _refine(model, loaded: list[LoadedImage], cfg: RefineConfig, device, progress: bool,
            shared_work: int | None = None) -> tuple[list, list[LoadedImage]]:
    """([(entries, canvas, results)], entries too large even alone): a batch that runs out of
    memory is retried image by image; ``progress``: a bar over its iterations;
    ``shared_work``: see ``refine.Refinement``."""
    try:
        canvas = Canvas.of([e.image for e in loaded]).to(device)
        identities = [e.item.stem for e in loaded]
        return [(loaded, canvas, refine_batch(model, canvas, identities, cfg, progress,
                                              shared_work))], []
    except torch.OutOfMemoryError:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if len(loaded) == 1:
            return [], loaded
        parts, too_large = [], []
        for entry in loaded:
            done, failed = _refine(model, [entry], cfg, device, progress)
            parts += done
            too_large += failed
        return parts, too_large


def pending(items: list[Item], outdir: Path, model: BaseModel, cfg: RefineConfig,
            overwrite: bool = False) -> tuple[list[dict], list[Item]]:
    """(records of finished items, items to do). Refuses an OUTDIR that holds results made
    with other settings, unless ``overwrite``: two settings are never mixed in one folder."""
    run_settings = settings(model, cfg)
    records, todo, other = [], [], []
    for item in items:
        record, difference = _finished(item, outdir, run_settings)
        if difference is not None:
            other.append((item, difference))
        if record is not None:
            records.append(record)
        else:
            todo.append(item)
    if other and not overwrite:
        item, difference = other[0]
        raise SgafastError(f"{outdir} holds {len(other)} result(s) made with other settings "
                           f"({item.output(outdir, '.json')}: {difference}); use another -o, "
                           "or --overwrite to replace them")
    return records, todo


def _starting(outdir: Path, cfg: RefineConfig, todo: int, items: int) -> str:
    """The line a run starts with: what it refines, and what an earlier run already did."""
    skipped = f"{items - todo} of {items} images already done in {outdir}, skipped"
    if not todo:
        return skipped
    work = f"refining {todo} of {items} images [{cfg.method}]"
    return f"{work}; {skipped}" if todo < items else work


def refine_items(items: list[Item], outdir: Path, model: BaseModel, cfg: RefineConfig,
                 batch_size: int = 1, progress: bool = True, overwrite: bool = False,
                 label: str = "", refused: list[tuple[str, str]] = ()) -> RunReport:
    """Refine every item not yet finished, writing its ``.bin`` and ``.json``; record each
    failed item, and each input ``refused`` as (source, reason), in OUTDIR/_sgafast/failed/.

    Three stages overlap: a reader thread loads the next batch, the device refines the
    current one, and a writer thread codes, measures and writes the previous one.
    """
    if batch_size < 1:
        raise SgafastError(f"batch size must be >= 1, got {batch_size}")
    start = time.perf_counter()
    records, todo = pending(items, outdir, model, cfg, overwrite)
    device = next(model.net.parameters()).device
    groups, unreadable = _probe(todo, distortion_of(model, cfg))
    batches = [(size, group[i:i + batch_size]) for size, group in groups.items()
               for i in range(0, len(group), batch_size)]
    shared_work = _shared_work(batches, cfg.iters)
    if progress and items:
        say(label + _starting(outdir, cfg, len(todo), len(items)))
    shown = Progress(len(todo) + len(refused), f"{label}refine [{cfg.method}]", show=progress,
                     label=label)
    writer = _Writer(model, cfg, settings(model, cfg), outdir, shown)
    failures = [writer.refuse(source, reason) for source, reason in refused]
    failures += [writer.fail(item, reason) for item, reason in unreadable]
    busy = 0.0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sgafast-read") as reader:
        upcoming = [reader.submit(_load, batch) for _, batch in batches[:1]]
        try:
            for k, (size, batch) in enumerate(batches):
                loaded, unread = upcoming[k].result()
                if k + 1 < len(batches):
                    upcoming.append(reader.submit(_load, batches[k + 1][1]))
                failures += [writer.fail(item, reason) for item, reason in unread]
                if not loaded:
                    continue
                if progress and _pixels(loaded) >= LARGE_PIXELS:
                    say(label + _cost(loaded, activation_bytes_per_pixel(model.net)))
                tick = time.perf_counter()
                parts, too_large = _refine(model, loaded, cfg, device, shown.bar_shown,
                                           shared_work[size, len(batch)])
                failures += [writer.fail(entry.item, "out of memory even alone; use a device "
                                         "with more memory, or downscale or tile the image")
                             for entry in too_large]
                busy += time.perf_counter() - tick
                for entries, canvas, results in parts:
                    writer.submit(canvas, entries, results)
        finally:
            done, failed = writer.drain()  # what is complete is written, even on Ctrl-C
            shown.close()
    failures += failed
    return RunReport(records + done, failures, Counts.of(done, len(records), len(failures)),
                     busy_seconds=busy, wall_seconds=time.perf_counter() - start)


def refine_files(inputs: list, outdir: Path, model: BaseModel, cfg: RefineConfig, *,
                 shard: Shard = Shard(), **options) -> RunReport:
    """``refine_share`` of the files, folders and @lists given (see ``sgafast.inputs``)."""
    items, refused = collect([str(p) for p in inputs])
    return refine_share(items, refused, outdir, model, cfg, shard=shard, **options)


def refine_share(items: list[Item], refused: list[tuple[str, str]], outdir: Path,
                 model: BaseModel, cfg: RefineConfig, *, shard: Shard = Shard(),
                 **options) -> RunReport:
    """``refine_items`` of this rank's share (``shard``) of ``inputs.collect``'s items; rank 0
    records the inputs it refused (they come first in the failures)."""
    return refine_items(shard.take(items), outdir, model, cfg, label=shard.label,
                        refused=refused if shard.rank == 0 else [], **options)


def merge(outdir: Path, name: str = "", description: str = "") -> dict:
    """Collect every per-image record under OUTDIR (all ranks' work) into
    ``_sgafast/records.jsonl`` and ``_sgafast/summary.json`` (eval_model schema), named
    ``name`` (default: ``sgafast-METHOD``, as ``refine`` names it)."""
    records = []
    for path in sorted(Path(outdir).rglob("*.json")):
        if RUN_FOLDER in path.relative_to(outdir).parts[:1]:
            continue
        record = read_json(path)
        if isinstance(record, dict) and "settings" in record and "bpp" in record:
            records.append(record)
    if not records:
        raise SgafastError(f"{outdir}: no finished image records to merge")
    name = name or f"sgafast-{records[0]['method']}"
    description = description or (f"{records[0]['model']}, {records[0]['method']}, "
                                  f"{records[0]['iterations']} iterations")
    doc = summary(records, name, description)
    atomic_write_bytes(run_folder(outdir) / "records.jsonl",
                       "".join(json.dumps(r) + "\n" for r in records).encode())
    atomic_write_json(run_folder(outdir) / "summary.json", doc)
    return doc


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
