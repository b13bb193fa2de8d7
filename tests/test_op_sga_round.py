"""The fused Triton kernels against the reference: the CPU interpreter here, the GPU where found."""

import copy
import os
import subprocess
import sys
import zlib

import pytest
import torch

from closed_forms import binomial_bound, p_up_closed_form
from conftest import EQUALITY_LR
from helpers import DEVICE, GUMBEL, assert_no_worse_than_torch, tolerance
from sgafast import sga_round
from sgafast.errors import SgafastError
from sgafast.kernels import sga_round as kernels
from sgafast.ops.noise import logistic_noise
from sgafast.ops.rounding import DEFAULT_A, TWO_CLASS_METHODS
from sgafast.refine import RefineConfig, refine_batch

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = {"one": (1,), "prime": (97,), "odd3d": (3, 5, 7), "strided": (11, 7)}


def latent(shape, dtype, gen, scale=3.0, strided=False):
    """Values over several integers, a quarter snapped to integers and half-integers (ties)."""
    full = (*shape[:-1], 2 * shape[-1]) if strided else shape
    x = torch.randn(full, generator=gen, dtype=torch.float64) * scale
    snap = torch.rand(full, generator=gen, dtype=torch.float64) < 0.25
    x = torch.where(snap, torch.round(2 * x) / 2, x).to(dtype)
    return (x[..., ::2] if strided else x).to(DEVICE)


def evaluate(v, center, grad_out, fn=sga_round, **kwargs):
    """Output of fn (sga_round) and the gradients of v and center for the upstream grad_out."""
    v = v.detach().requires_grad_()
    center = None if center is None else center.detach().requires_grad_()
    out = fn(v, center=center, **kwargs)
    out.backward(grad_out)
    return out.detach(), v.grad, None if center is None else center.grad


