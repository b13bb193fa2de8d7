"""The fused rounding-rate op against sga_round followed by CompressAI's Gaussian conditional."""

import math

import pytest
import torch
from compressai.entropy_models import GaussianConditional

from helpers import DEVICE, assert_no_worse_than_torch, tolerance
from sgafast import Rounding, sga_round
from sgafast.errors import SgafastError
from sgafast.families.base import Gaussian
from sgafast.kernels import sga_round_bits as kernels
from sgafast.ops.gaussian_bits import gaussian_bits
from sgafast.ops.rounding import TWO_CLASS_METHODS
from sgafast.ops.sga_round_bits import sga_round_bits

BOUND = torch.tensor(0.11).item()  # CompressAI's scale bound, an fp32 buffer
LIKELIHOOD_BOUND = 1e-9
TAU = 0.5
GUMBEL = [(m, 2) for m in TWO_CLASS_METHODS] + [("ssl", 3)]
SEEDS = torch.tensor([5, 2**40 + 3, 2**63 - 1])
COUNTER = torch.tensor([17, 1])  # (iteration, latent), as the refinement step gives them
GRAD_BITS = torch.tensor([1.25, -0.5, 3.0])  # both signs: LowerBound's gating depends on it


def inputs(shape, dtype, gen):
    """(y, means, scales) in dtype: y - means over several integers, a quarter of it snapped to
    integers and half-integers; scales log-uniform over [0.03, 30], some exactly at the bound
    (dtype's rounding of 0.11) and some below it, so that both bounds are reached."""
    numel = math.prod(shape)
    x = torch.randn(numel, generator=gen, dtype=torch.float64) * 3
    x = torch.where(torch.rand(numel, generator=gen) < 0.25, torch.round(2 * x) / 2, x)
    means = torch.round(4 * torch.randn(numel, generator=gen, dtype=torch.float64)) / 4
    scales = torch.exp(torch.empty(numel, dtype=torch.float64).uniform_(
        math.log(0.03), math.log(30.0), generator=gen))
    kind = torch.randint(0, 8, (numel,), generator=gen)
    scales = torch.where(kind == 0, scale_bound(dtype), scales)
    return tuple(t.reshape(shape).to(dtype) for t in (x + means, means, scales))


def scale_bound(dtype):
    """0.11 as the dtype holds it: scales can sit exactly on the bound in that dtype too."""
    return torch.tensor(BOUND).to(dtype).item()


def composition(y, means, scales, grad_y_soft, grad_bits, rounding, dtype, bound,
                backend="torch"):
    """(y_soft, bits, grad y, grad means, grad scales) of sga_round in dtype, then the bits of
    y_soft: CompressAI's, via Gaussian.bits, in float64 for
    float64, else in fp32 (its bounds are fp32 buffers); with ``backend="triton"``, today's two
    kernels, sga_round's and gaussian_bits'."""
    rate_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    gc = GaussianConditional(None, scale_bound=bound, likelihood_bound=LIKELIHOOD_BOUND)
    gaussian = Gaussian.of(gc.to(DEVICE, rate_dtype))
    leaves = [None if t is None else t.to(DEVICE, dtype).detach().requires_grad_()
              for t in (y, means, scales)]
    y_, mu, sigma = leaves
    y_soft = sga_round(y_, TAU, rounding, center=mu, seed=SEEDS[:y.shape[0]].to(DEVICE),
                       counter=COUNTER.to(DEVICE), backend=backend)
    if backend == "triton":
        bits = gaussian_bits(y_soft, sigma, mu, scale_bound=bound,
                             likelihood_bound=LIKELIHOOD_BOUND)
    else:
        bits = gaussian.bits(y_soft.to(rate_dtype), sigma.to(rate_dtype),
                             None if mu is None else mu.to(rate_dtype))
    torch.autograd.backward([y_soft, bits], [grad_y_soft.to(DEVICE, dtype),
                                             grad_bits.to(DEVICE, bits.dtype)])
    return y_soft.detach(), bits.detach(), *(None if t is None else t.grad for t in leaves)


def fused(y, means, scales, grad_y_soft, grad_bits, rounding, bound, fn):
    """The same five by ``fn``: sga_round_bits, or a compiled sga_round_bits."""
    leaves = [None if t is None else t.to(DEVICE).detach().requires_grad_()
              for t in (y, means, scales)]
    y_, mu, sigma = leaves
    y_soft, bits = fn(y_, torch.tensor([TAU], device=DEVICE), rounding, means=mu, scales=sigma,
                      seed=SEEDS[:y.shape[0]].to(DEVICE), counter=COUNTER.to(DEVICE),
                      scale_bound=bound, likelihood_bound=LIKELIHOOD_BOUND)
    torch.autograd.backward([y_soft, bits], [grad_y_soft.to(DEVICE, y.dtype),
                                             grad_bits.to(DEVICE)])
    return y_soft.detach(), bits.detach(), *(None if t is None else t.grad for t in leaves)





