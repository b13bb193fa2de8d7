"""The rate-distortion loss of a batch of images coded from given latents (docs/method.md §5, §6).

All per-image quantities keep the batch dimension so a batch is a sum of independent images.
"""

from __future__ import annotations

import torch
from pytorch_msssim import ms_ssim

from .errors import SgafastError
from .families import Family
from .images import Canvas, Geometry
from .metrics import MS_SSIM_MIN_SIDE

# what lambda weighs: 255^2 * MSE (the paper's), or 1 - MS-SSIM (CompressAI's MS-SSIM models)
DISTORTIONS = ("mse", "ms-ssim")
METRIC_KEYS = {"mse": "mse", "ms-ssim": "ms_ssim"}  # the metric's name among hard_rd's terms


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error per image of two same-size batches."""
    return ((x_hat - x) ** 2).flatten(1).mean(1)


def masked_mse(x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
               num_pixels: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over each image's own pixels of padded batches (``mask``: 1 on
    them; ``num_pixels``: their count): shapes are the padded size's alone."""
    return ((x_hat - x) ** 2 * mask).flatten(1).sum(1) / (3 * num_pixels)


def masked_ms_ssim(x_hat: torch.Tensor, x: torch.Tensor,
                   geometries: tuple[Geometry, ...]) -> torch.Tensor:
    """(B,) MS-SSIM of each image's own pixels, cropped from padded batches, as CompressAI's
    training loss takes it (pytorch_msssim, data range 1, the float reconstruction)."""
    return torch.cat([ms_ssim(g.unpad(x_hat[b:b + 1]), g.unpad(x[b:b + 1]), data_range=1.0,
                              size_average=False) for b, g in enumerate(geometries)])


def distortion(kind: str, x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
               num_pixels: torch.Tensor, geometries: tuple[Geometry, ...]) -> torch.Tensor:
    """(B,) the metric of ``kind`` (``DISTORTIONS``) over each image's own pixels of padded
    batches: MSE (``mask``, ``num_pixels``) or MS-SSIM (``geometries``)."""
    if kind == "ms-ssim":
        return masked_ms_ssim(x_hat, x, geometries)
    return masked_mse(x_hat, x, mask, num_pixels)


def check_sizes(kind: str, geometries) -> None:
    """Refuse images too small for the distortion: MS-SSIM's five scales need both sides of at
    least ``MS_SSIM_MIN_SIDE`` pixels."""
    small = [g for g in geometries if min(g.height, g.width) < MS_SSIM_MIN_SIDE]
    if kind == "ms-ssim" and small:
        raise SgafastError(f"a {small[0].width}x{small[0].height} image is too small for the "
                           f"ms-ssim distortion: MS-SSIM's five scales need both sides of at "
                           f"least {MS_SSIM_MIN_SIDE} pixels; refine it with --distortion mse")


def rd_loss(metric: torch.Tensor, bits: torch.Tensor, lmbda: float, num_pixels,
            kind: str = "mse") -> torch.Tensor:
    """The R-D loss per image: lambda * 255^2 * MSE + bits / pixels (the paper's), or, for
    ``kind`` ms-ssim, lambda * (1 - MS-SSIM) + bits / pixels (CompressAI's MS-SSIM training
    loss); ``metric``: the MSE or the MS-SSIM; ``num_pixels``: a number, or one per image."""
    if kind == "ms-ssim":
        return lmbda * (1 - metric) + bits / num_pixels
    return lmbda * 255**2 * metric + bits / num_pixels  # this order: the paper's bits


def hard_rd(family: Family, canvas: Canvas, latents, lmbda: float,
            kind: str = "mse") -> tuple[torch.Tensor, dict]:
    """docs/method.md §6's true R-D loss per image: the loss of the latents the coder writes.

    Returns the (B,) loss and its terms: ``mse`` or ``ms_ssim`` (``kind``'s metric, of the
    float reconstruction over each image's own pixels) and ``bits`` (of the hard latents under
    the entropy models).
    """
    y_hat, bits = family.hard(latents)
    metric = distortion(kind, family.synthesis(y_hat), canvas.x, canvas.mask,
                        canvas.num_pixels, canvas.geometries)
    return (rd_loss(metric, bits, lmbda, canvas.num_pixels, kind),
            {METRIC_KEYS[kind]: metric, "bits": bits})
