"""Image-quality metrics as CompressAI's eval_model computes them (8-bit PSNR, MS-SSIM)."""

from __future__ import annotations

import math

import torch
from pytorch_msssim import ms_ssim

MS_SSIM_MIN_SIDE = 161  # five scales of an 11-tap window need a side above 160 pixels


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).clamp(0, 255).round()


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """PSNR in dB of 8-bit versions of two (1, 3, H, W) images in [0, 1].

    The squared 8-bit errors are integers, summed in float64 exactly: the value does not depend
    on memory layout or thread count, so a decoded file reproduces the recorded PSNR.
    """
    mse = float(torch.mean((to_8bit(x) - to_8bit(x_hat)).double() ** 2))
    return math.inf if mse == 0 else 20 * math.log10(255) - 10 * math.log10(mse)


def msssim(x: torch.Tensor, x_hat: torch.Tensor) -> float | None:
    """MS-SSIM of 8-bit versions; None when the image is too small for five scales."""
    if min(x.shape[-2:]) < MS_SSIM_MIN_SIDE:
        return None
    return float(ms_ssim(to_8bit(x), to_8bit(x_hat), data_range=255))
