"""The refinement driver: optimise one batch of images' latents (docs/method.md §3-5).

The loss of a batch is the sum of per-image losses and every image's noise comes from (its own
seed, iteration, latent), so each image follows the trajectory it would follow alone (up to
the float rounding of batched convolutions).
The loop keeps everything on the device: the iteration counter is a tensor, the relaxed losses
go into a device buffer, and the host reads nothing back until the end (and at the every-k
tracking points, which are outside the step).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import sys
import time

import torch
from torch.profiler import record_function
from tqdm import tqdm

from . import codec, step
from .errors import SgafastError
from .images import Canvas, Geometry
from .models import BaseModel, as_model, check_coder_ready
from .ops.rounding import BACKENDS, Rounding
from .ops.schedule import DEFAULT_SCHEDULE, PRESETS, TAU_RATE, Schedule, default_tau_max
from .precision import check_precision, tensor_cores

NO_REFINEMENT = "none"
STOP_POINTS = 2  # stop_below looks this many tracking points back
COMPILE_FROM_ITERS = 500  # compile=None on CUDA: shorter runs do not pay back the warm-up
# compile=None on the CPU: the padded pixel-iterations that will share one compiled step (one
# padded size and batch size) for its warm-up to pay back; from benchmarks/results/sizes
# (2026-12-06-cpu.md, idle 2-core build machine): 261.2 s / 8 = 32.7 s per compilation against
# 895 - 574 = 321 ms saved per iteration and megapixel
CPU_COMPILE_FROM_WORK = 100_000_000
# compiled steps (padded size x batch size) dynamo keeps per process on the CPU, where a step
# records no CUDA graph: far above dynamo's default of 8, so a folder of many sizes whose steps
# pay their compilation keeps compiling; on CUDA dynamo's default stays, as the bound on the
# number of recorded CUDA graphs
CPU_COMPILED_STEPS = 64
LATENT_LIMIT = 2.0**24  # beyond, a latent's rounding is inexact in fp32: diverged, not coded


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Everything that defines a refinement run (defaults: docs/method.md §4-5);
    ``rounding=None``: none."""

    rounding: Rounding | None = Rounding()
    iters: int = 2000
    lr: float | None = None  # None: the schedule's (peak) learning rate
    # None: DEFAULT_SCHEDULE, or the paper's where tau_rate (a paper-schedule setting) is given
    schedule: Schedule | None = None
    tau_max: float | None = None  # None: the method's default (docs/method.md §4), resolved here
    tau_rate: float | None = None  # the paper schedule's decay rate (None: TAU_RATE)
    lmbda: float | None = None  # None: the base model's training lambda
    # what lambda weighs (codec.DISTORTIONS: mse, ms-ssim); None: the base model's
    distortion: str | None = None
    seed: int = 0
    track_every: int = 100  # true R-D loss every k iterations (0: never)
    # an image whose true loss improved by less than this fraction over its last STOP_POINTS
    # tracking points stops there (None: every image runs all iters)
    stop_below: float | None = None
    backend: str = "auto"
    # None: compile where it pays (see compiles) for a model whose family compiles
    # (see Family.compiles)
    compile: bool | None = None
    precision: str = "fp32"  # of the transforms: fp32, tf32 or bf16 (see sgafast.precision)

    @classmethod
    def for_method(cls, method: str = "ssl", **options) -> RefineConfig:
        """A config from a method name (or "none") and options for the rounding or the run."""
        rounding_fields = {f.name for f in dataclasses.fields(Rounding)} - {"method"}
        params = {k: options.pop(k) for k in list(options) if k in rounding_fields}
        if method == NO_REFINEMENT:
            return cls(rounding=None, **options)
        return cls(rounding=Rounding(method, **params), **options)

    def __post_init__(self):
        check_precision(self.precision)
        if self.distortion not in (None, *codec.DISTORTIONS):
            raise SgafastError(f"distortion must be one of {', '.join(codec.DISTORTIONS)}, "
                               f"got {self.distortion!r}")
        if self.backend not in BACKENDS:
            raise SgafastError(f"backend must be one of {', '.join(BACKENDS)}, "
                               f"got {self.backend!r}")
        for name in ("iters", "track_every", "seed"):
            if getattr(self, name) < 0:
                raise SgafastError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, value in (("lr", self.lr), ("lmbda", self.lmbda), ("tau_max", self.tau_max)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise SgafastError(f"{name} must be a finite number > 0, got {value}")
        if self.tau_rate is not None and not (math.isfinite(self.tau_rate)
                                              and self.tau_rate >= 0):
            raise SgafastError(f"tau_rate must be a finite number >= 0, got {self.tau_rate}")
        if self.schedule is None:
            object.__setattr__(self, "schedule", PRESETS[
                "paper" if self.tau_rate is not None else DEFAULT_SCHEDULE])
        if self.schedule.kind == "paper" and self.tau_rate is None:
            object.__setattr__(self, "tau_rate", TAU_RATE)
        if self.schedule.kind != "paper" and self.tau_rate is not None:
            raise SgafastError("tau_rate (--tau-rate) sets the paper schedule's decay; a budget "
                               "schedule spreads tau over the iterations (set its end with "
                               "budget:tau_end=X, or use the paper schedule)")
        if self.tau_max is None and self.rounding is not None:
            object.__setattr__(self, "tau_max", default_tau_max(self.rounding.method))
        if self.lr is None:
            object.__setattr__(self, "lr", self.schedule.lr)
        if self.stop_below is not None and not (self.stop_below >= 0 and self.track_every):
            raise SgafastError("stop_below needs true-loss tracking (track_every > 0) and a "
                               f"relative improvement >= 0, got {self.stop_below}")

    def with_options(self, **options) -> RefineConfig:
        """This config with run options and rounding options (method, classes, a, ...) replaced."""
        rounding_fields = {f.name for f in dataclasses.fields(Rounding)}
        rounding = {k: options.pop(k) for k in list(options) if k in rounding_fields}
        if (options.get("tau_rate") is not None and "schedule" not in options
                and self.schedule == PRESETS[DEFAULT_SCHEDULE]):
            options["schedule"] = None  # a tau_rate asks for the paper schedule (see schedule)
        for name in ("lr", "tau_rate"):  # their defaults depend on the schedule
            if "schedule" in options and name not in options:
                options[name] = None
        if not rounding:
            return dataclasses.replace(self, **options)
        base = dataclasses.asdict(self.rounding) if self.rounding else {}
        if "classes" in rounding and "a" not in rounding:
            base.pop("a", None)  # the default a depends on the class count
        if "method" in rounding and "tau_max" not in options:
            options["tau_max"] = None  # the default tau_max depends on the method
        run = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "rounding"}
        return RefineConfig.for_method(**{**base, **rounding}, **{**run, **options})

    @property
    def method(self) -> str:
        return self.rounding.method if self.rounding else NO_REFINEMENT

    @property
    def refines(self) -> bool:
        return self.rounding is not None and self.iters > 0

    def compiles(self, family, work: int, device: torch.device) -> bool:
        """Whether a batch compiles its step: as told, or by default where the warm-up pays
        back: on the CPU when ``work`` (the pixel-iterations of the run that will share this
        batch's compiled step) reaches CPU_COMPILE_FROM_WORK, elsewhere for runs of
        COMPILE_FROM_ITERS iterations or more."""
        if self.compile is not None:
            return self.compile
        if device.type == "cpu":
            return family.compiles and work >= CPU_COMPILE_FROM_WORK
        return family.compiles and self.iters >= COMPILE_FROM_ITERS


