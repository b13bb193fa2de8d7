"""Reading images into tensors and padding them to the codec's stride, with clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from .errors import SgafastError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
STRIDE = 64  # the hyperprior's total downsampling


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An RGB image as a (3, H, W) float tensor in [0, 1]; SgafastError naming the file if bad."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise SgafastError(f"{path}: cannot read the image ({exc})") from exc
    if min(rgb.size) < 1:
        raise SgafastError(f"{path}: the image is empty")
    return pil_to_tensor(rgb).float().div_(255)


def write_png(path: str | os.PathLike, x: torch.Tensor) -> None:
    """Write a (3, H, W) tensor in [0, 1] as an 8-bit PNG, atomically."""
    import io

    from .io import atomic_write_bytes

    arr = x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def pad(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad a (B, 3, H, W) batch to a multiple of the stride; returns it and the unpad tuple."""
    h, w = x.shape[-2:]
    padding, unpadding = compute_padding(h, w, min_div=STRIDE)
    return F.pad(x, padding, mode="constant", value=0), unpadding


def unpad(x: torch.Tensor, unpadding: tuple[int, int, int, int]) -> torch.Tensor:
    """Crop a padded batch back to the image area."""
    return F.pad(x, unpadding)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of a (..., H, W) tensor (smaller sides kept)."""
    h, w = x.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return x[..., top:top + size, left:left + size]
