"""``sgafast eval``: every method at every ladder point, then R-D curves, BD tables and plots.

Each (method, model) run is an ordinary ``refine`` job into ``OUTDIR/runs/<method>/<model>/``,
so an interrupted evaluation resumes where it stopped. The outputs are one eval_model-schema
JSON per method (``python -m compressai.utils.plot`` draws them), ``bd.md``/``bd.json`` (BD-rate
and BD-PSNR against ``none`` with the bjontegaard package; in MS-SSIM dB for runs that weigh
MS-SSIM), ``rd.png`` and ``convergence.png``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from pathlib import Path

import bjontegaard as bd
from . import models, pipeline
from .errors import SgafastError
from .images import center_crop, read_image, write_png
from .inputs import Item, collect
from .io import atomic_write_bytes, atomic_write_json
from .ops.rounding import METHODS, THREE_CLASS_METHODS
from .progress import Progress
from .refine import NO_REFINEMENT, RefineConfig

ANCHOR = NO_REFINEMENT
JPEG = "jpeg"
# the quality axis of the curves and BD tables for a run's distortion: (name in bd.json,
# name in bd.md, axis)
QUALITIES = {"mse": ("psnr", "PSNR", "PSNR-RGB [dB]"),
             "ms-ssim": ("msssim_db", "MS-SSIM", "MS-SSIM [dB], -10 log10(1 - MS-SSIM)")}


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One curve of the evaluation: a method, its class count and optionally its own Adam lr."""

    method: str
    classes: int
    lr: float | None = None  # None: the run's --lr

    @property
    def label(self) -> str:
        name = self.method if self.classes == 2 else f"{self.method}-3c"
        return name if self.lr is None else f"{name}-lr{self.lr:g}"


def _learning_rate(item: str, text: str) -> float:
    try:
        rate = float(text)
    except ValueError:
        rate = math.nan
    if not rate > 0:
        raise SgafastError(f"--methods: {item!r}: the learning rate after @ must be a number > 0")
    return rate


def parse_methods(text: str, default_classes: int = 2) -> list[MethodSpec]:
    """``none,ssl,linear:3,ste@1e-4`` -> specs; ``:3`` asks for the three-class form and
    ``@LR`` gives that method its own learning rate (STE diverges at the SGA methods' 5e-3)."""
    specs = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        head, _, lr = item.partition("@")
        name, _, classes = head.partition(":")
        if name not in METHODS + (NO_REFINEMENT,):
            raise SgafastError(f"--methods: unknown method {name!r}; choose from "
                               f"{', '.join(METHODS + (NO_REFINEMENT,))}")
        if classes and classes not in ("2", "3"):
            raise SgafastError(f"--methods: {item!r}: the class count must be 2 or 3")
        k = int(classes) if classes else (
            default_classes if name in THREE_CLASS_METHODS else 2)
        if k == 3 and name not in THREE_CLASS_METHODS:
            raise SgafastError(f"--methods: {name!r} has no three-class form")
        specs.append(MethodSpec(name, k, _learning_rate(item, lr) if lr else None))
    if not specs:
        raise SgafastError("--methods: give at least one method")
    if ANCHOR not in [s.method for s in specs]:
        specs.insert(0, MethodSpec(ANCHOR, 2))  # every comparison is against the base codec
    return list(dict.fromkeys(specs))


def resolve_models(text: str) -> list[str]:
    """``ladder`` -> the bundled ladder (ascending lambda); otherwise a comma list of specs."""
    if text == "ladder":
        return models.ladder()
    return [s.strip() for s in text.split(",") if s.strip()]


def model_label(spec: str) -> str:
    """A file-safe name for a model spec: a bundled name, a file's stem, or ARCH-QUALITY."""
    name = Path(spec).stem if Path(spec).suffix else spec
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def prepare_inputs(dataset: list[Path], outdir: Path, crop: int | None,
                   limit: int | None) -> tuple[list[Item], list[tuple[str, str]]]:
    """The dataset's images (first ``limit``), centre-cropped once into OUTDIR/inputs if asked,
    and the (source, reason) of each input refused (``inputs.collect``) or not croppable.

    ``dataset``: files, folders and @lists, as ``sgafast refine`` takes them.
    """
    if limit is not None and limit < 1:
        raise SgafastError(f"--limit must be >= 1, got {limit}")
    items, refused = collect([str(d) for d in dataset])
    if not items:
        raise SgafastError(f"{', '.join(map(str, dataset))}: no readable images "
                           f"({'; '.join(f'{s}: {r}' for s, r in refused)})")
    items = items[:limit] if limit else items
    if not crop:
        return items, refused
    prepared = []
    for item in items:
        target = item.output(outdir / "inputs", ".png")
        if not target.is_file():
            try:
                write_png(target, center_crop(read_image(item.path), crop))
            except SgafastError as exc:
                refused.append((str(item.path), str(exc)))
                continue
        prepared.append(Item(f"{item.stem}.png", target))
    return prepared, refused


