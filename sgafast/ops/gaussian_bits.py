"""The fused Gaussian-conditional rate of y as a torch custom op with CompressAI's gradients."""

from typing import Optional

import torch

from ..errors import SgafastError
from ..kernels import gaussian_bits as kernels
from ..kernels.launch import launch_config
from .arguments import broadcast_like


@torch.library.custom_op("sgafast::gaussian_bits", mutates_args=())
def gaussian_bits_op(v: torch.Tensor, scales: torch.Tensor, means: Optional[torch.Tensor],
                     scale_bound: float, likelihood_bound: float, block: int,
                     num_warps: int) -> torch.Tensor:
    """Bits per entry of dim 0 (float32) for contiguous v, scales and means of v's shape."""
    return kernels.gaussian_bits_forward(v, scales, means, scale_bound=scale_bound,
                                         likelihood_bound=likelihood_bound, block=block,
                                         num_warps=num_warps)


@gaussian_bits_op.register_fake
def _(v, scales, means, scale_bound, likelihood_bound, block, num_warps):
    return v.new_empty(v.shape[:1], dtype=torch.float32)


@torch.library.custom_op("sgafast::gaussian_bits_backward", mutates_args=())
def gaussian_bits_backward_op(grad_bits: torch.Tensor, v: torch.Tensor, scales: torch.Tensor,
                              means: Optional[torch.Tensor], means_grad: bool,
                              scale_bound: float, likelihood_bound: float, block: int,
                              num_warps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_v, grad_scales, grad_means); grad_means is empty without means or means_grad."""
    grad_v, grad_scales, grad_means = kernels.gaussian_bits_backward(
        grad_bits, v, scales, means, means_grad=means_grad, scale_bound=scale_bound,
        likelihood_bound=likelihood_bound, block=block, num_warps=num_warps)
    return grad_v, grad_scales, v.new_empty(0) if grad_means is None else grad_means


@gaussian_bits_backward_op.register_fake
def _(grad_bits, v, scales, means, means_grad, scale_bound, likelihood_bound, block,
      num_warps):
    wanted = means is not None and means_grad
    return torch.empty_like(v), torch.empty_like(v), (torch.empty_like(v) if wanted
                                                      else v.new_empty(0))


def _setup_context(ctx, inputs, output):
    v, scales, means, *params = inputs
    ctx.save_for_backward(v, scales, means)  # the backward kernel recomputes the rest
    ctx.params = params


def _backward(ctx, grad_bits):
    v, scales, means = ctx.saved_tensors
    means_grad = means is not None and ctx.needs_input_grad[2]
    grad_v, grad_scales, grad_means = torch.ops.sgafast.gaussian_bits_backward(
        grad_bits.float().contiguous(), v, scales, means, means_grad, *ctx.params)
    return grad_v, grad_scales, grad_means if means_grad else None, None, None, None, None


gaussian_bits_op.register_autograd(_backward, setup_context=_setup_context)


def gaussian_bits(v: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None = None, *,
                  scale_bound: float = 0.11, likelihood_bound: float = 1e-9) -> torch.Tensor:
    """(B,) float32 bits of each image of v under CompressAI's GaussianConditional.

    What ``families.base.Gaussian.of(gc).bits(v, scales, means)`` computes, with
    ``scale_bound = gc.lower_bound_scale.bound`` and ``likelihood_bound =
    gc.likelihood_lower_bound.bound`` (0 when the model has none), and LowerBound's gradients,
    in one kernel that reads v, scales and means once. Bits are summed over all but dim 0.
    """
    if scale_bound <= 0:
        raise SgafastError(f"scale_bound must be positive (as in CompressAI), got {scale_bound}")
    if v.dim() == 0:
        raise SgafastError("v needs a batch dimension: bits are summed per entry of dim 0")
    scales = broadcast_like(scales, v, "scales")
    means = None if means is None else broadcast_like(means, v, "means")
    per_item = v.numel() // v.shape[0] if v.shape[0] else 0
    block, num_warps = launch_config(per_item, v.device)
    return torch.ops.sgafast.gaussian_bits(v.contiguous(), scales, means, float(scale_bound),
                                           float(likelihood_bound), block, num_warps)