@dataclasses.dataclass
class Refined:
    """One image's refined (continuous) latents and its optimisation history."""

    latents: tuple[torch.Tensor, ...]  # (y, z), or (y,) without a hyperprior; batch of one
    base: tuple[torch.Tensor, ...]  # the amortised encoder's latents, the starting point
    geometry: Geometry
    relaxed_loss: list[float]  # every iteration
    true_loss: list[tuple[int, float]]  # (updates so far, loss) every track_every and at the end
    seconds: float
    tracking_seconds: float
    warmup_seconds: float  # the first step, compilation included, within ``seconds``
    diverged_at: int | None  # the first iteration whose loss was not finite
    peak_memory_bytes: int | None = None  # the batch's CUDA peak, per image; None on a CPU
    compiled: bool = False  # whether the step ran compiled (else eagerly)
    stopped_at: int | None = None  # the update count where stop_below stopped it

    @property
    def codable(self) -> bool:
        """Whether the entropy coder can take these latents: finite, and small enough that
        CompressAI's int32 symbols cannot overflow (its rANS coder loops forever on NaN)."""
        return self.diverged_at is None and all(
            bool(torch.isfinite(v).all() and v.abs().max() < LATENT_LIMIT)
            for v in self.latents)

    def divergence_message(self) -> str:
        where = f" at iteration {self.diverged_at}" if self.diverged_at is not None else ""
        return f"diverged{where}; lower --lr"


_EAGER_NOTES: set[str] = set()


