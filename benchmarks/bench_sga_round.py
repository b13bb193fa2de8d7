"""pytest-benchmark suite of sga_round at a Kodak latent size: the reference; the fused op on CUDA.

Run: ``make bench`` (or ``pytest benchmarks/bench_sga_round.py --benchmark-enable``). The
reference is given its noise, drawn once outside the timed region (its cost is not counted); the
fused op draws its own in-kernel.
"""

from op_timing import KODAK_Y, TAU, latent_inputs, suite

from sgafast import gumbel_noise, sga_round


def _providers(device, dtype):
    inputs = latent_inputs(device, dtype)
    noise = gumbel_noise(KODAK_Y, seed=1, classes=2).to(device)
    return (inputs["y"],), {
        "reference": lambda v: sga_round(v, TAU, method="ssl", noise=noise, backend="torch"),
        "fused": lambda v: sga_round(v, TAU, method="ssl", seed=inputs["seeds"],
                                     backend="triton")}


test_cpu, test_cuda = suite("sga_round ssl", _providers, "reference")
