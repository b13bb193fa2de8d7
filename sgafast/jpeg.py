"""The JPEG reference curve (Pillow, 4:2:0 chroma subsampling) in eval_model's schema."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from .images import read_image
from .metrics import msssim, psnr


def jpeg_point(path: Path, quality: int) -> dict:
    """Bitstream bpp, PSNR and MS-SSIM of one image coded at one Pillow quality."""
    x = read_image(path)[None]
    with Image.open(path) as img:
        buffer = io.BytesIO()
        img.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=2)
    decoded = pil_to_tensor(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    x_hat = decoded.float().div(255)[None]
    return {"bpp": 8 * buffer.tell() / (x.shape[-1] * x.shape[-2]), "psnr": psnr(x, x_hat),
            "ms_ssim": msssim(x, x_hat)}


def jpeg_curve(paths: list[Path], qualities: list[int]) -> dict:
    """Dataset means per quality, ascending rate."""
    results = {"psnr-rgb": [], "ms-ssim-rgb": [], "bpp": []}
    for q in sorted(qualities):
        points = [jpeg_point(p, q) for p in paths]
        for key, name in (("psnr-rgb", "psnr"), ("ms-ssim-rgb", "ms_ssim"), ("bpp", "bpp")):
            values = [pt[name] for pt in points if pt[name] is not None]
            results[key].append(sum(values) / len(values) if values else None)
    return {"name": "jpeg-420", "description": f"Pillow JPEG 4:2:0, qualities {sorted(qualities)}",
            "results": results, "bpp-likelihood": results["bpp"],
            "rd-loss": [None] * len(qualities), "qualities": sorted(qualities)}
