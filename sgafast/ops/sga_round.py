"""The fused soft rounding behind ``sga_round(backend="triton")``: a torch custom op with autograd.

``torch.ops.sgafast.sga_round`` and its backward ``torch.ops.sgafast.sga_round_backward`` are
``torch.library`` custom ops over the launchers of ``sgafast.kernels.sga_round``, with fake
(meta) implementations, so ``torch.compile`` keeps them in its graph without a break. tau and the
Philox counter words are device tensors: an annealed tau or a new iteration is data, not a new
graph or a host-to-device copy.
"""

from typing import Optional

import torch

from .errors import SgafastError
from .kernels import sga_round as kernels
from .noise import check_counter, check_seeds


@torch.library.custom_op("sgafast::sga_round", mutates_args=())
def sga_round_op(v: torch.Tensor, tau: torch.Tensor, center: Optional[torch.Tensor],
                 seeds: Optional[torch.Tensor], counter: torch.Tensor,
                 noise: Optional[torch.Tensor], method: str, classes: int, a: float, r: float,
                 n: float, block: int, num_warps: int) -> torch.Tensor:
    """S(v - center; tau) + center for contiguous v, center and noise of v's shape."""
    return kernels.sga_round_forward(v, tau, method=method, classes=classes, a=a, r=r, n=n,
                                     center=center, seeds=seeds, counter=counter, noise=noise,
                                     block=block, num_warps=num_warps)


@sga_round_op.register_fake
def _(v, tau, center, seeds, counter, noise, method, classes, a, r, n, block, num_warps):
    return torch.empty_like(v)


@torch.library.custom_op("sgafast::sga_round_backward", mutates_args=())
def sga_round_backward_op(grad_out: torch.Tensor, v: torch.Tensor, tau: torch.Tensor,
                          center: Optional[torch.Tensor], center_grad: bool,
                          seeds: Optional[torch.Tensor], counter: torch.Tensor,
                          noise: Optional[torch.Tensor], method: str, classes: int, a: float,
                          r: float, n: float, block: int,
                          num_warps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_v, grad_center); grad_center is empty without a center or center_grad."""
    grad_v, grad_center = kernels.sga_round_backward(
        grad_out, v, tau, method=method, classes=classes, a=a, r=r, n=n, center=center,
        center_grad=center_grad, seeds=seeds, counter=counter, noise=noise, block=block,
        num_warps=num_warps)
    return grad_v, v.new_empty(0) if grad_center is None else grad_center


@sga_round_backward_op.register_fake
def _(grad_out, v, tau, center, center_grad, seeds, counter, noise, method, classes, a, r, n,
      block, num_warps):
    wanted = center is not None and center_grad
    return torch.empty_like(v), torch.empty_like(center) if wanted else v.new_empty(0)


def _setup_context(ctx, inputs, output):
    v, tau, center, seeds, counter, noise, *params = inputs
    # only the input, the center, tau and the seeds (or the test's explicit noise): the backward
    # kernel regenerates the noise and recomputes the weights, with forward's launch config
    ctx.save_for_backward(v, tau, center, seeds, counter, noise)
    ctx.params = params


def _backward(ctx, grad_out):
    v, tau, center, seeds, counter, noise = ctx.saved_tensors
    center_grad = center is not None and ctx.needs_input_grad[2]  # a detached center: no write
    grad_v, grad_center = torch.ops.sgafast.sga_round_backward(
        grad_out.contiguous(), v, tau, center, center_grad, seeds, counter, noise, *ctx.params)
    return (grad_v, None, grad_center if center_grad else None) + (None,) * 10


sga_round_op.register_autograd(_backward, setup_context=_setup_context)


def fused_sga_round(v: torch.Tensor, tau: torch.Tensor, rounding, *, center=None, seed=None,
                    counter=None, noise=None) -> torch.Tensor:
    """S(v - center; tau) + center by the fused kernels (``rounding``: a ``Rounding``).

    ``tau``: a one-element float tensor; ``seed``: an int or an integer tensor of one seed per
    entry of dim 0, with the two upper Philox ``counter`` words; or explicit Gumbel ``noise`` of
    shape ``v.shape + (classes,)``. The output is contiguous, of v's shape.
    """
    if (seed is None) == (noise is None):
        raise SgafastError("the fused op needs exactly one of seed and noise")
    if center is not None:
        try:
            # a broadcast center is materialised once; autograd's expand backward is
            # sum_to_size, which reduces its gradient back to the center's own shape
            center = center.expand(v.shape).contiguous()
        except RuntimeError as err:
            raise SgafastError(f"center of shape {tuple(center.shape)} does not broadcast to "
                               f"v's shape {tuple(v.shape)}") from err
    items = v.shape[0] if v.dim() else 1
    seeds = None if seed is None else check_seeds(seed, items, v.device)
    if noise is not None:
        noise = noise.contiguous()
    per_item = v.numel() // (1 if seeds is None else seeds.numel())
    block, num_warps = kernels.launch_config(per_item, v.device)
    return torch.ops.sgafast.sga_round(
        v.contiguous(), tau.to(device=v.device, dtype=torch.float32).reshape(1), center, seeds,
        check_counter(counter, v.device), noise, rounding.method, rounding.classes,
        float(rounding.a), float(rounding.r), float(rounding.n), block, num_warps)
