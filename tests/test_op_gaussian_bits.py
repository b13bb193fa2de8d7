"""The fused Gaussian-conditional rate kernel against CompressAI's own GaussianConditional."""

import math

import pytest
import torch
import triton
import triton.language as tl
from compressai.entropy_models import GaussianConditional

from helpers import DEVICE, assert_no_worse_than_torch, tolerance
from sgafast.errors import SgafastError
from sgafast.families.base import Gaussian
from sgafast.kernels import gaussian_bits as kernels
from sgafast.kernels.gaussian import element_bits
from sgafast.ops.gaussian_bits import gaussian_bits

BOUND = torch.tensor(0.11).item()  # CompressAI's scale bound, an fp32 buffer
SIGMAS = [-1.0, 0.0, 1e-3, 0.1, BOUND, 0.12, 0.5, 1.0, 2.0, 10.0, 1e3, 1e5]
RESIDUALS = [0.0, 0.25, 0.5, -0.5, 0.75, 1.0, -2.0, 5.0, 40.0, 1e3, -1e5, 3e7]


def compressai(v, scales, means, grad_bits, dtype, scale_bound=0.11, likelihood_bound=1e-9):
    """(bits, grad v, grad scales, grad means) by CompressAI through Gaussian.bits (CompressAI's
    _likelihood and LowerBound), on the inputs cast to dtype. Its bounds are fp32 buffers, as in a
    model: float64 casts them (exactly), lower precisions keep them, and torch promotes."""
    gc = GaussianConditional(None, scale_bound=scale_bound, likelihood_bound=likelihood_bound)
    gc = gc.to(DEVICE, torch.float64 if dtype == torch.float64 else torch.float32)
    leaves = [None if t is None else t.to(DEVICE, dtype).detach().requires_grad_()
              for t in (v, scales, means)]
    bits = Gaussian.of(gc).bits(*leaves)
    bits.backward(grad_bits.to(DEVICE, bits.dtype))
    return bits.detach(), *(None if t is None else t.grad for t in leaves)


def fused(v, scales, means, grad_bits, **bounds):
    """The same four by gaussian_bits, on the inputs as given."""
    leaves = [None if t is None else t.to(DEVICE).detach().requires_grad_()
              for t in (v, scales, means)]
    bits = gaussian_bits(*leaves, **bounds)
    bits.backward(grad_bits.to(DEVICE))
    return bits.detach(), *(None if t is None else t.grad for t in leaves)


# ----------------------------------------------------------------------------------------------
# The per-element helper, one element per lane, an upstream sign of its own per element
# ----------------------------------------------------------------------------------------------


