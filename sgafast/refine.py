"""The refinement driver: optimise one batch of same-size images' latents (SPEC sections 3-5).

The loss of a batch is the sum of per-image losses and every image's noise comes from (run seed,
image identity, iteration), so each image follows exactly the trajectory it would follow alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time

import torch
from tqdm import tqdm

from . import codec
from .images import pad, unpad
from .errors import SgafastError
from .models import BaseModel, architecture_of
from .rounding import Rounding, check_tau, sga_round
from .schedule import TAU_RATE, temperature

NO_REFINEMENT = "none"
MASK64 = 2**64 - 1


@dataclasses.dataclass
class RefineConfig:
    """Everything that defines a refinement run (SPEC 4-5 defaults)."""

    method: str = "ssl"
    classes: int = 2
    a: float | None = None
    r: float = 0.98
    n: float = 1.5
    iters: int = 2000
    lr: float = 5e-3
    tau_max: float | None = None
    tau_rate: float = TAU_RATE
    lmbda: float | None = None  # None: the base model's training lambda
    seed: int = 0
    track_every: int = 100  # true R-D loss every k iterations (0: never)
    backend: str = "auto"

    def __post_init__(self):
        if self.method != NO_REFINEMENT:
            self.rounding()  # validates method, classes, a, r, n
        if self.tau_max is not None:
            check_tau(self.tau_max)
        for name in ("iters", "track_every", "seed"):
            if getattr(self, name) < 0:
                raise SgafastError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise SgafastError(f"lr must be > 0, got {self.lr}")
        if self.lmbda is not None and not self.lmbda > 0:
            raise SgafastError(f"lmbda must be > 0, got {self.lmbda}")

    def rounding(self) -> Rounding:
        return Rounding(self.method, self.classes, self.a, self.r, self.n)

    @property
    def refines(self) -> bool:
        return self.method != NO_REFINEMENT and self.iters > 0


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


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def image_seed(run_seed: int, identity: str) -> int:
    """A 63-bit seed from the run seed and the image's identity (never its batch position)."""
    digest = hashlib.blake2b(f"{run_seed}\0{identity}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def step_seeds(seeds: list[int], t: int, stream: int, device) -> torch.Tensor:
    """Per-image stream seeds of iteration ``t`` for latent ``stream`` (0: z, 1: y)."""
    return torch.tensor([_splitmix64(s ^ _splitmix64((t << 1) | stream)) >> 1 for s in seeds],
                        dtype=torch.int64).to(device, non_blocking=True)


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
    relaxed, tracked, tracking = [], [], 0.0
    if cfg.refines:
        rounding = cfg.rounding()
        seeds = [image_seed(cfg.seed, i) for i in identities]
        m = codec.medians(net).detach()
        opt = torch.optim.Adam([y, z], lr=cfg.lr)
        num_pixels = x.shape[-2] * x.shape[-1]
        options = dict(method=rounding.method, classes=rounding.classes, a=rounding.a,
                       r=rounding.r, n=rounding.n, backend=cfg.backend)

        def track(t: int) -> None:
            nonlocal tracking
            tick = time.perf_counter()
            with torch.no_grad():
                tracked.append((t, true_rd_loss(net, x, y, z, lmbda, unpad_fn)))
            tracking += time.perf_counter() - tick

        steps = tqdm(range(cfg.iters), desc=f"  {len(identities)} image(s)", leave=False,
                     disable=not progress, dynamic_ncols=True)
        for t in steps:
            if cfg.track_every and t % cfg.track_every == 0:
                track(t)  # the loss after t updates
            tau = temperature(t, method=cfg.method, tau_max=cfg.tau_max, rate=cfg.tau_rate)
            z_soft = sga_round(z, tau, center=m, seed=step_seeds(seeds, t, 0, z.device),
                               **options)
            scales, means = codec.hyper_params(net, z_soft)
            y_soft = sga_round(y, tau, center=means, seed=step_seeds(seeds, t, 1, y.device),
                               **options)
            terms = codec.rd_terms(net, x, y_soft, z_soft, scales, means, unpad_fn)
            loss = codec.rd_loss(terms["mse"], terms["bits"], lmbda, num_pixels)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            relaxed.append(loss.detach())
        if cfg.track_every:
            track(cfg.iters)
    relaxed_rows = torch.stack(relaxed).T.tolist() if relaxed else [[] for _ in identities]
    seconds = time.perf_counter() - start
    return [Refined(y=y[i:i + 1].detach(), z=z[i:i + 1].detach(),
                    y_base=y0[i:i + 1], z_base=z0[i:i + 1],
                    relaxed_loss=relaxed_rows[i],
                    true_loss=[(t, float(v[i])) for t, v in tracked],
                    seconds=seconds / len(identities),
                    tracking_seconds=tracking / len(identities))
            for i in range(len(identities))]


def refine(model, x: torch.Tensor, cfg: RefineConfig | None = None, *,
           identities: list[str] | None = None, **options) -> list[Refined]:
    """Refine a batch of same-size images with a loaded or plain CompressAI hyperprior.

    ``model`` is a :class:`~sgafast.models.BaseModel` or a CompressAI ``ScaleHyperprior`` /
    ``MeanScaleHyperprior`` (then give ``lmbda``); ``options`` override ``cfg``'s fields.
    ``identities`` name the images for their noise streams (default: their batch index).
    """
    if not isinstance(model, BaseModel):
        model = BaseModel(model.eval(), type(model).__name__, architecture_of(model), None)
    cfg = dataclasses.replace(cfg or RefineConfig(), **options)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    identities = identities or [str(i) for i in range(x.shape[0])]
    if len(identities) != x.shape[0]:
        raise SgafastError(f"{len(identities)} identities for a batch of {x.shape[0]} images")
    return refine_batch(model, x, identities, cfg)
