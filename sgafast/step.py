"""One refinement step's relaxed R-D loss as a function of device tensors only, eager or compiled.

Everything that changes from one iteration to the next (the latents, the iteration counter) is
a tensor argument, and everything derived from it (tau, the Philox counter words of the noise)
is computed from it on the device: the step never reads a value back to the host, never copies
one to the device, and a compiled step never recompiles as tau anneals. Compiled, it is one
``torch.compile`` graph forward and one backward; on CUDA it is also captured as a CUDA graph
(``mode="reduce-overhead"``), so an iteration is a few graph launches.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch.profiler import record_function

from . import codec, precision
from .fused_rate import gaussian_bits
from .fused_round_rate import sga_round_bits
from .images import unpad
from .rounding import Rounding, sga_round
from .schedule import temperature

Z_STREAM, Y_STREAM = 0, 1  # the fourth Philox counter word: which latent the noise is for


@dataclasses.dataclass(frozen=True)
class StepProblem:
    """What stays fixed during a batch's refinement: the model, the images and the settings."""

    net: torch.nn.Module
    x: torch.Tensor  # the unpadded batch, (B, 3, H, W)
    unpadding: tuple[int, int, int, int]
    seeds: torch.Tensor  # (B,) int64 image seeds on the device
    rounding: Rounding
    tau_max: float
    tau_rate: float
    lmbda: float
    backend: str
    gaussian_bounds: tuple[float, float]  # codec.gaussian_bounds(net), read once
    precision: str = "fp32"  # of the transforms; the rounding and the rates are always fp32

    def relaxed_loss(self, y: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,) relaxed R-D losses at iteration ``t`` (a 0-d int64 device tensor), SPEC 5.

        The ``record_function`` labels name the components in a profile (benchmarks/).
        """
        with _label("rounding"):
            tau = temperature(t, method=self.rounding.method, tau_max=self.tau_max,
                              rate=self.tau_rate)
            z_soft = sga_round(z, tau, self.rounding, center=codec.medians(self.net),
                               seed=self.seeds, counter=_counter(t, Z_STREAM),
                               backend=self.backend)
        with _label("hyper-synthesis"), self.transforms():
            scales, means = codec.hyper_params(self.net, z_soft)
        scales, means = scales.float(), None if means is None else means.float()
        with _label("rounding"):
            if self.fused_rate and self.rounding.is_gumbel:
                # one kernel each way reads y, mu, sigma once: y's rounding and its bits
                y_soft, y_bits = sga_round_bits(
                    y, tau, self.rounding, means=means, scales=scales, seed=self.seeds,
                    counter=_counter(t, Y_STREAM), scale_bound=self.gaussian_bounds[0],
                    likelihood_bound=self.gaussian_bounds[1])
            else:
                y_soft = sga_round(y, tau, self.rounding, center=means, seed=self.seeds,
                                   counter=_counter(t, Y_STREAM), backend=self.backend)
                y_bits = None
        with _label("synthesis"), self.transforms():
            x_hat = unpad(self.net.g_s(y_soft), self.unpadding).float()
        with _label("rates"):
            if y_bits is None and self.fused_rate:  # one kernel each way for y's bits
                y_bits = gaussian_bits(y_soft, scales, means,
                                       scale_bound=self.gaussian_bounds[0],
                                       likelihood_bound=self.gaussian_bounds[1])
            if y_bits is None:
                bits = codec.bits(self.net, y_soft, z_soft, scales, means)
            else:
                bits = codec.bits_per_image(codec.z_likelihood(self.net, z_soft)) + y_bits
        return codec.rd_loss(codec.mse(x_hat, self.x), bits, self.lmbda,
                             self.x.shape[-2] * self.x.shape[-1])

    @property
    def fused_rate(self) -> bool:
        """Whether y's rate is the fused kernel: where the rounding kernels run too."""
        auto = self.x.is_cuda and self.x.dtype in (torch.float32, torch.float16, torch.bfloat16)
        return self.backend == "triton" or (self.backend == "auto" and auto)

    def transforms(self):
        return precision.transforms(self.precision, self.x.device)


def _label(name: str):
    """A profiler label in eager mode (dynamo would only warn that it ignores one)."""
    return contextlib.nullcontext() if torch.compiler.is_compiling() else record_function(name)


def _counter(t: torch.Tensor, stream: int) -> torch.Tensor:
    """The two upper Philox counter words (iteration, latent) as an int64 device tensor."""
    return torch.stack((t, torch.full_like(t, stream)))


def compiled(problem: StepProblem):
    """``problem.relaxed_loss`` through ``torch.compile`` (a CUDA graph on CUDA).

    The graph has static shapes: one compilation per batch shape and model, cached by dynamo.
    """
    mode = "reduce-overhead" if problem.x.is_cuda else None
    return torch.compile(problem.relaxed_loss, mode=mode, dynamic=False)
