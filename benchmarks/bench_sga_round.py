"""pytest-benchmark suite of sga_round at a Kodak latent size: the reference; the fused op on CUDA.

Run: ``pytest benchmarks/bench_rounding.py --benchmark-enable``. The noise is drawn once outside
the timed region for the reference (its cost is not counted); the fused op draws its own.
"""

import pytest
import torch

from sgafast import gumbel_noise, sga_round

KODAK_Y = (1, 192, 32, 48)  # y of a 512x768 Kodak image: M = 192 channels at 1/16 resolution
TAU = 0.5
CUDA = torch.cuda.is_available()


def _setup(device, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    v = (torch.randn(KODAK_Y, generator=gen) * 3).to(device, dtype)
    noise = gumbel_noise(KODAK_Y, seed=1, classes=2).to(device)
    grad_out = torch.randn(KODAK_Y, generator=gen).to(device, dtype)
    seeds = torch.tensor([1], device=device)
    return v, noise, grad_out, seeds


def _call(v, grad_out, mode, sync, **kwargs):
    """One timed call: the forward, or the forward and the gradient of v."""
    if mode == "forward":
        out = sga_round(v, TAU, method="ssl", **kwargs)
    else:
        leaf = v.detach().requires_grad_()
        out = torch.autograd.grad(sga_round(leaf, TAU, method="ssl", **kwargs), leaf, grad_out)
    if sync:
        torch.cuda.synchronize()
    return out


@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
def test_reference_cpu(benchmark, mode):
    v, noise, grad_out, _ = _setup("cpu")
    benchmark.group = f"sga_round ssl {KODAK_Y} fp32 {mode}"
    benchmark(_call, v, grad_out, mode, False, noise=noise, backend="torch")


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("provider", ["reference", "fused"])
@pytest.mark.parametrize("mode", ["forward", "forward_backward"])
def test_cuda(benchmark, mode, provider, dtype):
    v, noise, grad_out, seeds = _setup("cuda", dtype)
    source = (dict(noise=noise, backend="torch") if provider == "reference"
              else dict(seed=seeds, backend="triton"))
    _call(v, grad_out, mode, True, **source)  # compile / warm up outside the timing
    benchmark.group = f"sga_round ssl {KODAK_Y} {dtype} {mode} cuda"
    benchmark(_call, v, grad_out, mode, True, **source)
