"""y's soft rounding S(y - mu; tau) + mu fused with its Gaussian bits: one kernel each way."""

# Forward reads y, mu and sigma once, draws the noise in registers (the stream of sgafast.ops.noise)
# and writes y_soft and one partial sum of bits per program; the bits' residual y_soft - mu is
# base + s in fp32, never re-read from y_soft. Backward regenerates the noise, recomputes S and
# the likelihood, and writes the gradients of y, mu and sigma for the upstreams of both outputs.
# The per-element arithmetic is kernels.soft_round's and kernels.gaussian's, as in the two
# unfused kernels.

import torch
import triton
import triton.language as tl

from sgafast.errors import SgafastError
from sgafast.kernels.fastmath import round_to
from sgafast.kernels.gaussian import element_bits
from sgafast.kernels.launch import (MIN_BLOCK, check_grad_bits, check_input, check_like,
                                    check_schedule, on_device, per_image_grid, program_block)
from sgafast.kernels.soft_round import METHOD_IDS, soft_round


@triton.jit
def _load_round(y_ptr, means_ptr, scales_ptr, seeds_ptr, counter_ptr, item, block_in_item, offs,
                mask, tau_ptr, a, r, n, METHOD: tl.constexpr, CLASSES: tl.constexpr,
                HAS_MEANS: tl.constexpr, BLOCK: tl.constexpr):
    """(residual, mu, sigma, ds) in fp32: residual = S(y - mu) = y_soft - mu, ds = S'.

    Padding lanes get y = mu = 0 and sigma = 1: finite values, never stored or summed.
    """
    x = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    mu = tl.zeros_like(x)
    if HAS_MEANS:
        mu = tl.load(means_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sigma = tl.load(scales_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    base, s, ds = soft_round(x - mu, seeds_ptr, counter_ptr, None, item, block_in_item, offs,
                             mask, tau_ptr, a, r, n, METHOD, CLASSES, False, BLOCK)
    return base + s, mu, sigma, ds


# blocks_per_item is not specialised (fewer compiled variants), as in kernels.sga_round
@triton.jit(do_not_specialize=["blocks_per_item"])
def _sga_round_bits_fwd_kernel(y_ptr, means_ptr, scales_ptr, seeds_ptr, counter_ptr, y_soft_ptr,
                               partial_ptr, per_item, blocks_per_item, tau_ptr, a, r, n,
                               scale_bound, likelihood_bound, METHOD: tl.constexpr,
                               CLASSES: tl.constexpr, HAS_MEANS: tl.constexpr, BLOCK: tl.constexpr):
    item, block_in_item, offs, mask = program_block(per_item, blocks_per_item, BLOCK)
    residual, mu, sigma, _ = _load_round(y_ptr, means_ptr, scales_ptr, seeds_ptr, counter_ptr,
                                         item, block_in_item, offs, mask, tau_ptr, a, r, n,
                                         METHOD, CLASSES, HAS_MEANS, BLOCK)
    tl.store(y_soft_ptr + offs, round_to(residual + mu, y_soft_ptr.dtype.element_ty), mask=mask)
    bits, _, _ = element_bits(residual, sigma, 1.0, scale_bound, likelihood_bound)
    # one partial sum per program, summed by torch: deterministic, unlike atomics
    tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.where(mask, bits, 0.0), axis=0))