@triton.jit
def _elementwise_kernel(residual_ptr, sigma_ptr, upstream_ptr, bits_ptr, grad_residual_ptr,
                        grad_sigma_ptr, n, scale_bound, likelihood_bound, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    residual = tl.load(residual_ptr + offs, mask=mask, other=0.0)
    sigma = tl.load(sigma_ptr + offs, mask=mask, other=1.0)
    upstream = tl.load(upstream_ptr + offs, mask=mask, other=1.0)
    bits, d_residual, d_sigma = element_bits(residual, sigma, upstream, scale_bound,
                                             likelihood_bound)
    tl.store(bits_ptr + offs, bits, mask=mask)
    tl.store(grad_residual_ptr + offs, upstream * d_residual, mask=mask)
    tl.store(grad_sigma_ptr + offs, upstream * d_sigma, mask=mask)


def helper(residual, sigma, upstream, scale_bound=0.11, likelihood_bound=1e-9):
    """(bits, upstream * d bits/d residual, upstream * d bits/d sigma) of each fp32 element."""
    residual, sigma, upstream = (t.float().to(DEVICE).contiguous()
                                 for t in (residual, sigma, upstream))
    outputs = [torch.empty_like(residual) for _ in range(3)]
    _elementwise_kernel[(1,)](residual, sigma, upstream, *outputs, residual.numel(),
                              scale_bound, likelihood_bound,
                              BLOCK=triton.next_power_of_2(residual.numel()))
    return outputs


def assert_elements_match(residual, sigma, upstream, **bounds):
    """Each element's bits and gradients against CompressAI's, one image per element."""
    args = (residual[:, None], sigma[:, None], None, upstream)
    ref64 = compressai(*args, torch.float64, **bounds)
    same = compressai(*args, torch.float32, **bounds)
    got = helper(residual, sigma, upstream, **bounds)
    for what, k, t, r in zip(["bits", "grad residual", "grad sigma"], got, same, ref64):
        assert_no_worse_than_torch(k, t.flatten(), r.flatten(), what, **tolerance(torch.float32))
    return got, [t.flatten() for t in ref64[:3]]


def tricky_elements(n, gen):
    """(residual, sigma, upstream) from the centre to the tails: scales log-uniform over 1e-3 to
    1e5, some exactly at the bound and some below it (down to -0.5), residuals in units of the
    scale, some exactly 0 or +-1/2, some past the likelihood bound, upstreams of both signs."""
    kind = torch.randint(0, 8, (n,), generator=gen)
    sigma = torch.exp(torch.empty(n, dtype=torch.float64).uniform_(math.log(1e-3),
                                                                   math.log(1e5), generator=gen))
    sigma = torch.where(kind == 0, BOUND, sigma)
    sigma = torch.where(kind == 1, torch.rand(n, generator=gen, dtype=torch.float64) - 0.5, sigma)
    width = torch.tensor([0.3, 1.0, 3.0], dtype=torch.float64)[torch.randint(0, 3, (n,),
                                                                             generator=gen)]
    residual = torch.randn(n, generator=gen, dtype=torch.float64) * sigma.clamp(min=BOUND) * width
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).double()
    residual = torch.where(kind == 2, 0.0, residual)
    residual = torch.where(kind == 3, 0.5 * sign, residual)
    far = 0.5 + sigma.clamp(min=BOUND) * torch.empty(n, dtype=torch.float64).uniform_(
        5.5, 40.0, generator=gen)
    residual = torch.where(kind == 4, far * sign, residual)
    residual = torch.where(kind == 5, torch.randn(n, generator=gen, dtype=torch.float64), residual)
    upstream = torch.randn(n, generator=gen, dtype=torch.float64)
    return residual.float(), sigma.float(), upstream.float()


def test_helper_matches_compressai_on_random_elements():
    gen = torch.Generator().manual_seed(0)
    assert_elements_match(*tricky_elements(8192, gen))


def test_helper_does_not_cancel_where_compressai_does():
    """Wide scales (s > 1, 1/2 < r <= s^2): the two Phi values nearly coincide and CompressAI's
    difference loses a factor of up to ~min(s, s^2 / r); the kernel's series does not. (Its
    gradients below the likelihood bound carry the Gaussian's error, m^2 times that of
    m = r / s.)"""
    gen = torch.Generator().manual_seed(1)
    sigma = torch.exp(torch.empty(4096).uniform_(math.log(2.0), math.log(1e5), generator=gen))
    residual = 0.5 + (sigma**2 - 0.5) * torch.rand(4096, generator=gen) ** 4
    residual = torch.where(torch.rand(4096, generator=gen) < 0.5, residual, -residual)
    upstream = torch.randn(4096, generator=gen)
    args = (residual[:, None], sigma[:, None], None, upstream)
    ref64, same = compressai(*args, torch.float64), compressai(*args, torch.float32)
    got = helper(residual, sigma, upstream)
    eps = torch.finfo(torch.float32).eps
    for what, k, r, ulps in zip(["bits", "grad residual", "grad sigma"], got, ref64, [2, 8, 8]):
        scale = 1 + r.flatten().abs()
        assert ((k.double() - r.flatten()).abs() / scale).max() <= ulps * eps, what
    assert ((same[0] - ref64[0]).abs() / (1 + ref64[0])).max() > 1000 * eps


def extreme_grid():
    """Every residual of RESIDUALS with every scale of SIGMAS, once for each upstream sign."""
    residual = torch.tensor(RESIDUALS).repeat_interleave(len(SIGMAS)).repeat(2)
    sigma = torch.tensor(SIGMAS).repeat(2 * len(RESIDUALS))
    upstream = torch.tensor([1.5, -0.75]).repeat_interleave(len(SIGMAS) * len(RESIDUALS))
    return residual, sigma, upstream


def test_helper_matches_compressai_at_the_extremes():
    residual, sigma, upstream = extreme_grid()
    _, (ref_bits, _, _) = assert_elements_match(residual, sigma, upstream)
    # the grid reaches the likelihood bound, -log2(1e-9) = 29.9 bits, with both upstream signs
    assert (ref_bits == ref_bits.max()).sum() > 20 and ref_bits.max() > 29.89


