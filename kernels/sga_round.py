"""Fused SGA/SGA+ soft rounding S(v - c; tau) + c: one Triton kernel forward, one backward.

Each element is independent: the kernels read v (and the center), draw the noise in registers
from the counter-based stream of ``sgafast.ops.noise`` (or read explicit noise, for tests),
compute the candidates, log-weights and softmax in fp32 (``kernels.soft_round``), and write one
value. The backward kernel regenerates the same noise and recomputes the weights from v, so
nothing but v and the seeds is saved. Only ``tl.*`` math is used (no libdevice), so the same
kernels run under ``TRITON_INTERPRET=1`` on the CPU. docs/kernels.md: design, arithmetic, tests.
"""

import torch
import triton
import triton.language as tl

from sgafast.errors import SgafastError
from sgafast.kernels.fastmath import round_to
from sgafast.kernels.launch import (MIN_BLOCK, check_input, check_like, check_schedule,
                                    on_device, program_block)
from sgafast.kernels.soft_round import METHOD_IDS, soft_round


# blocks_per_item is not specialised (fewer compiled variants); per_item is: its divisibility
# by 16 is what lets the loads and stores vectorise
@triton.jit(do_not_specialize=["blocks_per_item"])
def _sga_round_fwd_kernel(v_ptr, center_ptr, seeds_ptr, counter_ptr, noise_ptr, out_ptr,
                          per_item, blocks_per_item, tau_ptr, a, r, n, METHOD: tl.constexpr,
                          CLASSES: tl.constexpr, HAS_CENTER: tl.constexpr,
                          HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    item, block_in_item, offs, mask = program_block(per_item, blocks_per_item, BLOCK)
    x = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_CENTER:
        center = tl.load(center_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = x - center
    base, s, _ = soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs,
                            mask, tau_ptr, a, r, n, METHOD, CLASSES, HAS_NOISE, BLOCK)
    out = base + s
    if HAS_CENTER:
        out = out + center
    tl.store(out_ptr + offs, round_to(out, out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["blocks_per_item"])
def _sga_round_bwd_kernel(grad_out_ptr, v_ptr, center_ptr, seeds_ptr, counter_ptr, noise_ptr,
                          grad_v_ptr, grad_center_ptr, per_item, blocks_per_item, tau_ptr, a, r,
                          n,
                          METHOD: tl.constexpr, CLASSES: tl.constexpr,
                          HAS_CENTER: tl.constexpr, CENTER_GRAD: tl.constexpr,
                          HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    item, block_in_item, offs, mask = program_block(per_item, blocks_per_item, BLOCK)
    x = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_CENTER:
        x = x - tl.load(center_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    _, _, ds = soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs,
                          mask, tau_ptr, a, r, n, METHOD, CLASSES, HAS_NOISE, BLOCK)
    grad_out = tl.load(grad_out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad_v = grad_out * ds
    tl.store(grad_v_ptr + offs, round_to(grad_v, grad_v_ptr.dtype.element_ty), mask=mask)
    if CENTER_GRAD:
        # out = S(v - c) + c: d out / dc = 1 - S', summed in autograd's order
        grad_center = grad_out - grad_v
        tl.store(grad_center_ptr + offs,
                 round_to(grad_center, grad_center_ptr.dtype.element_ty), mask=mask)



# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _items(v: torch.Tensor, seeds: torch.Tensor | None) -> tuple[int, int]:
    """(items, elements per item): per-item seeds split v along dim 0, else v is one item."""
    items = 1 if seeds is None else seeds.numel()
    return items, v.numel() // items


def _check(v, tau, seeds, counter, noise, classes, block, **like_v):
    """Dtype, device, contiguity and shapes, up front (``like_v``: tensors shaped like v)."""
    check_schedule(v, tau, counter)
    check_input(v, block, kernels="rounding",
                fallback="use --backend torch (backend='torch' in Python)")
    check_like(v, **like_v)
    if (seeds is None) == (noise is None):
        raise SgafastError("give the kernels exactly one of seeds and noise")
    if noise is not None and (noise.shape != (*v.shape, classes) or noise.device != v.device
                              or not noise.is_contiguous()):
        raise SgafastError(f"noise: expected a contiguous tensor of shape "
                           f"{(*v.shape, classes)} on {v.device}, got {tuple(noise.shape)} on "
                           f"{noise.device}")
    if seeds is not None:
        if seeds.dtype != torch.int64 or seeds.device != v.device or seeds.dim() != 1:
            raise SgafastError("seeds: expected a 1-D int64 tensor on v's device")
        if seeds.numel() not in (1, v.shape[0] if v.dim() else 1):
            raise SgafastError(f"seeds: give one seed, or one per entry of dim 0, not "
                               f"{seeds.numel()}")


def sga_round_forward(v: torch.Tensor, tau: torch.Tensor, *, method: str, classes: int,
                      a: float, r: float, n: float, center: torch.Tensor | None = None,
                      seeds: torch.Tensor | None = None, counter: torch.Tensor,
                      noise: torch.Tensor | None = None, block: int,
                      num_warps: int) -> torch.Tensor:
    """S(v - center; tau) + center in one launch: reads v (and center), writes the output.

    ``tau``: a one-element fp32 tensor; ``counter``: the two upper Philox counter words (int64,
    shape (2,)); both stay on the device, so a changing tau or iteration never recompiles.
    """
    _check(v, tau, seeds, counter, noise, classes, block, center=center)
    out = torch.empty_like(v)
    if v.numel() == 0:
        return out
    items, per_item = _items(v, seeds)
    block = max(block, MIN_BLOCK)  # results do not depend on it
    blocks_per_item = triton.cdiv(per_item, block)
    with on_device(v.device):
        _sga_round_fwd_kernel[(items * blocks_per_item,)](
            v, center, seeds, counter, noise, out, per_item, blocks_per_item, tau, a, r, n,
            METHOD=METHOD_IDS[method], CLASSES=classes, HAS_CENTER=center is not None,
            HAS_NOISE=noise is not None, BLOCK=block, num_warps=num_warps)
    return out


def sga_round_backward(grad_out: torch.Tensor, v: torch.Tensor, tau: torch.Tensor, *,
                       method: str, classes: int, a: float, r: float, n: float,
                       center: torch.Tensor | None = None, center_grad: bool = True,
                       seeds: torch.Tensor | None = None, counter: torch.Tensor,
                       noise: torch.Tensor | None = None, block: int,
                       num_warps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(grad_v, grad_center) in one launch: regenerates the noise and recomputes the weights.

    grad_center is None without a center or with ``center_grad=False`` (a detached center:
    then nothing is written for it).
    """
    _check(v, tau, seeds, counter, noise, classes, block, center=center, grad_out=grad_out)
    grad_v = torch.empty_like(v)
    grad_center = torch.empty_like(center) if center is not None and center_grad else None
    if v.numel() == 0:
        return grad_v, grad_center
    items, per_item = _items(v, seeds)
    block = max(block, MIN_BLOCK)  # results do not depend on it
    blocks_per_item = triton.cdiv(per_item, block)
    with on_device(v.device):
        _sga_round_bwd_kernel[(items * blocks_per_item,)](
            grad_out, v, center, seeds, counter, noise, grad_v, grad_center, per_item,
            blocks_per_item, tau, a, r, n, METHOD=METHOD_IDS[method], CLASSES=classes,
            HAS_CENTER=center is not None, CENTER_GRAD=grad_center is not None,
            HAS_NOISE=noise is not None, BLOCK=block, num_warps=num_warps)
    return grad_v, grad_center