@triton.jit(do_not_specialize=["blocks_per_item"])
def _sga_round_bits_bwd_kernel(grad_y_soft_ptr, grad_bits_ptr, y_ptr, means_ptr, scales_ptr,
                               seeds_ptr, counter_ptr, grad_y_ptr, grad_means_ptr, grad_scales_ptr,
                               per_item, blocks_per_item, tau_ptr, a, r, n, scale_bound,
                               likelihood_bound, METHOD: tl.constexpr, CLASSES: tl.constexpr,
                               HAS_MEANS: tl.constexpr, MEANS_GRAD: tl.constexpr,
                               BLOCK: tl.constexpr):
    item, block_in_item, offs, mask = program_block(per_item, blocks_per_item, BLOCK)
    residual, _, sigma, ds = _load_round(y_ptr, means_ptr, scales_ptr, seeds_ptr, counter_ptr,
                                         item, block_in_item, offs, mask, tau_ptr, a, r, n,
                                         METHOD, CLASSES, HAS_MEANS, BLOCK)
    # one value per image, as a block: Triton's interpreter cannot `|` a scalar mask with a block
    upstream = tl.broadcast_to(tl.load(grad_bits_ptr + item), (BLOCK,))
    _, d_residual, d_sigma = element_bits(residual, sigma, upstream, scale_bound,
                                          likelihood_bound)
    grad_y_soft = tl.load(grad_y_soft_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # y_soft and the bits' residual both move with S(y - mu): their upstreams add up before S'
    grad_y = (grad_y_soft + upstream * d_residual) * ds
    tl.store(grad_y_ptr + offs, round_to(grad_y, grad_y_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_scales_ptr + offs,
             round_to(upstream * d_sigma, grad_scales_ptr.dtype.element_ty), mask=mask)
    if MEANS_GRAD:
        # d y_soft/d mu = 1 - S' and d bits/d mu = -b_r S': the sum is grad_y_soft - grad_y
        tl.store(grad_means_ptr + offs,
                 round_to(grad_y_soft - grad_y, grad_means_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _check(y, tau, seeds, counter, block, grad_bits=None, **like_y):
    """Dtype, device, contiguity and shapes, up front (``like_y``: tensors shaped like y)."""
    check_input(y, block, kernels="rounding-rate", name="y", batched=True,
                fallback="use sga_round(backend='torch') and codec.bits")
    check_schedule(y, tau, counter)
    # bits are per image and the noise is keyed by the element's index within its seed's item:
    # the two agree only with one seed per image
    if seeds.shape != y.shape[:1] or seeds.dtype != torch.int64 or seeds.device != y.device:
        raise SgafastError(f"seeds: expected int64 of shape {tuple(y.shape[:1])} (one per "
                           f"image) on y's device, got {seeds.dtype} {tuple(seeds.shape)}")
    check_like(y, **like_y)
    check_grad_bits(y, grad_bits)


def sga_round_bits_forward(y: torch.Tensor, tau: torch.Tensor, scales: torch.Tensor,
                           means: torch.Tensor | None = None, *, method: str, classes: int,
                           a: float, r: float, n: float, seeds: torch.Tensor, counter: torch.Tensor,
                           scale_bound: float, likelihood_bound: float, block: int,
                           num_warps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_soft in y's dtype, float32 bits per image (B,)) in one launch.

    ``tau``: a one-element fp32 tensor; ``seeds``: one int64 seed per image; ``counter``: the
    two upper Philox counter words (int64, shape (2,)); all stay on the device.
    """
    _check(y, tau, seeds, counter, block, scales=scales, means=means)
    block = max(block, MIN_BLOCK)  # two classes draw four elements per Philox call
    y_soft = torch.empty_like(y)
    items, per_item, blocks_per_item = per_image_grid(y, block)
    if items * per_item == 0:
        return y_soft, torch.zeros(items, dtype=torch.float32, device=y.device)
    partial = torch.empty(items * blocks_per_item, dtype=torch.float32, device=y.device)
    with on_device(y.device):
        _sga_round_bits_fwd_kernel[(items * blocks_per_item,)](
            y, means, scales, seeds, counter, y_soft, partial, per_item, blocks_per_item, tau,
            a, r, n, scale_bound, likelihood_bound, METHOD=METHOD_IDS[method], CLASSES=classes,
            HAS_MEANS=means is not None, BLOCK=block, num_warps=num_warps)
    return y_soft, partial.view(items, blocks_per_item).sum(1)


def sga_round_bits_backward(grad_y_soft: torch.Tensor, grad_bits: torch.Tensor, y: torch.Tensor,
                            tau: torch.Tensor, scales: torch.Tensor,
                            means: torch.Tensor | None = None, *, means_grad: bool = True,
                            method: str, classes: int, a: float, r: float, n: float,
                            seeds: torch.Tensor, counter: torch.Tensor, scale_bound: float,
                            likelihood_bound: float, block: int, num_warps: int):
    """(grad_y, grad_scales, grad_means) in y's dtype, in one launch, for the upstreams of
    y_soft and of the (float32, per-image) bits; grad_means is None without means or with
    ``means_grad=False`` (then nothing is written for it)."""
    _check(y, tau, seeds, counter, block, grad_bits=grad_bits, scales=scales, means=means,
           grad_y_soft=grad_y_soft)
    block = max(block, MIN_BLOCK)  # as in forward
    grad_y, grad_scales = torch.empty_like(y), torch.empty_like(y)
    grad_means = torch.empty_like(y) if means is not None and means_grad else None
    items, per_item, blocks_per_item = per_image_grid(y, block)
    if items * per_item == 0:
        return grad_y, grad_scales, grad_means
    with on_device(y.device):
        _sga_round_bits_bwd_kernel[(items * blocks_per_item,)](
            grad_y_soft, grad_bits, y, means, scales, seeds, counter, grad_y, grad_means,
            grad_scales, per_item, blocks_per_item, tau, a, r, n, scale_bound, likelihood_bound,
            METHOD=METHOD_IDS[method], CLASSES=classes, HAS_MEANS=means is not None,
            MEANS_GRAD=grad_means is not None, BLOCK=block, num_warps=num_warps)
    return grad_y, grad_scales, grad_means