@pytest.mark.parametrize("scale_bound,likelihood_bound", [(0.11, 1e-9), (0.3, 1e-5)])
def test_lower_bound_gradient_rule(scale_bound, likelihood_bound):
    """Below a bound, CompressAI's LowerBound passes a gradient only where it pushes the value
    up: each element below a bound, with upstreams of both signs, against CompressAI's own."""
    residual = torch.tensor([0.0, 0.2, -0.45, 0.5, 0.8, -1.2, 2.0, 3.0, 6.0, -60.0])
    sigma = torch.tensor([-2.0, 0.0, 0.01, 0.05, 0.1, scale_bound, 2.0, 0.5, 1.0, 4.0])
    residual, sigma = residual.repeat_interleave(10).repeat(2), sigma.repeat(20)
    upstream = torch.tensor([2.0, -0.5]).repeat_interleave(100)
    (_, grad_residual, grad_sigma), (ref_bits, ref_residual, ref_sigma) = assert_elements_match(
        residual, sigma, upstream, scale_bound=scale_bound, likelihood_bound=likelihood_bound)
    below_scale = (sigma < torch.tensor(scale_bound).item()).to(DEVICE)
    below_likelihood = ref_bits == ref_bits.max()
    assert ref_bits.max() == pytest.approx(-math.log2(likelihood_bound), rel=1e-6)
    for below, got, want in [(below_scale, grad_sigma, ref_sigma),
                             (below_likelihood, grad_residual, ref_residual)]:
        # blocked exactly where CompressAI blocks (the values themselves are checked above) ...
        assert (got[below & (want == 0)] == 0).all()
        # ... and the rule at work: each bound blocks some gradients and passes sizeable ones
        assert (below & (want == 0)).any() and (below & (want.abs() > 1e-2)).any()


# ----------------------------------------------------------------------------------------------
# The custom op: bits per image, gradients, dtypes, launch shapes, torch.compile
# ----------------------------------------------------------------------------------------------


def latents(shape, dtype, gen, with_means=True):
    """(v, scales, means) in dtype: tricky residuals around means on half-integers (so that
    residuals of 0 and +-1/2 stay exact in bf16)."""
    n = math.prod(shape)
    residual, sigma, _ = tricky_elements(n, gen)
    means = torch.round(2 * torch.randn(n, generator=gen)) / 2
    if dtype == torch.float16:  # its range: no scales or residuals beyond 1e4
        sigma, residual = sigma.clamp(max=1e3), residual.clamp(-1e4, 1e4)
    v = residual + means if with_means else residual
    return (v.reshape(shape).to(dtype), sigma.reshape(shape).to(dtype),
            means.reshape(shape).to(dtype) if with_means else None)


def assert_op_matches(v, scales, means, grad_bits, **bounds):
    """Per-image bits (fp32 whatever the input dtype) and the gradients in v's dtype.

    The baseline is CompressAI in fp32 on the same (exact) inputs: in fp16 or bf16 its
    1/2 - |v - mu| is rounded to the input dtype, so from |v - mu| = 1024 (fp16) or 128 (bf16)
    on the two Phi arguments can coincide, L = 0 and the bits jump to the bound, and in fp16
    the two Phi terms' gradients then overflow to inf - inf = NaN."""
    dtype = v.dtype
    ref64 = compressai(v, scales, means, grad_bits, torch.float64, **bounds)
    same = compressai(v, scales, means, grad_bits, torch.float32, **bounds)
    got = fused(v, scales, means, grad_bits, **bounds)
    assert got[0].dtype == torch.float32 and got[0].shape == v.shape[:1]
    assert_no_worse_than_torch(got[0], same[0], ref64[0], "bits", **tolerance(torch.float32))
    for what, k, t, r in zip(["grad v", "grad scales", "grad means"], got[1:], same[1:],
                             ref64[1:]):
        if r is not None:
            assert k.dtype == dtype
            assert_no_worse_than_torch(k, t, r, what, **tolerance(dtype))


