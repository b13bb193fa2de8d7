"""The ``sgafast`` command line: refine, merge, decode, eval, train, models (argparse lives here)."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from pathlib import Path

import torch

from . import __version__, families
from . import shard as sharding
from .codec import DISTORTIONS
from .errors import SgafastError
from .io import output_folder
from .ops.rounding import BACKENDS, METHODS
from .precision import PRECISIONS


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SgafastError("--device cuda: no CUDA device is available; use --device cpu")
    return torch.device(name)


def number(kind=float, *, low=0.0, low_ok=False, high=math.inf):
    """An argparse type: a finite ``kind`` above ``low`` (or equal, with ``low_ok``), <= high."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        inside = (value >= low if low_ok else value > low) and value <= high
        if not (math.isfinite(value) and inside):
            bound = f">= {low:g}" if low_ok else f"> {low:g}"
            upper = f" and <= {high:g}" if math.isfinite(high) else ""
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}{upper}, "
                                             f"got {text}")
        return value
    return parse


POSITIVE = number()
NON_NEGATIVE = number(low_ok=True)
COUNT = number(int, low_ok=True)
POSITIVE_COUNT = number(int)


def int_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated positive integers."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma list of integers") from None
    if not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"every entry must be > 0, got {text}")
    return values


def schedule(text: str):
    """A --schedule value (``sgafast.ops.schedule.parse_schedule``)."""
    from .ops.schedule import parse_schedule

    try:
        return parse_schedule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arch_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=None, choices=tuple(families.ARCHITECTURES), metavar="ARCH",
                   help="the architecture of a plain CompressAI state dict whose weights fit "
                   "several: " + ", ".join(families.ARCHITECTURES) + " (default: inferred "
                   "from the weights)")


