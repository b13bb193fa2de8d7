"""Fused Gaussian-conditional bits of y: CompressAI's bounded -log2 likelihood, summed per image.

One kernel forward (one partial sum per program, summed by torch: deterministic), one backward
with CompressAI's LowerBound gradient rule; the element maths is ``kernels.gaussian``.
"""

import torch
import triton
import triton.language as tl

from sgafast.kernels.fastmath import round_to
from sgafast.kernels.gaussian import element_bits
from sgafast.kernels.launch import (check_grad_bits, check_input, check_like, on_device,
                                    per_image_grid, program_block)


@triton.jit
def _load_inputs(v_ptr, scales_ptr, means_ptr, offs, mask, HAS_MEANS: tl.constexpr):
    """(v - mu, sigma) in fp32; padding lanes get (0, 1), a finite element."""
    residual = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_MEANS:
        residual = residual - tl.load(means_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sigma = tl.load(scales_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    return residual, sigma


@triton.jit(do_not_specialize=["blocks_per_item"])
def _gaussian_bits_fwd_kernel(v_ptr, scales_ptr, means_ptr, partial_ptr, per_item,
                              blocks_per_item, scale_bound, likelihood_bound,
                              HAS_MEANS: tl.constexpr, BLOCK: tl.constexpr):
    _, _, offs, mask = program_block(per_item, blocks_per_item, BLOCK)
    residual, sigma = _load_inputs(v_ptr, scales_ptr, means_ptr, offs, mask, HAS_MEANS)
    bits, _, _ = element_bits(residual, sigma, 1.0, scale_bound, likelihood_bound)
    # one partial sum per program, summed by torch: deterministic, unlike atomics
    tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.where(mask, bits, 0.0), axis=0))


@triton.jit(do_not_specialize=["blocks_per_item"])
def _gaussian_bits_bwd_kernel(grad_bits_ptr, v_ptr, scales_ptr, means_ptr, grad_v_ptr,
                              grad_scales_ptr, grad_means_ptr, per_item, blocks_per_item,
                              scale_bound, likelihood_bound, HAS_MEANS: tl.constexpr,
                              MEANS_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    item, _, offs, mask = program_block(per_item, blocks_per_item, BLOCK)
    # one value per image, as a block: Triton's interpreter cannot `|` a scalar mask with a block
    upstream = tl.broadcast_to(tl.load(grad_bits_ptr + item), (BLOCK,))
    residual, sigma = _load_inputs(v_ptr, scales_ptr, means_ptr, offs, mask, HAS_MEANS)
    _, d_residual, d_sigma = element_bits(residual, sigma, upstream, scale_bound,
                                          likelihood_bound)
    grad_v = upstream * d_residual
    tl.store(grad_v_ptr + offs, round_to(grad_v, grad_v_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_scales_ptr + offs,
             round_to(upstream * d_sigma, grad_scales_ptr.dtype.element_ty), mask=mask)
    if MEANS_GRAD:
        tl.store(grad_means_ptr + offs, round_to(-grad_v, grad_means_ptr.dtype.element_ty),
                 mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _check(v, block, grad_bits=None, **like_v):
    """Dtype, device, contiguity and shapes, up front (``like_v``: tensors shaped like v)."""
    check_input(v, block, kernels="rate", batched=True,
                fallback="use codec.bits_per_image(codec.y_likelihood(...))")
    check_like(v, **like_v)
    check_grad_bits(v, grad_bits)


def gaussian_bits_forward(v: torch.Tensor, scales: torch.Tensor,
                          means: torch.Tensor | None = None, *, scale_bound: float,
                          likelihood_bound: float, block: int, num_warps: int) -> torch.Tensor:
    """Bits of each image (entry of dim 0), float32 (B,): reads v, scales (and means) once."""
    _check(v, block, scales=scales, means=means)
    items, per_item, blocks_per_item = per_image_grid(v, block)
    if items * per_item == 0:
        return torch.zeros(items, dtype=torch.float32, device=v.device)
    partial = torch.empty(items * blocks_per_item, dtype=torch.float32, device=v.device)
    with on_device(v.device):
        _gaussian_bits_fwd_kernel[(items * blocks_per_item,)](
            v, scales, means, partial, per_item, blocks_per_item, scale_bound,
            likelihood_bound, HAS_MEANS=means is not None, BLOCK=block, num_warps=num_warps)
    return partial.view(items, blocks_per_item).sum(1)


def gaussian_bits_backward(grad_bits: torch.Tensor, v: torch.Tensor, scales: torch.Tensor,
                           means: torch.Tensor | None = None, *, means_grad: bool = True,
                           scale_bound: float, likelihood_bound: float, block: int,
                           num_warps: int):
    """(grad_v, grad_scales, grad_means) in one launch, in v's dtype, for the per-image
    upstream ``grad_bits``; grad_means is None without means or with ``means_grad=False``."""
    _check(v, block, grad_bits=grad_bits, scales=scales, means=means)
    grad_v, grad_scales = torch.empty_like(v), torch.empty_like(v)
    grad_means = torch.empty_like(v) if means is not None and means_grad else None
    items, per_item, blocks_per_item = per_image_grid(v, block)
    if items * per_item == 0:
        return grad_v, grad_scales, grad_means
    with on_device(v.device):
        _gaussian_bits_bwd_kernel[(items * blocks_per_item,)](
            grad_bits, v, scales, means, grad_v, grad_scales, grad_means, per_item,
            blocks_per_item, scale_bound, likelihood_bound, HAS_MEANS=means is not None,
            MEANS_GRAD=grad_means is not None, BLOCK=block, num_warps=num_warps)
    return grad_v, grad_scales, grad_means