def compiled_steps_limit(device: torch.device) -> int:
    """How many compiled steps (one per padded size and batch size) a process keeps on
    ``device``: CPU_COMPILED_STEPS on the CPU, dynamo's ``recompile_limit`` elsewhere."""
    return CPU_COMPILED_STEPS if device.type == "cpu" else torch._dynamo.config.recompile_limit


def _note_eager(exc: Exception, limit: int) -> None:
    """One line on stderr, once per kind of failure: the step runs eagerly, and why."""
    kind = type(exc).__name__
    if kind not in _EAGER_NOTES:
        _EAGER_NOTES.add(kind)
        if isinstance(exc, torch._dynamo.exc.FailOnRecompileLimitHit):
            reason = (f"the process holds its limit of {limit} compiled steps, one per padded "
                      "size and batch size")
        else:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = " ".join([kind + ":", *lines[:2]])[:240]
        print(f"sgafast: note: the compiled step is unavailable ({reason}); running eagerly "
              "(records say history.compiled = false)", file=sys.stderr)


def image_seed(run_seed: int, identity: str) -> int:
    """A 63-bit seed from the run seed and the image's identity (never its batch position)."""
    digest = hashlib.blake2b(f"{run_seed}\0{identity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def distortion_of(model: BaseModel, cfg: RefineConfig) -> str:
    """The distortion the run weighs: the config's, or the one the model was trained for."""
    return cfg.distortion or model.distortion


def lmbda_of(model: BaseModel, cfg: RefineConfig) -> float:
    """The run's lambda: the config's, or the model's training lambda where it weighs the same
    distortion as the run."""
    if cfg.lmbda is not None:
        return float(cfg.lmbda)
    if model.lmbda is None:
        raise SgafastError(f"model {model.name} does not record its training lambda: give "
                           "lmbda= (--lmbda on the command line)")
    if distortion_of(model, cfg) != model.distortion:
        raise SgafastError(f"model {model.name} was trained for the {model.distortion} "
                           f"distortion: its lambda {model.lmbda:g} does not weigh "
                           f"{distortion_of(model, cfg)}; give lmbda= (--lmbda on the command "
                           "line)")
    return float(model.lmbda)


def _adam(params: list[torch.Tensor], lr: float, betas: tuple[float, float],
          graphed: bool) -> torch.optim.Adam:
    """Adam as one fused kernel where the device has one (capturable when CUDA-graphed)."""
    fused = params[0].device.type in ("cpu", "cuda") and params[0].dtype == torch.float32
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None, capturable=graphed)


def _first_non_finite(losses: torch.Tensor) -> list[int | None]:
    """Per image (columns of an (iters, B) buffer): the first row that is not finite, or None."""
    if not len(losses):
        return [None] * losses.shape[1]
    bad = ~torch.isfinite(losses)
    first = torch.where(bad.any(0), bad.int().argmax(0), -1).tolist()
    return [None if i < 0 else i for i in first]