def add_refine_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``refine`` and ``eval``: the rounding, the schedule, the optimiser.

    Defaults are not repeated here: an option left out keeps ``Rounding``'s or
    ``RefineConfig``'s default, which the help text quotes.
    """
    from .ops.rounding import DEFAULT_A, Rounding
    from .ops.schedule import PAPER_LR, TAU_RATE
    from .refine import COMPILE_FROM_ITERS, CPU_COMPILE_FROM_WORK, STOP_POINTS, RefineConfig

    run, rounding = RefineConfig(), Rounding()
    unset = argparse.SUPPRESS
    p.add_argument("--classes", type=int, default=unset, choices=(2, 3),
                   help=f"candidates per latent (default {rounding.classes})")
    p.add_argument("--a", type=POSITIVE, default=unset,
                   help=f"SSL parameter (default {DEFAULT_A[2]} two-class, "
                   f"{DEFAULT_A[3]} three-class)")
    p.add_argument("--r", type=number(high=1.0), default=unset,
                   help=f"three-class r (default {rounding.r})")
    p.add_argument("--n", type=POSITIVE, default=unset,
                   help=f"three-class n (default {rounding.n})")
    p.add_argument("--iters", type=COUNT, default=unset, help=f"iterations (default {run.iters})")
    p.add_argument("--schedule", type=schedule, default=unset, metavar="SCHEDULE",
                   help="how tau and the learning rate move over the run: budget (spread over "
                   "--iters), paper (docs/method.md §4, whatever --iters), or either with fields "
                   f"changed, e.g. budget:tau_end=0.02 (default {run.schedule.describe()}; paper "
                   "where --tau-rate is given)")
    p.add_argument("--lr", type=POSITIVE, default=unset,
                   help=f"Adam's (peak) learning rate (default: the schedule's, {run.lr} for "
                   f"{run.schedule.describe()}, {PAPER_LR} for paper)")
    p.add_argument("--tau-max", type=POSITIVE, default=unset,
                   help="temperature cap (default 0.5 for atanh, 1.0 otherwise)")
    p.add_argument("--tau-rate", type=NON_NEGATIVE, default=unset,
                   help=f"the paper schedule's temperature decay rate c in exp(-c t); giving it "
                   f"chooses the paper schedule (default {TAU_RATE} there; 0 keeps tau at "
                   "--tau-max)")
    p.add_argument("--lmbda", type=POSITIVE, default=unset,
                   help="R-D trade-off (default: the base model's training lambda, where it "
                   "weighs the same distortion)")
    p.add_argument("--distortion", default=unset, choices=DISTORTIONS,
                   help="what --lmbda weighs: 255^2 * MSE or 1 - MS-SSIM of each image, as "
                   "CompressAI trains (default: the model's, mse but for ARCH:Q:ms-ssim and "
                   "models trained with --distortion ms-ssim)")
    p.add_argument("--seed", type=COUNT, default=unset, help=f"run seed (default {run.seed})")
    p.add_argument("--track-every", type=COUNT, default=unset,
                   help=f"compute the true R-D loss every k iterations (default "
                   f"{run.track_every}; 0: never)")
    p.add_argument("--stop-below", type=NON_NEGATIVE, default=unset, metavar="EPS",
                   help=f"stop an image whose true loss improved by less than the fraction EPS "
                   f"over its last {STOP_POINTS} tracking points (default: never)")
    p.add_argument("--backend", default=unset, choices=BACKENDS,
                   help="rounding kernels: auto (fused on CUDA), torch or triton (default auto)")
    p.add_argument("--compile", default=unset, action=argparse.BooleanOptionalAction,
                   help="compile the step with torch.compile (a CUDA graph on CUDA); default: "
                   "where it pays: on the CPU for a padded size and batch size whose images "
                   f"share {CPU_COMPILE_FROM_WORK:.2g} pixel-iterations or more, on CUDA for "
                   f"runs of {COMPILE_FROM_ITERS} iterations or more")
    p.add_argument("--precision", default=unset, choices=PRECISIONS,
                   help="arithmetic of the transforms during refinement (default fp32; tf32 "
                   "and bf16 are faster on GPUs; rounding and rates stay fp32)")
    p.add_argument("--batch-size", type=POSITIVE_COUNT, default=1,
                   help="same-size images per batch (default 1)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to refine (default auto: CUDA when available)")
    p.add_argument("--quiet", action="store_true",
                   help="print only failures and the last line (default: a progress bar on a "
                   "terminal, a line per finished image in a log)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace results in OUTDIR made with other settings (default: refuse)")


CONFIG_OPTIONS = ("classes", "a", "r", "n", "iters", "schedule", "lr", "tau_max", "tau_rate",
                  "lmbda", "distortion", "seed", "track_every", "stop_below", "backend",
                  "compile", "precision")


def refine_config(args: argparse.Namespace, method: str):
    """The RefineConfig of the options given on the command line (the rest: its defaults)."""
    from .refine import RefineConfig

    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if hasattr(args, k)}
    if given.get("tau_rate") == 0:
        print("sgafast: note: --tau-rate 0 keeps tau at --tau-max for the whole run "
              "(no annealing)", file=sys.stderr)
    return RefineConfig.for_method(method, **given)


def report_failures(failures) -> None:
    for f in failures:
        print(f"sgafast: {f.source}: {f.reason}" if not f.reason.startswith(f.source)
              else f"sgafast: {f.reason}", file=sys.stderr)


def print_records(records: list[dict]) -> None:
    for r in records:
        print(f"{r['name']}: {r['bpp']:.4f} bpp {r['psnr']:.2f} dB "
              f"(base {r['base']['bpp']:.4f} bpp {r['base']['psnr']:.2f} dB), "
              f"R-D loss {r['rd_loss']:.4f} (base {r['base']['rd_loss']:.4f})")


def cmd_refine(args) -> int:
    """Refine this process's share; under torchrun rank 0 then counts every rank's items.

    Exit 1 when an image failed, except under torchrun, where every rank of a run that ended
    exits 0 (torchrun reports any other code as a crash) and the last line counts the failures.
    """
    from . import models, pipeline
    from .inputs import collect

    cfg = refine_config(args, args.method)
    outdir = output_folder(args.output)
    items, refused = collect(args.inputs)  # a mistyped path is refused before the model loads
    shard = sharding.from_environment()
    sharding.rank_timeout()  # a bad $SGAFAST_RANK_TIMEOUT is refused now, not after the work
    sharding.watch_launcher(shard)
    device = sharding.device_for(shard, resolve_device(args.device))
    model = models.load(args.model, device, args.arch)
    report = pipeline.refine_share(items, refused, outdir, model, cfg, shard=shard,
                                   batch_size=args.batch_size, progress=not args.quiet,
                                   overwrite=args.overwrite)
    if len(report.records) <= 20 and not args.quiet:
        print_records(report.records)
    report_failures(report.failures)
    failed_in = pipeline.run_folder(outdir) / "failed"
    if shard.gathers:  # this rank's share, before rank 0's count of the whole run
        print(f"sgafast: {shard.label}{report.counts.describe(outdir, failed_in)}",
              file=sys.stderr)
    counts = sum(sharding.gather(shard, report.counts), pipeline.Counts())
    where = ""
    if shard.rank == 0 and counts.done + counts.skipped:
        pipeline.merge(outdir)
        where = f"; summary in {pipeline.run_folder(outdir) / 'summary.json'}"
    if shard.rank == 0 or not shard.gathers:
        label = f"all {shard.world} ranks: " if shard.gathers else shard.label
        print(f"sgafast: {label}{counts.describe(outdir, failed_in)}{where}", file=sys.stderr)
    return 1 if counts.failed and not shard.gathers else 0


def jpeg_qualities(text: str) -> list[int]:
    """An argparse type: ``--jpeg 10,30,50``, comma-separated Pillow qualities 1-95."""
    try:
        qualities = [int(q) for q in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integer qualities "
                                         "1-95, e.g. 10,30,50,70,90") from None
    if not all(1 <= q <= 95 for q in qualities):
        raise argparse.ArgumentTypeError(f"{text}: Pillow's qualities run from 1 to 95")
    return qualities


def cmd_eval(args: argparse.Namespace) -> int:
    from . import evaluate
    from .ops.rounding import Rounding

    specs = evaluate.parse_methods(args.methods, getattr(args, "classes", Rounding().classes))
    models = evaluate.resolve_models(args.models)
    out = output_folder(args.output)
    result = evaluate.run_eval(
        [Path(d) for d in args.dataset], out, specs, models, refine_config(args, "ssl"),
        crop=args.crop, limit=args.limit, batch_size=args.batch_size,
        device=resolve_device(args.device), arch=args.arch, jpeg_qualities=args.jpeg,
        progress=not args.quiet, overwrite=args.overwrite)
    print((out / "bd.md").read_text())
    report_failures(dict.fromkeys(result["failures"]))  # a refused input fails in every run
    counts, runs = result["counts"], out / "runs"
    done = counts.describe(runs, runs / "METHOD" / "MODEL" / "_sgafast" / "failed", "results")
    print(f"sgafast: eval of {len(specs)} methods x {len(models)} models: {done}; curves in "
          f"{out}/METHOD.json, BD table in {out / 'bd.md'}, plots in "
          f"{', '.join(map(str, result['plots']))}", file=sys.stderr)
    return 1 if counts.failed else 0


def cmd_merge(args) -> int:
    from . import pipeline

    doc = pipeline.merge(Path(args.output))
    print(f"{doc['images']} image records merged into "
          f"{pipeline.run_folder(Path(args.output))}/summary.json and records.jsonl")
    return 0


def cmd_decode(args) -> int:
    """Check the output path and the file, then load the model and decode (the slow part)."""
    from . import bitstream, models
    from .images import write_png

    output = decode_output(args.output)
    path = Path(args.input)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SgafastError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    bitstream.parse(data, str(path))  # refuse a bad file before the model loads
    model = models.load(args.model, resolve_device(args.device), args.arch)
    x_hat = bitstream.decode(model, data, str(path))
    write_png(output, x_hat[0])
    print(f"{path} -> {output} ({x_hat.shape[-1]}x{x_hat.shape[-2]})")
    return 0


def decode_output(name: str) -> Path:
    """The ``-o`` of ``decode``: a .png file whose folder exists or can be made."""
    output = Path(name)
    if output.is_dir():
        raise SgafastError(f"-o {name}: is a folder; give the PNG file to write, "
                           f"e.g. {output / 'decoded.png'}")
    if output.suffix.lower() != ".png":
        raise SgafastError(f"-o {name}: decode writes PNG; give a file name ending in .png")
    output_folder(output.parent)
    return output


def cmd_train(args) -> int:
    from .train import TrainConfig, state_path, train

    cfg = TrainConfig(lmbda=args.lmbda, distortion=args.distortion, arch=args.arch, n=args.N,
                      m=args.M, groups=args.groups, crop=args.crop, batch_size=args.batch_size,
                      steps=args.steps, seed=args.seed, init=args.init)
    skipped = train(args.image_dir, args.output, cfg, resume=args.resume)
    print(f"sgafast: trained {args.arch} for {args.steps} steps ({skipped} skipped for a "
          f"non-finite loss); model written to {args.output}, training state to "
          f"{state_path(args.output)} (--resume continues from it)", file=sys.stderr)
    return 0


def cmd_models(args) -> int:
    from . import models

    aliases = {target: alias for alias, target in models.ALIASES.items()}
    for name, path in models.bundled_models().items():
        d = models.load(name).describe()
        label = f"{name} ({aliases[name]})" if name in aliases else name
        print(f"{label:14s} {d['architecture']:22s} N={d['N']:<4d} M={d['M']:<4d} "
              f"lambda={d['lmbda']:<8g} {path.stat().st_size / 1e6:.1f} MB")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sgafast", description="Test-time latent refinement (SGA/SGA+) for CompressAI "
        "image codecs: smaller bitstreams for the unchanged decoder.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "refine", help="refine images' latents and write bitstreams",
        description="Refine each image's latents for its own rate-distortion loss (SGA/SGA+), "
        "then write OUTDIR/NAME.bin (a bitstream the unchanged CompressAI decoder reads) and "
        "OUTDIR/NAME.json (its record); OUTDIR/_sgafast/ holds the summary and the failures. "
        "A rerun skips what is done. Options left out keep the defaults shown.")
    p.add_argument("inputs", nargs="+",
                   help="image files, folders (recursive) and @lists (a path per line)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--model", default="default",
                   help="bundled name, checkpoint path or ARCH:QUALITY[:ms-ssim] (default: "
                   "default)")
    add_arch_option(p)
    p.add_argument("--method", default="ssl", choices=METHODS + ("none",),
                   help="the rounding during refinement (docs/method.md); none: the base codec "
                   "alone (default ssl)")
    add_refine_options(p)
    p.set_defaults(func=cmd_refine)

    p = sub.add_parser("merge", help="merge the per-image records of a run (all ranks) into "
                       "OUTDIR/_sgafast/summary.json and records.jsonl")
    p.add_argument("output", help="the run's output folder")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("decode", help="decode a .bin with the unchanged CompressAI decoder")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="PNG file to write (.png)")
    p.add_argument("--model", default="default",
                   help="the model the file was encoded with (default: default)")
    add_arch_option(p)
    p.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("train", help="train a base model of any supported architecture")
    p.add_argument("image_dir")
    p.add_argument("-o", "--output", required=True, help="model file to write")
    p.add_argument("--arch", default="mbt2018-mean", choices=tuple(families.ARCHITECTURES),
                   help="architecture (CompressAI's registry name; default: mbt2018-mean)")
    p.add_argument("--lmbda", type=POSITIVE, default=0.0067,
                   help="R-D trade-off (default 0.0067; CompressAI's MS-SSIM models use "
                   "2.40..220 for qualities 1..8)")
    p.add_argument("--distortion", default="mse", choices=DISTORTIONS,
                   help="what --lmbda weighs: 255^2 * MSE or 1 - MS-SSIM, as CompressAI "
                   "trains (default mse; ms-ssim needs --crop 161 or more)")
    p.add_argument("--N", type=POSITIVE_COUNT, default=64)
    p.add_argument("--M", type=POSITIVE_COUNT, default=96, help="latent channels (cheng2020-*: N)")
    p.add_argument("--groups", type=int_list, default=None,
                   help="ELIC's channel groups summing to M, e.g. 8,8,16,32,32")
    p.add_argument("--crop", type=POSITIVE_COUNT, default=128)
    p.add_argument("--batch-size", type=POSITIVE_COUNT, default=8)
    p.add_argument("--steps", type=POSITIVE_COUNT, default=15000)
    p.add_argument("--seed", type=COUNT, default=0)
    p.add_argument("--init", default=None,
                   help="start every layer that fits from this model (a fine-tune)")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.train-state")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("models", help="list the bundled base models")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("eval", help="R-D curves and BD tables of methods over a model ladder")
    p.add_argument("dataset", nargs="+", help="image files, folders and @lists")
    p.add_argument("-o", "--output", required=True, help="output folder (resumable)")
    p.add_argument("--methods", default="none,ste,noise,atanh,linear,cosine,ssl",
                   help="comma list; name:3 for the three-class form, name@LR for a learning "
                   "rate of its own, e.g. none,ste@1e-4,ssl,linear:3")
    p.add_argument("--models", default="ladder",
                   help="'ladder' (the bundled ladder) or a comma list of model specs")
    add_arch_option(p)
    p.add_argument("--crop", type=POSITIVE_COUNT, default=None, help="centre crop size")
    p.add_argument("--limit", type=POSITIVE_COUNT, default=None, help="first N images only")
    p.add_argument("--jpeg", type=jpeg_qualities, default=None,
                   help="add a JPEG curve at these Pillow qualities, e.g. 10,20,30,50,70,90")
    add_refine_options(p)
    p.set_defaults(func=cmd_eval)
    return parser


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM takes Ctrl-C's path (finished images are written, temporary files removed),
        # and so does SIGINT even where the shell started us ignoring it (a background job)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _interrupt)
    try:
        return args.func(args)
    except SgafastError as exc:
        print(f"sgafast: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = ("the training state of the last save is kept; the same command with --resume "
                  "continues" if args.command == "train" else
                  "finished images are written, and the same command resumes the run")
        print(f"sgafast: interrupted; {resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