@pytest.mark.parametrize("with_means", [True, False], ids=["means", "no-means"])
@pytest.mark.parametrize("shape", [(3, 5, 7, 11), (1, 1, 1, 1)], ids=["odd", "one"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_op_matches_compressai(dtype, shape, with_means):
    gen = torch.Generator().manual_seed(math.prod(shape) + 7 * with_means)
    v, scales, means = latents(shape, dtype, gen, with_means)
    grad_bits = torch.tensor([1.25, -0.5, 3.0])[:shape[0]]
    assert_op_matches(v, scales, means, grad_bits)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_op_matches_compressai_at_the_extremes(dtype):
    """The grid as two images (one per upstream sign); bf16 takes its own rounding of 0.11 as
    the bound, so that some scales sit exactly on it there too."""
    residual, sigma, _ = extreme_grid()
    bound = torch.tensor(BOUND).to(dtype).item()
    sigma = torch.where(sigma == BOUND, bound, sigma)
    v, scales = residual.reshape(2, -1).to(dtype), sigma.reshape(2, -1).to(dtype)
    assert (scales == bound).any() and v.isfinite().all() and scales.isfinite().all()
    means = torch.linspace(-3, 3, v.numel()).reshape(v.shape).round().to(dtype)
    assert_op_matches(v + means, scales, means, torch.tensor([1.5, -0.75]), scale_bound=bound)


def test_means_none_is_zero_means():
    gen = torch.Generator().manual_seed(3)
    v, scales, _ = latents((2, 3, 4, 5), torch.float32, gen, with_means=False)
    v, scales = v.to(DEVICE), scales.to(DEVICE)
    assert torch.equal(gaussian_bits(v, scales), gaussian_bits(v, scales, torch.zeros_like(v)))


def test_broadcast_scales_and_means_get_summed_gradients():
    gen = torch.Generator().manual_seed(4)
    v, _, _ = latents((2, 3, 4, 5), torch.float32, gen, with_means=False)
    scales = torch.rand(1, 3, 1, 1, generator=gen) * 2
    means = torch.randn(1, 3, 4, 5, generator=gen)
    grad_bits = torch.tensor([0.5, 2.0])
    broadcast = fused(v, scales, means, grad_bits)
    full = fused(v, scales.expand(v.shape), means.expand(v.shape), grad_bits)
    assert torch.equal(broadcast[0], full[0]) and torch.equal(broadcast[1], full[1])
    torch.testing.assert_close(broadcast[2], full[2].sum_to_size(scales.shape))
    torch.testing.assert_close(broadcast[3], full[3].sum_to_size(means.shape))


def test_partial_sums_are_deterministic_and_do_not_depend_on_the_block():
    """Several programs per image (block 128: 4 of them for 385 elements), summed by torch."""
    gen = torch.Generator().manual_seed(5)
    v, scales, means = (t.to(DEVICE) for t in latents((3, 5, 7, 11), torch.float32, gen))
    grad_bits = torch.tensor([1.0, -2.0, 0.5], device=DEVICE)
    bounds = {"scale_bound": 0.11, "likelihood_bound": 1e-9}

    def run(block):
        return (kernels.gaussian_bits_forward(v, scales, means, block=block, num_warps=4,
                                              **bounds),
                *kernels.gaussian_bits_backward(grad_bits, v, scales, means, block=block,
                                                num_warps=4, **bounds))

    small, again, whole = run(128), run(128), run(512)
    for got, repeat, want in zip(small, again, whole):
        assert torch.equal(got, repeat)
    torch.testing.assert_close(small[0], whole[0], rtol=1e-6, atol=0)
    for got, want in zip(small[1:], whole[1:]):
        assert torch.equal(got, want)  # elementwise: the block cannot matter


def test_torch_compile_keeps_the_op_in_one_graph():
    torch._dynamo.reset()

    def loss(v, scales, means):
        return (gaussian_bits(v, scales, means) * torch.tensor([1.0, -1.0], device=v.device)).sum()

    gen = torch.Generator().manual_seed(6)
    args = [t.to(DEVICE) for t in latents((2, 3, 4, 5), torch.float32, gen)]
    explanation = torch._dynamo.explain(loss)(*args)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    results = []
    for fn in (loss, compiled):
        leaves = [t.clone().requires_grad_() for t in args]
        value = fn(*leaves)
        value.backward()
        results.append([value.detach()] + [t.grad for t in leaves])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_bad_inputs_are_refused():
    v = torch.zeros(2, 3, device=DEVICE)
    with pytest.raises(SgafastError, match="float64"):
        gaussian_bits(v.double(), v.double())
    with pytest.raises(SgafastError, match="expected a contiguous"):
        gaussian_bits(v, v.half())
    with pytest.raises(SgafastError, match="broadcast"):
        gaussian_bits(v, torch.ones(4, device=DEVICE))
    with pytest.raises(SgafastError, match="batch dimension"):
        gaussian_bits(v[0, 0], v[0, 0])
    with pytest.raises(SgafastError, match="positive"):
        gaussian_bits(v, v, scale_bound=0.0)