@pytest.mark.parametrize("with_center", [False, True], ids=["plain", "center"])
@pytest.mark.parametrize("noise_from", ["noise", "seed"])
@pytest.mark.parametrize("shape_name", list(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method,classes", GUMBEL)
def test_matches_reference(method, classes, dtype, shape_name, noise_from, with_center):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{method}{classes}{shape_name}".encode()))
    shape, strided = SHAPES[shape_name], shape_name == "strided"
    v = latent(shape, dtype, gen, strided=strided)  # strided: every other column of a tensor
    assert v.is_contiguous() != strided
    center = latent(shape, dtype, gen, scale=2.0, strided=strided) if with_center else None
    grad_out = torch.randn(shape, generator=gen).to(DEVICE)
    if noise_from == "noise":
        noise = -torch.log(-torch.log(torch.rand((*shape, classes), generator=gen)))
        source = dict(noise=noise.to(DEVICE))
    elif shape_name == "odd3d":  # one seed per item along dim 0
        source = dict(seed=torch.tensor([5, 2**40 + 3, 2**63 - 1], device=DEVICE))
    else:
        source = dict(seed=1234567)
    options = dict(tau=0.5, method=method, classes=classes)

    def run(dt, backend):  # sga_round casts explicit noise to v's dtype for the reference
        return evaluate(v.to(dt), None if center is None else center.to(dt), grad_out.to(dt),
                        backend=backend, **options, **source)

    fused, same, ref64 = run(dtype, "triton"), run(dtype, "torch"), run(torch.float64, "torch")
    for what, k, t, r in zip(["output", "grad v", "grad center"], fused, same, ref64):
        if r is not None:
            assert k.dtype == dtype, what
            assert_no_worse_than_torch(k, t, r, what, **tolerance(dtype))


@pytest.mark.parametrize("method,classes", [("ssl", 2), ("linear", 3)])
def test_broadcast_center_gets_the_summed_gradient(method, classes):
    gen = torch.Generator().manual_seed(2)
    v = latent((3, 5, 7), torch.float32, gen)
    center = latent((1, 5, 1), torch.float32, gen)
    grad_out = torch.randn(3, 5, 7, generator=gen).to(DEVICE)
    options = dict(tau=0.5, method=method, classes=classes, backend="triton",
                   seed=torch.tensor([1, 2, 3], device=DEVICE))
    broadcast = evaluate(v, center, grad_out, **options)
    full = evaluate(v, center.expand(3, 5, 7).clone(), grad_out, **options)
    assert torch.equal(broadcast[0], full[0]) and torch.equal(broadcast[1], full[1])
    torch.testing.assert_close(broadcast[2], full[2].sum_to_size(1, 5, 1), rtol=1e-6, atol=1e-6)
    # a center that needs no gradient (the medians of docs/method.md §3) leaves v's unchanged
    v = v.detach().requires_grad_()
    sga_round(v, center=center, **options).backward(grad_out)
    assert torch.equal(v.grad, full[1])


@pytest.mark.parametrize("method,classes", GUMBEL)
def test_fp32_matches_reference_from_hot_to_cold(method, classes):
    gen = torch.Generator().manual_seed(3)
    v = latent((4000,), torch.float32, gen, scale=4.0)
    center = latent((4000,), torch.float32, gen)
    grad_out = torch.randn(4000, generator=gen).to(DEVICE)
    for tau in (1.0, 0.2, 0.05):
        results = [evaluate(v.to(dt), center.to(dt), grad_out.to(dt), tau=tau, method=method,
                            classes=classes, seed=99, backend=backend)
                   for dt, backend in [(torch.float32, "triton"), (torch.float32, "torch"),
                                       (torch.float64, "torch")]]
        for what, k, t, r in zip(["output", "grad v", "grad center"], *results):
            assert_no_worse_than_torch(k, t, r, f"tau {tau}: {what}", **tolerance(torch.float32))


def near(points, steps):
    """fp32 values points +- steps * 2^-23, as float64: their distances to the points are exact
    multiples of 2^-23, which never equal the clamp bound EPS and equal 1 - EPS only for 84."""
    offsets = torch.tensor(steps, dtype=torch.float64) * 2.0**-23
    v = (points[:, None] + torch.cat([offsets, -offsets, torch.zeros(1)])).flatten()
    return v.float().double()


@pytest.mark.parametrize("method,classes", GUMBEL)
def test_fp32_matches_reference_at_the_clamps(method, classes):
    """Within about EPS = 1e-5 of an integer (two-class distance clamps) or of a half-integer
    (three-class ties), where random inputs never land; exact clamp bounds avoided (see the
    next test): torch's subgradient there depends on its version."""
    points = torch.arange(-2.0, 2.5, 0.5, dtype=torch.float64)  # integers and half-integers
    v = near(points, [1, 8, 42, 83, 85, 86, 100, 168, 840]).repeat(8).float().to(DEVICE)
    grad_out = torch.ones_like(v)
    for tau in (1.0, 0.5):
        results = [evaluate(v.to(dt), None, grad_out.to(dt), tau=tau, method=method,
                            classes=classes, seed=5, backend=backend)
                   for dt, backend in [(torch.float32, "triton"), (torch.float32, "torch"),
                                       (torch.float64, "torch")]]
        for what, k, t, r in zip(["output", "grad v"], *results):
            assert_no_worse_than_torch(k, t, r, f"tau {tau}: {what}", **tolerance(torch.float32))


def _torch_clamp_gradient_at_bound() -> float:
    x = torch.tensor(1.0, requires_grad=True)
    return torch.autograd.grad(torch.clamp(x, max=1.0), x)[0].item()


@pytest.mark.skipif(_torch_clamp_gradient_at_bound() != 0,
                    reason="torch < 2.12 gives subgradient 1 at a clamp bound, the kernels 0")
@pytest.mark.parametrize("method", TWO_CLASS_METHODS)
def test_clamp_bounds_take_the_minimum_norm_subgradient(method):
    """x = fp32(1e-5): the fraction is EPS (SSL's clamp bound) and 1 - x rounds to 1 - EPS (the
    distance clamp's bound); x = 1 + 84 * 2^-23: 2 - x is 1 - EPS exactly."""
    v = torch.tensor([1e-5, -1e-5, 1 + 84 * 2.0**-23, 2 - 84 * 2.0**-23]).repeat(64).to(DEVICE)
    results = [evaluate(v.to(dt), None, torch.ones_like(v, dtype=dt), tau=1.0, method=method,
                        seed=6, backend=backend)
               for dt, backend in [(torch.float32, "triton"), (torch.float32, "torch")]]
    for got, want in zip(*results):
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_explicit_noise_of_another_dtype_is_read_as_given():
    gen = torch.Generator().manual_seed(4)
    v = latent((300,), torch.bfloat16, gen)
    noise = -torch.log(-torch.log(torch.rand((300, 2), generator=gen))).to(DEVICE).half()
    fused = sga_round(v, 0.5, noise=noise, backend="triton")
    ref = sga_round(v.float(), 0.5, noise=noise.float(), backend="torch")  # fp32 throughout
    eps = torch.finfo(torch.bfloat16).eps
    assert ((fused.float() - ref).abs() <= 2 * eps * (1 + ref.abs())).all()


def _launch(v, center, seeds, block, method, classes, tau=0.4):
    params = dict(method=method, classes=classes, a=DEFAULT_A[classes], r=0.98, n=1.5,
                  center=center, seeds=seeds, counter=torch.tensor([3, 1], device=DEVICE),
                  block=block, num_warps=4)
    tau = torch.tensor([tau], device=DEVICE)
    out = kernels.sga_round_forward(v, tau, **params)
    grads = kernels.sga_round_backward(torch.ones_like(v), v, tau, **params)
    return out, *grads


@pytest.mark.parametrize("method,classes", GUMBEL)
def test_results_do_not_depend_on_block_size(method, classes):
    gen = torch.Generator().manual_seed(5)
    v = latent((3, 5, 7), torch.float32, gen)
    center = latent((3, 5, 7), torch.float32, gen)
    for seeds in (torch.tensor([8]), torch.tensor([8, 9, 10])):  # one item of 105, three of 35
        runs = [_launch(v, center, seeds.to(DEVICE), block, method, classes)
                for block in (16, 32, 128, 1024)]
        for run in runs[1:]:
            for got, want in zip(run, runs[0]):
                assert torch.equal(got, want)


@pytest.mark.parametrize("method", TWO_CLASS_METHODS)
def test_in_kernel_two_class_noise_is_the_stream(method):
    """At a half-integer both candidates are at distance 1/2 (f(d_up) = f(d_down)), so at
    tau = 1 S - floor(v) = sigmoid(L) for the element's logistic variate L: the kernel's L,
    element by element, against sgafast.ops.noise (per-item seeds, a counter, items of 37
    elements, several blocks per item: the four-per-call layout across block edges; a BLOCK
    below 4 is raised to 4)."""
    v = (torch.arange(3 * 37, dtype=torch.float32).reshape(3, 37) % 9 - 4 + 0.5).to(DEVICE)
    seeds = torch.tensor([11, 2**40 + 7, 2**63 - 1], device=DEVICE)
    params = dict(method=method, classes=2, a=DEFAULT_A[2], r=0.98, n=1.5, seeds=seeds,
                  counter=torch.tensor([5, 2**33 + 2], device=DEVICE), num_warps=4)
    want = torch.sigmoid(logistic_noise((3, 37), seed=seeds.cpu(), counter=(5, 2**33 + 2)))
    tau = torch.tensor([1.0], device=DEVICE)
    for block in (2, 16, 64):
        got = kernels.sga_round_forward(v, tau, block=block, **params) - v.floor()
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)


def test_different_seeds_give_different_noise():
    v = torch.full((4096,), 0.5, device=DEVICE)  # S(0.5) at tau = 1 is w_up: pure noise
    first = sga_round(v, 1.0, method="linear", seed=1, backend="triton")
    assert torch.equal(first, sga_round(v, 1.0, method="linear", seed=1, backend="triton"))
    for other in (2, 2**32 + 1):  # the high word of the seed is the second Philox key
        second = sga_round(v, 1.0, method="linear", seed=other, backend="triton")
        assert (first != second).float().mean() > 0.99
    # and every element of one call gets its own draw
    assert first.unique().numel() > 4000


@pytest.mark.parametrize("method,classes", [("ssl", 2), ("cosine", 3)])
def test_per_item_seeds_equal_separate_calls(method, classes):
    gen = torch.Generator().manual_seed(6)
    v = latent((3, 4, 9), torch.float32, gen)
    center = latent((3, 4, 9), torch.float32, gen)
    grad_out = torch.randn(3, 4, 9, generator=gen).to(DEVICE)
    seeds = [17, 2**62 + 5, 17]
    options = dict(tau=0.3, method=method, classes=classes, backend="triton")
    batch = evaluate(v, center, grad_out, seed=torch.tensor(seeds, device=DEVICE), **options)
    for i, seed in enumerate(seeds):
        alone = evaluate(v[i], center[i], grad_out[i], seed=seed, **options)
        for got, want in zip(alone, batch):
            assert torch.equal(got, want[i])


@pytest.mark.parametrize("method", TWO_CLASS_METHODS)
def test_in_kernel_noise_rounds_up_with_the_closed_form_probability(method):
    """At tau = 1, w_up = sigmoid(l_up + g_up - l_down - g_down) > 1/2 exactly when the hard
    sample argmax(l + g) is the upper candidate: the kernel's soft output gives its draws."""
    fractions = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    samples = 20000
    v = (torch.arange(5 * samples) % 23 - 11 + fractions.repeat_interleave(samples)).float()
    out = sga_round(v.to(DEVICE), 1.0, method=method, seed=2024, backend="triton").cpu()
    went_up = (out - v.floor() > 0.5).double().reshape(5, samples).mean(1)
    expected = p_up_closed_form(method, fractions)
    bound = binomial_bound(expected, samples)
    assert ((went_up - expected).abs() <= bound).all(), (went_up, expected)


def extreme_values(dtype):
    base = torch.tensor([1e4, 1e4 + 0.5, 9999.5, 0.5, 1.5, 2.5, 0.0, 1.0, 2.0, 7.0, 1e-7,
                         3 + 1e-6, 3 - 1e-6, 0.49999997, 0.50000006, 1e-30, 123.25, 0.999999],
                        dtype=torch.float64)
    values = torch.cat([base, -base, torch.linspace(-20, 20, 301, dtype=torch.float64)])
    return values.to(dtype).to(DEVICE)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("method,classes", GUMBEL)
def test_extreme_inputs_stay_finite(method, classes, dtype):
    v = extreme_values(dtype)
    grad_out = torch.ones_like(v)
    centers = [None, torch.linspace(-3, 3, v.numel()).to(dtype).to(DEVICE)]
    for tau in (1e-3, 1e-2, 0.1, 0.5, 1.0):
        for center in centers:
            for noise in (None, torch.tensor([30.0, -5.0, 12.0], device=DEVICE)[:classes]
                          .expand(*v.shape, classes)):
                source = dict(seed=7) if noise is None else dict(noise=noise)
                out, grad_v, grad_c = evaluate(v, center, grad_out, tau=tau, method=method,
                                               classes=classes, backend="triton", **source)
                # out - v = S(x) - x (x = v - center): at most the farthest candidate's distance
                reach = 1.0 if classes == 2 else 1.5
                assert torch.isfinite(out).all()
                assert ((out - v).double().abs() <= reach + 1e-2 * v.double().abs() + 1e-2).all()
                # gradients are finite wherever the true value fits the dtype (fp16: < 65504)
                wide = evaluate(v.float(), None if center is None else center.float(),
                                grad_out.float(), tau=tau, method=method, classes=classes,
                                backend="triton", **source)[1:]
                for got, full in zip((grad_v, grad_c), wide):
                    if got is not None:
                        fits = full.abs() < torch.finfo(dtype).max / 2
                        assert torch.isfinite(full).all()
                        assert torch.isfinite(got[fits]).all()


@pytest.mark.parametrize("backend", ["aot_eager"] + (["inductor"] if DEVICE.type == "cuda" else []))
def test_torch_compile_keeps_the_op_in_one_graph(backend):
    torch._dynamo.reset()

    def step(v, center=None, seed=None):
        return sga_round(v, 0.4, method="ssl", center=center, seed=seed, backend="triton") ** 2

    gen = torch.Generator().manual_seed(8)
    v = latent((2, 6, 5), torch.float32, gen)
    center = latent((1, 6, 1), torch.float32, gen)
    seeds = torch.tensor([3, 4], device=DEVICE)
    explanation = torch._dynamo.explain(step)(v, center, seeds)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(step, backend=backend, fullgraph=True)
    grad_out = torch.randn(2, 6, 5, generator=gen).to(DEVICE)
    eager = evaluate(v, center, grad_out, fn=step, seed=seeds)
    traced = evaluate(v, center, grad_out, fn=compiled, seed=seeds)
    for got, want in zip(traced, eager):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_short_refinement_triton_equals_torch(default_model, kodak_crops):
    x = kodak_crops[:, :, :48, :56].to(DEVICE)
    model = copy.deepcopy(default_model)  # the session's model stays on the CPU
    model.net.to(DEVICE)
    runs = [refine_batch(model, x, ["a", "b"],
                         RefineConfig(iters=4, track_every=0, lr=EQUALITY_LR, backend=backend))
            for backend in ("triton", "torch")]
    for fused, ref in zip(*runs):
        torch.testing.assert_close(fused.relaxed_loss, ref.relaxed_loss, rtol=1e-5, atol=0)
        torch.testing.assert_close(fused.latents, ref.latents, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_refused():
    v = torch.zeros(4, 3, device=DEVICE)
    with pytest.raises(SgafastError, match="seed"):
        sga_round(v, 0.5, seed=torch.tensor([1, 2], device=DEVICE), backend="triton")
    with pytest.raises(SgafastError, match="seed"):
        sga_round(v, 0.5, seed=-1, backend="triton")
    with pytest.raises(SgafastError, match="broadcast"):
        sga_round(v, 0.5, seed=1, center=torch.zeros(5, device=DEVICE), backend="triton")
    with pytest.raises(SgafastError, match="float64"):
        sga_round(v.double(), 0.5, seed=1, backend="triton")


@pytest.mark.skipif(DEVICE.type == "cuda", reason="a CPU-only machine's behaviour")
def test_cpu_without_the_interpreter_says_what_to_do():
    code = ("import torch, sgafast\n"
            "try:\n"
            "    sgafast.sga_round(torch.ones(3), 0.5, seed=1, backend='triton')\n"
            "except sgafast.SgafastError as err:\n"
            "    print(err)\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert "set TRITON_INTERPRET=1 before importing triton" in result.stdout, result.stderr
    assert "--backend torch" in result.stdout