def assert_matches_composition(y, means, scales, rounding, gen, fn=sga_round_bits):
    """Outputs and the gradients of y, means and scales, for random upstreams of both outputs,
    against the composition in float64 (on the same noise) and in y's dtype. Returns the worst
    errors and the float64 results."""
    dtype, bound = y.dtype, scale_bound(y.dtype)
    grads = (torch.randn(y.shape, generator=gen).to(dtype), GRAD_BITS[:y.shape[0]])
    ref64 = composition(y, means, scales, *grads, rounding, torch.float64, bound)
    sames = [composition(y, means, scales, *grads, rounding, dtype, bound, backend)
             for backend in ("torch", "triton")]
    got = fused(y, means, scales, *grads, rounding, bound, fn)
    assert got[1].dtype == torch.float32 and got[1].shape == y.shape[:1]
    names = ["y_soft", "bits", "grad y", "grad means", "grad scales"]
    worst = {}
    for i, (what, k, r) in enumerate(zip(names, got, ref64)):
        if r is None:
            assert k is None, what
            continue
        same = [s[i] for s in sames]
        if what == "bits":  # fp32 from y_soft - mu in fp32, whatever y's dtype
            worst[what] = assert_no_worse_than_torch(k, same, r, what,
                                                     **tolerance(torch.float32))
        else:
            assert k.dtype == dtype, what
            worst[what] = assert_no_worse_than_torch(k, same, r, what, **tolerance(dtype))
    return worst, ref64


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("method,classes", GUMBEL)
def test_matches_the_composition(method, classes, dtype):
    gen = torch.Generator().manual_seed(classes * 10 + TWO_CLASS_METHODS.index(method))
    shape = (3, 5, 7, 11) if dtype == torch.float32 else (2, 3, 5, 7)
    y, means, scales = inputs(shape, dtype, gen)
    _, ref64 = assert_matches_composition(y, means, scales, Rounding(method, classes), gen)
    # the inputs reach both bounds: scales below 0.11 and likelihoods at 1e-9 (29.9 bits)
    assert (scales < scale_bound(dtype)).any()
    gc = GaussianConditional(None, likelihood_bound=LIKELIHOOD_BOUND).double()
    likelihood = gc.likelihood_lower_bound(gc._likelihood(ref64[0].cpu().double(),
                                                          scales.double(), means.double()))
    assert (likelihood == gc.likelihood_lower_bound.bound).any()


def test_without_means():
    gen = torch.Generator().manual_seed(40)
    y, _, scales = inputs((2, 3, 4, 5), torch.float32, gen)
    assert_matches_composition(y, None, scales, Rounding("cosine", 2), gen)


@pytest.mark.parametrize("block", [64, 256])
@pytest.mark.parametrize("method,classes", [("ssl", 2), ("linear", 3)])
def test_several_programs_per_image(method, classes, block):
    """The launchers with blocks smaller than an image (385 elements): the noise indices and the
    partial sums of bits per program, against the composition."""
    gen = torch.Generator().manual_seed(41)
    y, means, scales = (t.to(DEVICE) for t in inputs((3, 5, 7, 11), torch.float32, gen))
    rounding = Rounding(method, classes)
    grad_y_soft = torch.randn(y.shape, generator=gen).to(DEVICE)
    options = dict(method=method, classes=classes, a=rounding.a, r=rounding.r, n=rounding.n,
                   seeds=SEEDS.to(DEVICE), counter=COUNTER.to(DEVICE), scale_bound=BOUND,
                   likelihood_bound=LIKELIHOOD_BOUND, block=block, num_warps=4)
    tau = torch.tensor([TAU], device=DEVICE)
    got = (*kernels.sga_round_bits_forward(y, tau, scales, means, **options),
           *kernels.sga_round_bits_backward(grad_y_soft, GRAD_BITS.to(DEVICE), y, tau, scales,
                                            means, **options))
    want = composition(y, means, scales, grad_y_soft, GRAD_BITS, rounding, torch.float32, BOUND)
    # got: y_soft, bits, grad y, grad scales, grad means; want: ..., grad means, grad scales
    for k, w in zip(got, [want[0], want[1], want[2], want[4], want[3]]):
        torch.testing.assert_close(k, w, rtol=1e-4, atol=1e-4)


def test_torch_compile_keeps_the_op_in_one_graph():
    torch._dynamo.reset()
    rounding = Rounding("ssl", 2)
    gen = torch.Generator().manual_seed(42)
    y, means, scales = inputs((2, 3, 4, 5), torch.float32, gen)
    kwargs = dict(means=means.to(DEVICE), scales=scales.to(DEVICE), seed=SEEDS[:2].to(DEVICE),
                  counter=COUNTER.to(DEVICE), scale_bound=BOUND, likelihood_bound=LIKELIHOOD_BOUND)
    tau = torch.tensor([TAU], device=DEVICE)
    explanation = torch._dynamo.explain(sga_round_bits)(y.to(DEVICE), tau, rounding, **kwargs)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
    compiled = torch.compile(sga_round_bits, backend="aot_eager", fullgraph=True)
    assert_matches_composition(y, means, scales, rounding, gen, fn=compiled)


def test_bad_inputs_are_refused():
    y = torch.zeros(2, 3, device=DEVICE)
    tau = torch.tensor([TAU], device=DEVICE)
    seeds = SEEDS[:2].to(DEVICE)
    with pytest.raises(SgafastError, match="one seed per image"):
        sga_round_bits(y, tau, Rounding(), means=y, scales=y + 1, seed=3)
    with pytest.raises(SgafastError, match="float64"):
        sga_round_bits(y.double(), tau, Rounding(), means=None, scales=y.double(), seed=seeds)
    with pytest.raises(SgafastError, match="Gumbel"):
        sga_round_bits(y, tau, Rounding("ste"), means=None, scales=y + 1, seed=seeds)
    with pytest.raises(SgafastError, match="broadcast"):
        sga_round_bits(y, tau, Rounding(), means=None, scales=torch.ones(4, device=DEVICE),
                       seed=seeds)
    with pytest.raises(SgafastError, match="counter"):
        sga_round_bits(y, tau, Rounding(), means=None, scales=y + 1, seed=seeds, counter=(1,))
