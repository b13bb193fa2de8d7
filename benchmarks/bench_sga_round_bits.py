"""pytest-benchmark suite of sga_round_bits at a Kodak latent size: its unfused composition
(sga_round, then CompressAI's likelihood code) on the CPU; it and the fused op on CUDA.

Run: ``make bench`` (or ``pytest benchmarks/bench_sga_round_bits.py --benchmark-enable``). Both
draw their noise from the same stream (the composition with the torch twin of the Philox).
"""

import torch
from compressai.entropy_models import GaussianConditional
from op_timing import TAU, latent_inputs, suite

from sgafast import Rounding, sga_round
from sgafast.families.base import Gaussian
from sgafast.ops.sga_round_bits import sga_round_bits

ROUNDING = Rounding("ssl")


def _providers(device, dtype):
    inputs = latent_inputs(device, dtype)
    gaussian = Gaussian.of(GaussianConditional(None).to(device))
    seeds, tau = inputs["seeds"], torch.tensor([TAU], device=device)

    def composition(y, scales, means):
        y_soft = sga_round(y, tau, ROUNDING, center=means, seed=seeds, backend="torch")
        return y_soft, gaussian.bits(y_soft, scales, means)

    def fused(y, scales, means):
        return sga_round_bits(y, tau, ROUNDING, means=means, scales=scales, seed=seeds,
                              scale_bound=gaussian.scale_bound,
                              likelihood_bound=gaussian.likelihood_bound)

    return (inputs["y"], inputs["scales"], inputs["means"]), {"composition": composition,
                                                              "fused": fused}


test_cpu, test_cuda = suite("sga_round_bits ssl", _providers, "composition")
