"""y's fused soft rounding and Gaussian-conditional bits as one torch custom op with autograd."""

from typing import Optional

import torch

from ..errors import SgafastError
from ..kernels import sga_round_bits as kernels
from ..kernels.launch import launch_config
from .arguments import broadcast_like
from .noise import check_counter, check_seeds


@torch.library.custom_op("sgafast::sga_round_bits", mutates_args=())
def sga_round_bits_op(y: torch.Tensor, tau: torch.Tensor, scales: torch.Tensor,
                      means: Optional[torch.Tensor], seeds: torch.Tensor, counter: torch.Tensor,
                      method: str, classes: int, a: float, r: float, n: float,
                      scale_bound: float, likelihood_bound: float, block: int,
                      num_warps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_soft, float32 bits per image) for contiguous y, scales and means of y's shape."""
    return kernels.sga_round_bits_forward(
        y, tau, scales, means, method=method, classes=classes, a=a, r=r, n=n, seeds=seeds,
        counter=counter, scale_bound=scale_bound, likelihood_bound=likelihood_bound, block=block,
        num_warps=num_warps)


@sga_round_bits_op.register_fake
def _(y, tau, scales, means, seeds, counter, method, classes, a, r, n, scale_bound,
      likelihood_bound, block, num_warps):
    return torch.empty_like(y), y.new_empty(y.shape[:1], dtype=torch.float32)


@torch.library.custom_op("sgafast::sga_round_bits_backward", mutates_args=())
def sga_round_bits_backward_op(grad_y_soft: torch.Tensor, grad_bits: torch.Tensor,
                               y: torch.Tensor, tau: torch.Tensor, scales: torch.Tensor,
                               means: Optional[torch.Tensor], means_grad: bool,
                               seeds: torch.Tensor, counter: torch.Tensor, method: str,
                               classes: int, a: float, r: float, n: float, scale_bound: float,
                               likelihood_bound: float, block: int, num_warps: int
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_y, grad_scales, grad_means); grad_means is empty without means or means_grad."""
    grad_y, grad_scales, grad_means = kernels.sga_round_bits_backward(
        grad_y_soft, grad_bits, y, tau, scales, means, means_grad=means_grad, method=method,
        classes=classes, a=a, r=r, n=n, seeds=seeds, counter=counter, scale_bound=scale_bound,
        likelihood_bound=likelihood_bound, block=block, num_warps=num_warps)
    return grad_y, grad_scales, y.new_empty(0) if grad_means is None else grad_means


@sga_round_bits_backward_op.register_fake
def _(grad_y_soft, grad_bits, y, tau, scales, means, means_grad, seeds, counter, method, classes,
      a, r, n, scale_bound, likelihood_bound, block, num_warps):
    wanted = means is not None and means_grad
    return torch.empty_like(y), torch.empty_like(y), (torch.empty_like(y) if wanted
                                                      else y.new_empty(0))


def _setup_context(ctx, inputs, output):
    y, tau, scales, means, seeds, counter, *params = inputs
    # the inputs only: the backward kernel regenerates the noise and recomputes S and the
    # likelihood, with forward's launch config
    ctx.save_for_backward(y, tau, scales, means, seeds, counter)
    ctx.params = params


def _backward(ctx, grad_y_soft, grad_bits):
    y, tau, scales, means, seeds, counter = ctx.saved_tensors
    means_grad = means is not None and ctx.needs_input_grad[3]  # detached means: no write
    grad_y, grad_scales, grad_means = torch.ops.sgafast.sga_round_bits_backward(
        grad_y_soft.contiguous(), grad_bits.float().contiguous(), y, tau, scales, means,
        means_grad, seeds, counter, *ctx.params)
    return (grad_y, None, grad_scales, grad_means if means_grad else None) + (None,) * 11


sga_round_bits_op.register_autograd(_backward, setup_context=_setup_context)


def sga_round_bits(y: torch.Tensor, tau: torch.Tensor, rounding, *,
                   means: torch.Tensor | None, scales: torch.Tensor, seed, counter=None,
                   scale_bound: float = 0.11,
                   likelihood_bound: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """(y_soft, bits): y_soft = S(y - means; tau) + means and its (B,) float32 bits per image.

    What ``sga_round(y, tau, rounding, center=means, seed=seed, counter=counter)`` followed by
    ``gaussian_bits(y_soft, scales, means, scale_bound=..., likelihood_bound=...)`` compute, on
    the same noise, in one kernel each way (``rounding``: a Gumbel ``Rounding``). ``tau``: a
    one-element float tensor; ``seed``: one seed per image (an int only for one image);
    ``counter``: the two upper Philox counter words. scales and means broadcast to y's shape
    and are cast to y's dtype; means may be None (zero). The bits' residual is S(y - means) in
    fp32, not y_soft - means re-read in y's dtype.
    """
    if not rounding.is_gumbel:
        raise SgafastError(f"the fused rounding-rate op implements the Gumbel roundings, not "
                           f"{rounding.method!r}")
    if scale_bound <= 0:
        raise SgafastError(f"scale_bound must be positive (as in CompressAI), got {scale_bound}")
    if y.dim() == 0:
        raise SgafastError("y needs a batch dimension: bits are summed per entry of dim 0")
    seeds = check_seeds(seed, y.shape[0], y.device)
    if seeds.numel() != y.shape[0]:
        raise SgafastError(f"seed: give one seed per image ({y.shape[0]} here), not one for all")
    scales = broadcast_like(scales.to(y.dtype), y, "scales")
    means = None if means is None else broadcast_like(means.to(y.dtype), y, "means")
    per_item = y.numel() // y.shape[0] if y.shape[0] else 0
    block, num_warps = launch_config(per_item, y.device)
    return torch.ops.sgafast.sga_round_bits(
        y.contiguous(), tau.to(device=y.device, dtype=torch.float32).reshape(1), scales, means,
        seeds, check_counter(counter, y.device), rounding.method, rounding.classes,
        float(rounding.a), float(rounding.r), float(rounding.n), float(scale_bound),
        float(likelihood_bound), block, num_warps)