def eval_model_json(spec: MethodSpec, per_model: list[tuple[str, dict]]) -> dict:
    """One eval_model-schema document for a method: one entry per ladder point."""
    rows = [pipeline.summary(records, spec.label, name) for name, records in per_model]
    keys = rows[0]["results"].keys()
    return {
        "name": f"sgafast-{spec.label}",
        "description": f"sgafast {spec.label} on {', '.join(n for n, _ in per_model)}",
        "results": {k: [r["results"][k][0] for r in rows] for k in keys},
        "bpp-likelihood": [r["bpp-likelihood"][0] for r in rows],
        "rd-loss": [r["rd-loss"][0] for r in rows],
        "models": [name for name, _ in per_model],
    }


def ms_ssim_db(value: float) -> float:
    """MS-SSIM in dB, -10 log10(1 - MS-SSIM), as CompressAI's plots draw it."""
    return -10 * math.log10(1 - value)


def quality(doc: dict, distortion: str = "mse") -> list[float]:
    """A curve's quality axis: PSNR-RGB, or MS-SSIM in dB for the ms-ssim distortion."""
    if distortion == "ms-ssim":
        return [ms_ssim_db(v) for v in doc["results"]["ms-ssim-rgb"]]
    return doc["results"]["psnr-rgb"]


def run_distortion(records: dict[str, dict[str, list[dict]]]) -> str:
    """ms-ssim where every record's R-D loss weighs MS-SSIM, else mse (the BD tables' axis)."""
    kinds = {r.get("distortion", "mse") for per_model in records.values()
             for rows in per_model.values() for r in rows}
    return "ms-ssim" if kinds == {"ms-ssim"} else "mse"


