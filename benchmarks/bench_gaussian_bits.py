"""pytest-benchmark suite of gaussian_bits at a Kodak latent size: CompressAI's likelihood code
(the reference) on the CPU; it and the fused op on CUDA.

Run: ``make bench`` (or ``pytest benchmarks/bench_gaussian_bits.py --benchmark-enable``).
"""

from compressai.entropy_models import GaussianConditional
from op_timing import latent_inputs, suite

from sgafast.families.base import Gaussian
from sgafast.ops.gaussian_bits import gaussian_bits


def _providers(device, dtype):
    inputs = latent_inputs(device, dtype)
    gaussian = Gaussian.of(GaussianConditional(None).to(device))
    bounds = dict(scale_bound=gaussian.scale_bound, likelihood_bound=gaussian.likelihood_bound)
    return (inputs["y"], inputs["scales"], inputs["means"]), {
        "reference": gaussian.bits,
        "fused": lambda y, scales, means: gaussian_bits(y, scales, means, **bounds)}


test_cpu, test_cuda = suite("gaussian_bits", _providers, "reference")
