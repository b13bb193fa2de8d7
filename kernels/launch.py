"""Launching the fused kernels: launch configuration, each program's block, launchers' checks."""

import contextlib

import torch
import triton
import triton.language as tl

from sgafast.errors import SgafastError

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# two classes draw the noise of four consecutive elements from one Philox call: a block holds
# whole groups of four
MIN_BLOCK = 4


def launch_config(per_item: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK, num_warps) of every fused kernel, fixed rather than autotuned so that backward
    reuses forward's choice.

    GPU: 1024 elements per program, 4 per thread (one 16-byte fp32 vector), 8 warps. The
    kernels are arithmetic-heavy (sm_90 SASS per element: 111 for the two-class SSL forward,
    up to ~400 for three classes, whose noise alone is ~165: a Philox-10 call and six logs per
    element; benchmarks/results/sass/), so they want many warps in flight rather than wide
    vectors. Not yet measured on a GPU: benchmarks/gpu_suite.py sweeps the alternatives. CPU
    interpreter: its cost is per program and per op, not per element, so one block covers a
    whole item, up to 2^16 elements. The launchers raise a BLOCK below MIN_BLOCK to it;
    results never depend on BLOCK.
    """
    if device.type == "cpu":
        return min(triton.next_power_of_2(max(per_item, 1)), 1 << 16), 1
    return 1024, 8


@triton.jit
def program_block(per_item, blocks_per_item, BLOCK: tl.constexpr):
    """(item, block within item, flat offset, mask) of this program: one item per program range."""
    # a 32-bit division: the grid has fewer than 2^31 programs, so blocks_per_item fits
    pid = tl.program_id(0)
    blocks = blocks_per_item.to(tl.int32)
    item32 = pid // blocks
    item = item32.to(tl.int64)
    block_in_item = (pid - item32 * blocks).to(tl.int64)  # int64 before any multiply: offsets
    local = block_in_item * BLOCK + tl.arange(0, BLOCK)  # pass 2^31
    return item, block_in_item, item * per_item + local, local < per_item


def check_input(v: torch.Tensor, block: int, *, kernels: str, fallback: str,
                name: str = "v", batched: bool = False) -> None:
    """The data tensor: a kernel dtype, on a GPU (or under the interpreter), contiguous, and a
    power-of-two BLOCK. ``fallback`` says what to use instead; ``batched``: bits are per image."""
    if v.dtype not in KERNEL_DTYPES:
        raise SgafastError(f"the fused {kernels} kernels take float32, float16 or bfloat16, not "
                           f"{v.dtype}; {fallback}")
    if v.device.type == "cpu" and not interpreted():
        raise SgafastError(f"the fused {kernels} kernels ran on a CPU tensor without the Triton "
                           f"interpreter: {fallback}, or set TRITON_INTERPRET=1 before "
                           "importing triton")
    if batched and v.dim() == 0:
        raise SgafastError(f"{name} needs a batch dimension: bits are summed per entry of dim 0")
    if not v.is_contiguous():
        raise SgafastError(f"{name} must be contiguous (its op makes it so)")
    if block < 1 or block & (block - 1):
        raise SgafastError(f"BLOCK must be a power of two, got {block}")


def check_like(v: torch.Tensor, **tensors) -> None:
    """Tensors shaped like v: same shape, dtype and device, contiguous (None: absent)."""
    for name, t in tensors.items():
        if t is not None and (t.shape != v.shape or t.device != v.device
                              or t.dtype != v.dtype or not t.is_contiguous()):
            raise SgafastError(f"{name}: expected a contiguous {v.dtype} tensor of shape "
                               f"{tuple(v.shape)} on {v.device}, got {t.dtype} "
                               f"{tuple(t.shape)} on {t.device}")


def check_schedule(v: torch.Tensor, tau: torch.Tensor, counter: torch.Tensor) -> None:
    """tau and the two Philox counter words, on the device as the loop keeps them."""
    if tau.numel() != 1 or not tau.dtype.is_floating_point or tau.device != v.device:
        raise SgafastError("tau: expected a one-element float tensor on the data's device")
    if counter.shape != (2,) or counter.dtype != torch.int64 or counter.device != v.device:
        raise SgafastError("counter: expected an int64 tensor of shape (2,) on the data's device")


def check_grad_bits(v: torch.Tensor, grad_bits: torch.Tensor | None) -> None:
    """The upstream gradient of per-image bits: float32, one value per image."""
    if grad_bits is not None and (grad_bits.shape != v.shape[:1] or grad_bits.device != v.device
                                  or grad_bits.dtype != torch.float32):
        raise SgafastError(f"grad_bits: expected float32 of shape {tuple(v.shape[:1])} on "
                           f"{v.device}")


def per_image_grid(v: torch.Tensor, block: int) -> tuple[int, int, int]:
    """(images, elements per image, programs per image) of a batch along dim 0."""
    items = v.shape[0]
    per_item = v.numel() // items if items else 0
    return items, per_item, triton.cdiv(per_item, block)


def on_device(device: torch.device):
    """Launch on the tensors' own GPU, not the current one (a no-op on the CPU)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


@triton.jit
def _probe():
    """Never launched: what ``triton.jit`` made of it tells the interpreter from the compiler."""
    pass


def interpreted() -> bool:
    """Whether the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return not isinstance(_probe, triton.runtime.JITFunction)