class Refinement:
    """One batch's refinement in progress: latents, optimiser, iteration counter, histories.

    ``advance(k)`` runs k more iterations (tracking the true loss at multiples of
    ``track_every``); ``results()`` finishes. The benchmarks time ``advance`` in slices.
    ``images``: a (B, 3, H, W) batch, or a list of images that share a padded size.
    ``shared_work``: the pixel-iterations of the run that will share this batch's compiled
    step (batches of its padded size and batch size; default: its own), which decide whether
    the default compiles (``RefineConfig.compiles``).
    """

    def __init__(self, model: BaseModel, images, identities: list[str], cfg: RefineConfig,
                 shared_work: int | None = None):
        self.start = time.perf_counter()
        self.canvas = images if isinstance(images, Canvas) else Canvas.of(images)
        x = self.canvas.x
        if x.is_cuda:
            torch.cuda.reset_peak_memory_stats(x.device)
        self.family, self.x, self.cfg = model.family, x, cfg
        self.lmbda, self.distortion = lmbda_of(model, cfg), distortion_of(model, cfg)
        codec.check_sizes(self.distortion, self.canvas.geometries)
        with torch.no_grad():
            self.base = self.family.analyse(x)
        self.latents = tuple(v.clone().requires_grad_(True) for v in self.base)
        self.batch = len(identities)
        self.relaxed = torch.zeros(cfg.iters if cfg.refines else 0, self.batch, device=x.device)
        self.done, self.tracked, self.stopped = 0, [], False
        self.stopped_at: list[int | None] = [None] * self.batch  # by stop_below
        self.kept: dict[int, tuple[torch.Tensor, ...]] = {}  # a stopped image's latents
        self.tracking_seconds = self.warmup_seconds = 0.0
        self.compiled = False
        if cfg.refines:
            seeds = torch.tensor([image_seed(cfg.seed, i) for i in identities], device=x.device)
            self.problem = step.StepProblem(
                self.family, x, self.canvas.mask, self.canvas.num_pixels, seeds, cfg.rounding,
                cfg.tau_max, cfg.tau_rate, self.lmbda, cfg.backend, cfg.precision,
                cfg.schedule, cfg.iters, self.distortion, self.canvas.geometries)
            work = shared_work or self.batch * x.shape[-2] * x.shape[-1] * cfg.iters
            self.compiled = cfg.compiles(self.family, work, x.device)
            self.relaxed_loss = (step.compiled(self.problem) if self.compiled
                                 else self.problem.relaxed_loss)
            self.graphed = self.compiled and x.is_cuda
            self.opt = _adam(list(self.latents), cfg.lr, cfg.schedule.betas, self.graphed)
            self.t = torch.zeros((), dtype=torch.int64, device=x.device)

    def track(self) -> None:
        """Append the true R-D loss after ``done`` updates (outside the step, no gradients)."""
        tick = time.perf_counter()
        with torch.no_grad(), record_function("tracking"):
            loss, _ = codec.hard_rd(self.family, self.canvas, self.latents, self.lmbda,
                                    self.distortion)
        self.tracked.append((self.done, loss))
        self.tracking_seconds += time.perf_counter() - tick

    def step(self) -> None:
        """One update of every image's latents; the host reads nothing back."""
        if self.graphed:
            torch.compiler.cudagraph_mark_step_begin()
        loss = self.relaxed_loss(self.latents, self.t)
        self.relaxed[self.done].copy_(loss.detach())  # before a graph replay reuses its memory
        self.opt.zero_grad(set_to_none=True)
        with record_function("backward"):
            loss.sum().backward()
        with record_function("optimiser"):
            self.opt.param_groups[0]["lr"] = self.cfg.schedule.learning_rate(
                self.done, self.cfg.iters, self.cfg.lr)
            self.opt.step()
        self.t.add_(1)
        self.done += 1

    def _first_compiled_step(self) -> None:
        """The first step, which compiles (or finds the graph in dynamo's cache). Where that
        fails, or dynamo's cache of graphs is full, the batch runs eagerly, said once."""
        limit = compiled_steps_limit(self.x.device)
        try:
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True,
                                            recompile_limit=limit):
                self.step()
        except (torch.OutOfMemoryError, SgafastError):
            raise
        except Exception as exc:  # noqa: BLE001 - any compiler failure: the eager step is the same
            _note_eager(exc, limit)
            self.opt.zero_grad(set_to_none=True)
            self.compiled = self.graphed = False
            self.relaxed_loss = self.problem.relaxed_loss
            self.step()

    def advance(self, iters: int, progress=None) -> None:
        """Run ``iters`` more iterations (at most up to ``cfg.iters``); a batch whose every image
        has diverged stops at the next tracking point (the only host read, every k steps)."""
        if self.stopped:
            return
        every = self.cfg.track_every
        for _ in range(min(iters, len(self.relaxed) - self.done)):
            if every and self.done % every == 0:
                self.track()  # the loss after ``done`` updates
                self._stop_converged()
                finite = torch.isfinite(self.tracked[-1][1]).tolist()
                if self.done and all(not ok or stop is not None
                                     for ok, stop in zip(finite, self.stopped_at)):
                    self.stopped = True  # every image diverged or stopped: nothing to refine
                    return
            with tensor_cores(self.cfg.precision, self.x.device):
                if self.done == 0 and self.compiled:
                    self._first_compiled_step()
                else:
                    self.step()
            if self.done == 1:
                self.warmup_seconds = time.perf_counter() - self.start
            if progress is not None:
                progress.update(1)

    def _stop_converged(self) -> None:
        """Stop the images whose true loss improved by less than ``stop_below`` (relative)
        over the last STOP_POINTS tracking points: their latents now are their result."""
        if self.cfg.stop_below is None or len(self.tracked) <= STOP_POINTS:
            return
        before, now = self.tracked[-1 - STOP_POINTS][1], self.tracked[-1][1]
        for b, gain in enumerate(((before - now) / before.abs()).tolist()):
            if self.stopped_at[b] is None and gain < self.cfg.stop_below:  # NaN: diverged
                self.stopped_at[b] = self.done
                self.kept[b] = tuple(v[b:b + 1].detach().clone() for v in self.latents)

    def _image_latents(self, b: int) -> tuple[torch.Tensor, ...]:
        return self.kept.get(b) or tuple(v[b:b + 1].detach() for v in self.latents)

    def results(self) -> list[Refined]:
        """Each image's latents and history (the true loss is tracked once more at the end);
        an image stopped by ``stop_below`` keeps its latents and history up to its stop."""
        if self.cfg.refines and self.cfg.track_every and (
                not self.tracked or self.tracked[-1][0] != self.done):
            self.track()
        diverged = _first_non_finite(self.relaxed[:self.done])
        relaxed_rows = self.relaxed[:self.done].T.tolist()
        tracked_rows = [(i, loss.tolist()) for i, loss in self.tracked]
        seconds = time.perf_counter() - self.start
        n = self.batch
        peak = torch.cuda.max_memory_allocated(self.x.device) // n if self.x.is_cuda else None
        ends = [self.done if stop is None else stop for stop in self.stopped_at]
        return [Refined(latents=self._image_latents(b),
                        base=tuple(v[b:b + 1] for v in self.base),
                        geometry=self.canvas.geometries[b],
                        relaxed_loss=relaxed_rows[b][:ends[b]],
                        true_loss=[(i, values[b]) for i, values in tracked_rows if i <= ends[b]],
                        seconds=seconds / n, tracking_seconds=self.tracking_seconds / n,
                        warmup_seconds=self.warmup_seconds / n, diverged_at=diverged[b],
                        peak_memory_bytes=peak, compiled=self.compiled,
                        stopped_at=self.stopped_at[b])
                for b in range(n)]