def bd_row(anchor: dict, test: dict, rate_key: str,
           distortion: str = "mse") -> tuple[float | None, float | None]:
    """(BD-rate in %, BD-PSNR in dB) of ``test`` against ``anchor`` for one rate measure, over
    ``quality``'s axis (BD-MS-SSIM in dB for the ms-ssim distortion).

    None where the curves do not overlap (the bjontegaard package returns NaN there).
    """
    def rate(doc):
        return doc["results"]["bpp"] if rate_key == "bpp" else doc["bpp-likelihood"]

    curves = (rate(anchor), quality(anchor, distortion), rate(test), quality(test, distortion))
    options = dict(method="akima", require_matching_points=False, min_overlap=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = bd.bd_rate(*curves, **options), bd.bd_psnr(*curves, **options)
    return tuple(None if math.isnan(v) else float(v) for v in values)


def bd_table(curves: dict[str, dict], anchor: str = ANCHOR,
             distortion: str = "mse") -> list[dict]:
    """One row per curve against ``anchor``: BD-rate and BD-quality (``bd_psnr_*``, or
    ``bd_msssim_db_*`` for the ms-ssim distortion) per rate measure, the R-D loss change."""
    name = QUALITIES[distortion][0]
    rows = []
    for label, doc in curves.items():
        if label == anchor:
            continue
        row = {"method": label}
        for key in ("bpp", "likelihood"):
            rate, gain = bd_row(curves[anchor], doc, key, distortion)
            row[f"bd_rate_{key}"], row[f"bd_{name}_{key}"] = rate, gain
        rd_a, rd_t = curves[anchor]["rd-loss"], doc["rd-loss"]
        row["rd_loss_change"] = sum((t - a) / a for a, t in zip(rd_a, rd_t)) / len(rd_a) * 100 \
            if len(rd_a) == len(rd_t) else None
        rows.append(row)
    return rows


def _fmt(x, digits: int, unit: str) -> str:
    return "n/a" if x is None else f"{x:+.{digits}f} {unit}"


def bd_markdown(rows: list[dict], anchor: str = ANCHOR, distortion: str = "mse") -> str:
    name, short, axis = QUALITIES[distortion]
    lines = [f"BD against `{anchor}` ({axis}; akima interpolation; negative BD-rate is better)",
             "",
             f"| method | BD-rate (bitstream) | BD-{short} (bitstream) | BD-rate (likelihood) | "
             f"BD-{short} (likelihood) | mean true R-D loss change |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {_fmt(r['bd_rate_bpp'], 2, '%')} | "
                     f"{_fmt(r[f'bd_{name}_bpp'], 3, 'dB')} | "
                     f"{_fmt(r['bd_rate_likelihood'], 2, '%')} | "
                     f"{_fmt(r[f'bd_{name}_likelihood'], 3, 'dB')} | "
                     f"{_fmt(r['rd_loss_change'], 2, '%')} |")
    return "\n".join(lines) + "\n"


def plot_rd(curves: dict[str, dict], path: Path, title: str, distortion: str = "mse") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for label, doc in curves.items():
        ax.plot(doc["results"]["bpp"], quality(doc, distortion), marker="o", label=label,
                linestyle="--" if label in (ANCHOR, JPEG) else "-")
    ax.set(xlabel="bit rate [bpp] (bitstream)", ylabel=QUALITIES[distortion][2], title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    _save_figure(fig, path)


def plot_convergence(histories: dict[str, dict[str, list[dict]]], path: Path) -> None:
    """Mean true R-D loss against iteration, one panel per model, one curve per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model_names = list(next(iter(histories.values())).keys())
    fig, axes = plt.subplots(1, len(model_names), figsize=(4.2 * len(model_names), 3.8),
                             squeeze=False)
    for ax, name in zip(axes[0], model_names):
        for label, per_model in histories.items():
            records = per_model[name]
            tracked = [r["history"]["true_loss"] for r in records if r["history"]["true_loss"]]
            if not tracked:
                continue
            steps = [t for t, _ in tracked[0]]
            mean = [sum(h[i][1] for h in tracked) / len(tracked) for i in range(len(steps))]
            ax.plot(steps, mean, label=label)
        ax.set(title=name, xlabel="iteration", ylabel="mean true R-D loss")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def run_eval(dataset: list[Path], outdir: Path, specs: list[MethodSpec], model_names: list[str],
             base_cfg: RefineConfig, *, crop=None, limit=None, batch_size=1, device="cpu",
             jpeg_qualities=None, progress=True, arch=None, overwrite=False) -> dict:
    """Run every (method, model) pair, then write the curves, the BD table and the plots;
    ``overwrite``: replace runs made with other settings (else they are refused)."""
    labels = [model_label(m) for m in model_names]
    if len(set(labels)) != len(labels):
        raise SgafastError(f"--models: two models share a name ({', '.join(labels)}); "
                           "rename the files")
    inputs, refused = prepare_inputs(dataset, outdir, crop, limit)
    records: dict[str, dict[str, list[dict]]] = {s.label: {} for s in specs}
    failures, counts = [], pipeline.Counts()
    jobs = Progress(len(specs) * len(model_names), "eval", show=progress, unit="run")
    for model_name, label in zip(model_names, labels):
        model = models.load(model_name, device, arch)
        for spec in specs:
            cfg = base_cfg.with_options(method=spec.method, classes=spec.classes,
                                        lr=spec.lr or base_cfg.lr)
            run = outdir / "runs" / spec.label / label
            report = pipeline.refine_items(inputs, run, model, cfg, batch_size=batch_size,
                                           progress=False, overwrite=overwrite, refused=refused)
            records[spec.label][label] = report.records
            failures += report.failures
            counts += report.counts
            jobs.advance(f"{spec.label} on {label}: "
                         f"{report.counts.describe(run, pipeline.run_folder(run) / 'failed')}",
                         model=label, method=spec.label)
    jobs.close()
    curves = {s.label: eval_model_json(s, list(records[s.label].items())) for s in specs}
    if jpeg_qualities:
        from .jpeg import jpeg_curve

        curves[JPEG] = jpeg_curve([item.path for item in inputs], jpeg_qualities)
    for label, doc in curves.items():
        atomic_write_json(outdir / f"{label}.json", doc)
    distortion = run_distortion(records)
    rows = bd_table({k: v for k, v in curves.items() if k != JPEG}, distortion=distortion)
    atomic_write_json(outdir / "bd.json", rows)
    tables = [bd_markdown(rows, distortion=distortion)] if rows else []
    if JPEG in curves:  # the base codec (the ladder) against JPEG
        jpeg_rows = bd_table({JPEG: curves[JPEG], ANCHOR: curves[ANCHOR]}, anchor=JPEG,
                             distortion=distortion)
        tables.append(bd_markdown(jpeg_rows, anchor=JPEG, distortion=distortion))
    text = "\n".join(tables)
    atomic_write_bytes(outdir / "bd.md", text.encode())
    refined = {label: per_model for label, per_model in records.items() if label != ANCHOR}
    plots = [outdir / "rd.png"] + ([outdir / "convergence.png"] if refined else [])
    plot_rd(curves, plots[0], f"{len(inputs)} images"
            + (f", {base_cfg.iters} iterations" if refined else ""), distortion)
    if refined:  # the base codec alone has no iterations to draw
        plot_convergence(refined, plots[1])
    return {"curves": curves, "bd": rows, "failures": failures, "counts": counts,
            "plots": plots}
