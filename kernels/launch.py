"""What every fused kernel's launcher checks before a launch, and the per-image launch grid."""

import contextlib

import torch
import triton

from sgafast.errors import SgafastError

KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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
