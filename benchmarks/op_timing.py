"""What the per-op pytest-benchmark suites share: the Kodak latent shape, inputs, a timed call."""

import pytest
import torch

KODAK_Y = (1, 192, 32, 48)  # y of a 512x768 Kodak image: M = 192 channels at 1/16 resolution
TAU = 0.5
CUDA = torch.cuda.is_available()
MODES = ["forward", "forward_backward"]


def latent_inputs(device, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """y spread over several integers, its means and scales (as a hyperprior predicts them),
    and the per-image seeds of the noise stream, all of shape KODAK_Y."""
    gen = torch.Generator().manual_seed(0)
    return {"y": (torch.randn(KODAK_Y, generator=gen) * 3).to(device, dtype),
            "means": torch.randn(KODAK_Y, generator=gen).to(device, dtype),
            "scales": (torch.rand(KODAK_Y, generator=gen) * 4 + 0.05).to(device, dtype),
            "seeds": torch.tensor([1], device=device)}


def timed_call(fn, leaves: tuple[torch.Tensor, ...], mode: str, sync: bool):
    """One timed call: ``fn(*leaves)``, or that and the gradients of every leaf for all-ones
    upstreams of its outputs (``mode="forward_backward"``)."""
    if mode == "forward":
        out = fn(*leaves)
    else:
        leaves = tuple(t.detach().requires_grad_() for t in leaves)
        outs = fn(*leaves)
        outs = outs if isinstance(outs, tuple) else (outs,)
        out = torch.autograd.grad(outs, leaves, [torch.ones_like(o) for o in outs])
    if sync:
        torch.cuda.synchronize()
    return out


def bench(benchmark, group: str, fn, leaves: tuple[torch.Tensor, ...], mode: str) -> None:
    """Time ``timed_call`` under pytest-benchmark in ``group``; on CUDA after one untimed call
    (compilation and warm-up), with a synchronisation in each timed call."""
    cuda = leaves[0].is_cuda
    if cuda:
        timed_call(fn, leaves, mode, True)
    benchmark.group = f"{group} {str(leaves[0].dtype).removeprefix('torch.')} {mode}" + (
        " cuda" if cuda else "")
    benchmark(timed_call, fn, leaves, mode, cuda)


def suite(op: str, providers, baseline: str):
    """The two benchmarks of an op, for its module to bind as ``test_cpu, test_cuda``:
    ``baseline`` (the unfused PyTorch computation) on the CPU, and it and ``"fused"`` on CUDA
    in fp32 and bf16. ``providers(device, dtype)`` gives (leaves, {name: function})."""
    group = f"{op} {KODAK_Y}"

    @pytest.mark.parametrize("mode", MODES)
    def test_cpu(benchmark, mode):
        leaves, fns = providers("cpu", torch.float32)
        bench(benchmark, group, fns[baseline], leaves, mode)

    @pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
    @pytest.mark.parametrize("provider", [baseline, "fused"])
    @pytest.mark.parametrize("mode", MODES)
    def test_cuda(benchmark, mode, provider, dtype):
        leaves, fns = providers("cuda", dtype)
        bench(benchmark, group, fns[provider], leaves, mode)

    return test_cpu, test_cuda
