"""One refinement step's relaxed R-D loss as a function of device tensors only, eager or compiled.

Everything that changes from one iteration to the next (the latents, the iteration counter) is
a tensor argument, and everything derived from it (tau, the Philox counter words of the noise)
is computed from it on the device: the step never reads a value back to the host, never copies
one to the device, and a compiled step never recompiles as tau anneals. Compiled, it is one
``torch.compile`` graph forward and one backward; on CUDA it is also captured as a CUDA graph
(``mode="reduce-overhead"``), so an iteration is a few graph launches.

The model's family (``sgafast.families``) decides which latents are rounded around what, in
which order; the step hands it a :class:`SoftRounder`, which draws each latent's noise from
(image seed, iteration, stream) and uses the fused kernels where they run.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch.profiler import record_function

from . import codec, precision
from .families import Family
from .images import Geometry
from .ops.gaussian_bits import gaussian_bits
from .ops.rounding import Rounding, kernels_run
from .ops.schedule import PRESETS, Schedule
from .ops.sga_round import sga_round
from .ops.sga_round_bits import sga_round_bits


@dataclasses.dataclass(frozen=True)
class StepProblem:
    """What stays fixed during a batch's refinement: the model, the images and the settings."""

    family: Family
    x: torch.Tensor  # the batch at its padded size, (B, 3, H, W): ``images.Canvas.x``
    mask: torch.Tensor  # (B, 1, H, W): 1 on each image's own pixels
    num_pixels: torch.Tensor  # (B,) float32: each image's own pixel count
    seeds: torch.Tensor  # (B,) int64 image seeds on the device
    rounding: Rounding
    tau_max: float
    tau_rate: float | None  # the paper schedule's (None under a budget schedule)
    lmbda: float
    backend: str
    precision: str = "fp32"  # of the transforms; the rounding and the rates are always fp32
    schedule: Schedule = PRESETS["paper"]
    iters: int = 0  # the run's length, which a budget schedule spreads tau over
    distortion: str = "mse"  # what lambda weighs (codec.DISTORTIONS)
    geometries: tuple[Geometry, ...] = ()  # each image's place on the canvas (for MS-SSIM)

    def relaxed_loss(self, latents: tuple[torch.Tensor, ...], t: torch.Tensor) -> torch.Tensor:
        """(B,) relaxed R-D losses at iteration ``t`` (a 0-d int64 tensor), docs/method.md §5.

        The ``record_function`` labels name the components in a profile (benchmarks/).
        """
        with _label("rounding"):
            tau = self.schedule.temperature(t, self.iters, method=self.rounding.method,
                                            tau_max=self.tau_max, rate=self.tau_rate)
        y_soft, bits = self.family.relaxed(latents, SoftRounder(self, tau, t),
                                           self.hyper_transforms)
        with _label("synthesis"), self.transforms():
            x_hat = self.family.synthesis(y_soft).float()
        metric = codec.distortion(self.distortion, x_hat, self.x, self.mask, self.num_pixels,
                                  self.geometries)
        return codec.rd_loss(metric, bits, self.lmbda, self.num_pixels, self.distortion)

    @property
    def fused_rate(self) -> bool:
        """Whether y's rate is the fused kernel: where the rounding kernels run too."""
        return kernels_run(self.backend, self.x)

    def transforms(self):
        return precision.transforms(self.precision, self.x.device)

    def hyper_transforms(self):
        """The transforms' context, labelled "hyper-synthesis" in eager mode."""
        if torch.compiler.is_compiling():
            return self.transforms()
        stack = contextlib.ExitStack()
        stack.enter_context(record_function("hyper-synthesis"))
        stack.enter_context(self.transforms())
        return stack


@dataclasses.dataclass(frozen=True)
class SoftRounder:
    """The stochastic soft rounding of one iteration (``sgafast.families.base.Rounder``)."""

    problem: StepProblem
    tau: torch.Tensor
    t: torch.Tensor

    def round(self, v, center, stream):
        p = self.problem
        with _label("rounding"):
            return sga_round(v, self.tau, p.rounding, center=center, seed=p.seeds,
                             counter=_counter(self.t, stream), backend=p.backend)

    def round_gaussian(self, v, scales, means, gaussian, stream):
        p = self.problem
        if p.fused_rate and p.rounding.is_gumbel:
            with _label("rounding"):  # one kernel each way reads v, mu, sigma once
                return sga_round_bits(v, self.tau, p.rounding, means=means, scales=scales,
                                      seed=p.seeds, counter=_counter(self.t, stream),
                                      scale_bound=gaussian.scale_bound,
                                      likelihood_bound=gaussian.likelihood_bound)
        soft = self.round(v, means, stream)
        with _label("rates"):
            if p.fused_rate:  # one kernel each way for the bits
                return soft, gaussian_bits(soft, scales, means,
                                           scale_bound=gaussian.scale_bound,
                                           likelihood_bound=gaussian.likelihood_bound)
            return soft, gaussian.bits(soft, scales, means)


def _label(name: str):
    """A profiler label in eager mode (dynamo would only warn that it ignores one)."""
    return contextlib.nullcontext() if torch.compiler.is_compiling() else record_function(name)


def _counter(t: torch.Tensor, stream: int) -> torch.Tensor:
    """The two upper Philox counter words (iteration, latent) as an int64 device tensor."""
    return torch.stack((t, torch.full_like(t, stream)))


def compiled(problem: StepProblem):
    """``problem.relaxed_loss`` through ``torch.compile`` (a CUDA graph on CUDA).

    The graph has static shapes: one per padded image size and batch size (images of different
    sizes that share a padded size share it), cached by dynamo across batches, at most
    ``refine.compiled_steps_limit`` of them; the driver runs the eager step beyond. Dynamic
    shapes do not give one graph for all sizes with PyTorch 2.14 (docs/running.md, "Many image
    sizes"): the backward's compilation specialises the spatial sizes.
    """
    mode = "reduce-overhead" if problem.x.is_cuda else None
    return torch.compile(problem.relaxed_loss, mode=mode, dynamic=False)
