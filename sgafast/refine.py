"""The refinement driver: optimise one batch of same-size images' latents (SPEC sections 3-5).

The loss of a batch is the sum of per-image losses and every image's noise comes from (its own
seed, iteration, latent), so each image follows exactly the trajectory it would follow alone.
The loop keeps everything on the device: the iteration counter is a tensor, the relaxed losses
go into a device buffer, and the host reads nothing back until the end (and at the every-k
tracking points, which are outside the step).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time

import torch
from tqdm import tqdm

from . import codec, step
from .errors import SgafastError
from .images import pad, unpad
from .models import BaseModel, architecture_of
from .rounding import Rounding
from .schedule import TAU_RATE, default_tau_max

NO_REFINEMENT = "none"
COMPILE_FROM_ITERS = 500  # compile="auto": shorter runs do not pay back the compile warm-up


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Everything that defines a refinement run (SPEC 4-5 defaults); ``rounding=None``: none."""

    rounding: Rounding | None = Rounding()
    iters: int = 2000
    lr: float = 5e-3
    tau_max: float | None = None  # None: the method's default (SPEC 4), resolved here
    tau_rate: float = TAU_RATE
    lmbda: float | None = None  # None: the base model's training lambda
    seed: int = 0
    track_every: int = 100  # true R-D loss every k iterations (0: never)
    backend: str = "auto"
    compile: bool | None = None  # None: compile runs of COMPILE_FROM_ITERS iterations or more

    @classmethod
    def for_method(cls, method: str = "ssl", **options) -> RefineConfig:
        """A config from a method name (or "none") and options for the rounding or the run."""
        rounding_fields = {f.name for f in dataclasses.fields(Rounding)} - {"method"}
        params = {k: options.pop(k) for k in list(options) if k in rounding_fields}
        if method == NO_REFINEMENT:
            return cls(rounding=None, **options)
        return cls(rounding=Rounding(method, **params), **options)

    def __post_init__(self):
        for name in ("iters", "track_every", "seed"):
            if getattr(self, name) < 0:
                raise SgafastError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name, value in (("lr", self.lr), ("lmbda", self.lmbda), ("tau_max", self.tau_max)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise SgafastError(f"{name} must be a finite number > 0, got {value}")
        if not (math.isfinite(self.tau_rate) and self.tau_rate >= 0):
            raise SgafastError(f"tau_rate must be a finite number >= 0, got {self.tau_rate}")
        if self.tau_max is None and self.rounding is not None:
            object.__setattr__(self, "tau_max", default_tau_max(self.rounding.method))

    def with_options(self, **options) -> RefineConfig:
        """This config with run options and rounding options (method, classes, a, ...) replaced."""
        rounding_fields = {f.name for f in dataclasses.fields(Rounding)}
        rounding = {k: options.pop(k) for k in list(options) if k in rounding_fields}
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

    @property
    def compiles(self) -> bool:
        return self.compile if self.compile is not None else self.iters >= COMPILE_FROM_ITERS


@dataclasses.dataclass
class Refined:
    """One image's refined (continuous, padded-size) latents and its optimisation history."""

    y: torch.Tensor
    z: torch.Tensor
    y_base: torch.Tensor  # the amortised encoder's latents, the starting point
    z_base: torch.Tensor
    relaxed_loss: list[float]  # every iteration
    true_loss: list[tuple[int, float]]  # (updates so far, loss) every track_every and at the end
    seconds: float
    tracking_seconds: float
    warmup_seconds: float  # the first step, compilation included, within ``seconds``
    diverged_at: int | None  # the first iteration whose loss was not finite

    @property
    def finite(self) -> bool:
        """Whether the refinement stayed finite: the latents can be entropy-coded."""
        return self.diverged_at is None and bool(
            torch.isfinite(self.y).all() and torch.isfinite(self.z).all())

    def divergence_message(self) -> str:
        where = f"at iteration {self.diverged_at}" if self.diverged_at is not None else ""
        return f"diverged {where}; lower --lr / --tau-rate".replace("  ", " ")


def image_seed(run_seed: int, identity: str) -> int:
    """A 63-bit seed from the run seed and the image's identity (never its batch position)."""
    digest = hashlib.blake2b(f"{run_seed}\0{identity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def lmbda_of(model: BaseModel, cfg: RefineConfig) -> float:
    lmbda = cfg.lmbda if cfg.lmbda is not None else model.lmbda
    if lmbda is None:
        raise SgafastError(f"model {model.name} does not record its training lambda: "
                           "give --lmbda")
    return float(lmbda)


def true_rd_loss(net, x, y, z, lmbda: float, unpad_fn) -> torch.Tensor:
    """Per-image R-D loss at the hard latents (float reconstruction + likelihood bits)."""
    y_hat, z_hat, scales, means = codec.hard_latents(net, y, z)
    terms = codec.rd_terms(net, x, y_hat, z_hat, scales, means, unpad_fn)
    return codec.rd_loss(terms["mse"], terms["bits"], lmbda, x.shape[-2] * x.shape[-1])


def _adam(params: list[torch.Tensor], lr: float, graphed: bool) -> torch.optim.Adam:
    """Adam as one fused kernel where the device has one (capturable when CUDA-graphed)."""
    fused = params[0].device.type in ("cpu", "cuda") and params[0].dtype == torch.float32
    return torch.optim.Adam(params, lr=lr, fused=fused or None, capturable=graphed)


def _first_non_finite(losses: torch.Tensor) -> list[int | None]:
    """Per image (columns of an (iters, B) buffer): the first row that is not finite, or None."""
    if not len(losses):
        return [None] * losses.shape[1]
    bad = ~torch.isfinite(losses)
    first = torch.where(bad.any(0), bad.int().argmax(0), -1).tolist()
    return [None if i < 0 else i for i in first]


def refine_batch(model: BaseModel, x: torch.Tensor, identities: list[str],
                 cfg: RefineConfig, progress: bool = False) -> list[Refined]:
    """Refine a (B, 3, H, W) batch of same-size images in [0, 1]; one result per image."""
    start = time.perf_counter()
    net, lmbda = model.net, lmbda_of(model, cfg)
    x_padded, unpadding = pad(x)
    unpad_fn = lambda t: unpad(t, unpadding)  # noqa: E731
    with torch.no_grad():
        y0, z0 = codec.encode(net, x_padded)
    y, z = y0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    batch = len(identities)
    relaxed = torch.zeros(cfg.iters if cfg.refines else 0, batch, device=x.device)
    tracked, tracking, warmup = [], 0.0, 0.0

    def track(t: int) -> None:
        nonlocal tracking
        tick = time.perf_counter()
        with torch.no_grad():
            tracked.append((t, true_rd_loss(net, x, y, z, lmbda, unpad_fn)))
        tracking += time.perf_counter() - tick

    if cfg.refines:
        seeds = torch.tensor([image_seed(cfg.seed, i) for i in identities], device=x.device)
        problem = step.StepProblem(net, x, unpadding, seeds, cfg.rounding, cfg.tau_max,
                                   cfg.tau_rate, lmbda, cfg.backend)
        relaxed_loss = step.compiled(problem) if cfg.compiles else problem.relaxed_loss
        graphed = cfg.compiles and x.is_cuda
        opt = _adam([y, z], cfg.lr, graphed)
        t = torch.zeros((), dtype=torch.int64, device=x.device)
        steps = tqdm(range(cfg.iters), desc=f"  {batch} image(s)", leave=False,
                     disable=not progress, dynamic_ncols=True)
        for i in steps:
            if cfg.track_every and i % cfg.track_every == 0:
                track(i)  # the loss after i updates
            if graphed:
                torch.compiler.cudagraph_mark_step_begin()
            loss = relaxed_loss(y, z, t)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            relaxed[i].copy_(loss.detach())  # before a graph replay reuses loss's memory
            t.add_(1)
            if i == 0:
                warmup = time.perf_counter() - start
        if cfg.track_every:
            track(cfg.iters)
    diverged = _first_non_finite(relaxed)
    relaxed_rows = relaxed.T.tolist()
    tracked_rows = [(i, loss.tolist()) for i, loss in tracked]
    seconds = time.perf_counter() - start
    return [Refined(y=y[b:b + 1].detach(), z=z[b:b + 1].detach(),
                    y_base=y0[b:b + 1], z_base=z0[b:b + 1],
                    relaxed_loss=relaxed_rows[b],
                    true_loss=[(i, values[b]) for i, values in tracked_rows],
                    seconds=seconds / batch, tracking_seconds=tracking / batch,
                    warmup_seconds=warmup / batch, diverged_at=diverged[b])
            for b in range(batch)]


def refine(model, x: torch.Tensor, cfg: RefineConfig | None = None, *,
           identities: list[str] | None = None, **options) -> list[Refined]:
    """Refine a batch of same-size images with a loaded or plain CompressAI hyperprior.

    ``model`` is a :class:`~sgafast.models.BaseModel` or a CompressAI ``ScaleHyperprior`` /
    ``MeanScaleHyperprior`` (then give ``lmbda``). ``options`` override ``cfg``: run fields
    (``iters``, ``lr``, ``lmbda``, ...) and the rounding's (``method``, ``classes``, ``a``, ...).
    ``identities`` name the images for their noise streams (default: their batch index).
    """
    if not isinstance(model, BaseModel):
        model = BaseModel(model.eval(), type(model).__name__, architecture_of(model), None)
    cfg = (cfg or RefineConfig()).with_options(**options)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    identities = identities or [str(i) for i in range(x.shape[0])]
    if len(identities) != x.shape[0]:
        raise SgafastError(f"{len(identities)} identities for a batch of {x.shape[0]} images")
    return refine_batch(model, x, identities, cfg)

