"""``sga_round``: the soft-rounding op, on the reference or on the fused kernels.

The public function checks its arguments and dispatches: the baselines and the CPU path go to
``sgafast.ops.reference``; the Gumbel-softmax roundings go, where the kernels run, to
``torch.ops.sgafast.sga_round`` and its backward ``torch.ops.sgafast.sga_round_backward``,
``torch.library`` custom ops over the launchers of ``sgafast.kernels.sga_round``, with fake (meta)
implementations, so ``torch.compile`` keeps them in its graph without a break. tau and the
Philox counter words are device tensors: an annealed tau or a new iteration is data, not a new
graph or a host-to-device copy.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import SgafastError
from ..kernels import launch
from ..kernels import sga_round as kernels
from . import reference
from .arguments import broadcast_like
from .noise import check_counter, check_seeds, gumbel_noise, uniform_stream
from .rounding import Rounding, check_tau, draw_seed, kernels_run


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
        center = broadcast_like(center, v, "center")
    items = v.shape[0] if v.dim() else 1
    seeds = None if seed is None else check_seeds(seed, items, v.device)
    if noise is not None:
        noise = noise.contiguous()
    per_item = v.numel() // (1 if seeds is None else seeds.numel())
    block, num_warps = launch.launch_config(per_item, v.device)
    return torch.ops.sgafast.sga_round(
        v.contiguous(), tau.to(device=v.device, dtype=torch.float32).reshape(1), center, seeds,
        check_counter(counter, v.device), noise, rounding.method, rounding.classes,
        float(rounding.a), float(rounding.r), float(rounding.n), block, num_warps)


def _reference(v: torch.Tensor, tau, rounding: Rounding, seed, counter, noise):
    if rounding.method == "ste":
        return reference.straight_through(v)
    if rounding.method == "danneal":
        return reference.deterministic_anneal(v, tau)
    if rounding.method == "noise":
        u = noise[..., 0] if noise is not None else uniform_stream(
            v.shape, seed=seed, classes=1, counter=counter, device=v.device)[..., 0]
        return reference.uniform_noise(v, u.to(v.dtype))
    if noise is None:
        noise = gumbel_noise(v.shape, seed=seed, classes=rounding.classes, counter=counter,
                             device=v.device)
    return reference.soft_round(v, tau, noise.to(v.dtype), method=rounding.method,
                                classes=rounding.classes, a=rounding.a, r=rounding.r,
                                n=rounding.n)


def sga_round(v: torch.Tensor, tau, rounding: Rounding | None = None, *,
              center: torch.Tensor | None = None, seed=None, counter=None,
              noise: torch.Tensor | None = None, backend: str = "auto",
              **params) -> torch.Tensor:
    """Stochastic soft rounding S(v; tau) of docs/method.md §2 (or a baseline), differentiable.

    The rounding is a :class:`Rounding`, or built from ``params`` (``method``, ``classes``,
    ``a``, ``r``, ``n``; its defaults: two-class SSL). ``tau`` is a float or a one-element
    tensor (kept on the device: no host sync). ``center`` gives S(v - center) + center
    (differentiable in both). Noise is either explicit (``noise`` of shape
    ``v.shape + (classes,)``, Gumbel samples with ``noise[..., k]`` for the k-th candidate in
    ascending order; uniforms in [0, 1) of shape ``v.shape + (1,)`` for ``method="noise"``) or
    drawn from the counter-based stream of ``seed`` (an int, or one seed per entry of dim 0) and
    ``counter`` (two upper Philox counter words, default (0, 0)); with neither, a seed is drawn
    from torch's generator. ``backend``: ``"auto"`` fuses on CUDA, ``"triton"`` always fuses,
    ``"torch"`` never does.
    """
    if rounding is None:
        try:
            rounding = Rounding(**params)
        except TypeError as err:
            raise SgafastError(f"sga_round: {err}") from err
    elif params:
        raise SgafastError("give either a Rounding or its parameters, not both")
    tau = check_tau(tau)
    if noise is not None and seed is not None:
        raise SgafastError("give either noise or seed, not both")
    if noise is not None and noise.shape != (*v.shape, rounding.noise_classes):
        raise SgafastError(f"noise must have shape {(*v.shape, rounding.noise_classes)}, "
                           f"got {tuple(noise.shape)}")
    if noise is None and seed is None and rounding.method not in ("ste", "danneal"):
        seed = draw_seed()
    if center is not None and center.dtype != v.dtype:
        center = center.to(v.dtype)
    if rounding.is_gumbel and kernels_run(backend, v):  # the baselines: nothing to fuse
        if not isinstance(tau, torch.Tensor):
            tau = torch.tensor(tau, dtype=torch.float32)
        return fused_sga_round(v, tau, rounding, center=center, seed=seed, counter=counter,
                               noise=noise)
    if center is None:
        return _reference(v, tau, rounding, seed, counter, noise)
    return _reference(v - center, tau, rounding, seed, counter, noise) + center
