"""Arithmetic precision of the transforms during refinement: fp32, tf32 or bf16 (rounding and rates stay fp32)."""

from __future__ import annotations

import contextlib

import torch

from .errors import SgafastError

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise SgafastError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@contextlib.contextmanager
def tensor_cores(precision: str, device: torch.device):
    """fp32 convolutions and matmuls on CUDA: IEEE for "fp32", TF32 for "tf32".

    PyTorch's own default runs cuDNN convolutions in TF32, so "fp32" is stricter than a plain
    CompressAI loop on an Ampere-or-later GPU. Nothing changes on a CPU. The previous settings
    are restored on exit.
    """
    if device.type != "cuda" or precision == "bf16":
        yield
        return
    mode = "tf32" if precision == "tf32" else "ieee"
    backends = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    previous = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = mode
        yield
    finally:
        for b, p in zip(backends, previous):
            b.fp32_precision = p


def transforms(precision: str, device: torch.device):
    """A context under which the synthesis transforms run: bf16 autocast for "bf16"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