@contextlib.contextmanager
def frozen(net: torch.nn.Module):
    """The net in eval mode with no parameter requiring a gradient (refinement needs none), then
    as it was: its mode and every parameter's ``requires_grad`` restored, no ``.grad`` written."""
    training = net.training
    wanted = [(p, p.requires_grad) for p in net.parameters()]
    net.eval()
    for p, _ in wanted:
        p.requires_grad_(False)
    try:
        yield net
    finally:
        for p, flag in wanted:
            p.requires_grad_(flag)
        net.train(training)


def refine_batch(model: BaseModel, images, identities: list[str], cfg: RefineConfig,
                 progress: bool = False, shared_work: int | None = None) -> list[Refined]:
    """Refine a batch of images in [0, 1], a (B, 3, H, W) tensor or a list of images of sizes
    that share a padded size (``images.Canvas``); one result per image. ``shared_work``: see
    :class:`Refinement`."""
    with frozen(model.net), torch.enable_grad():  # whatever the caller's mode
        run = Refinement(model, images, identities, cfg, shared_work)
        with tqdm(total=len(run.relaxed), desc=f"  {len(identities)} image(s)", leave=False,
                  disable=not progress, dynamic_ncols=True) as bar:
            run.advance(len(run.relaxed), bar)
        return run.results()


def refine(model, images, cfg: RefineConfig | None = None, *,
           identities: list[str] | None = None, **options) -> list[Refined]:
    """Refine a batch of images with a loaded or plain CompressAI model.

    ``images``: a (B, 3, H, W) or (3, H, W) tensor in [0, 1], or a list of (3, H, W) images
    whose sizes share a padded size (a multiple of 64). ``model`` is a
    :class:`~sgafast.models.BaseModel` or a CompressAI model of a supported architecture
    (``sgafast.families``; then give ``lmbda``, and call its ``update()``). ``options`` override
    ``cfg``: run fields (``iters``, ``lr``, ``lmbda``, ...) and the rounding's (``method``,
    ``classes``, ``a``, ...). ``identities`` name the images for their noise streams (default:
    their batch index).
    """
    model = as_model(model)
    check_coder_ready(model.net)
    cfg = (cfg or RefineConfig()).with_options(**options)
    lmbda_of(model, cfg)  # a lambda is known before any work
    canvas = Canvas.of(images)
    x = canvas.x
    if not x.is_floating_point() or not (0 <= float(x.min()) and float(x.max()) <= 1):
        raise SgafastError("images must be float tensors in [0, 1] (e.g. "
                           "sgafast.images.read_image(path)); divide 8-bit values by 255")
    identities = identities or [str(i) for i in range(len(canvas.geometries))]
    if len(identities) != len(canvas.geometries):
        raise SgafastError(f"{len(identities)} identities for a batch of "
                           f"{len(canvas.geometries)} images")
    return refine_batch(model, canvas, identities, cfg)
