"""The rate-distortion loss of a batch of images coded from given latents (docs/method.md §5, §6).

All per-image quantities keep the batch dimension so a batch is a sum of independent images.
"""

from __future__ import annotations

import torch

from .families import Family
from .images import Canvas


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error per image of two same-size batches."""
    return ((x_hat - x) ** 2).flatten(1).mean(1)


def masked_mse(x_hat: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
               num_pixels: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error over each image's own pixels of padded batches (``mask``: 1 on
    them; ``num_pixels``: their count): shapes are the padded size's alone."""
    return ((x_hat - x) ** 2 * mask).flatten(1).sum(1) / (3 * num_pixels)


def rd_loss(mse: torch.Tensor, bits: torch.Tensor, lmbda: float, num_pixels) -> torch.Tensor:
    """lambda * 255^2 * MSE + bits / pixels, per image (the paper's R-D loss); ``num_pixels``:
    a number, or one per image."""
    return lmbda * 255**2 * mse + bits / num_pixels


def hard_rd(family: Family, canvas: Canvas, latents, lmbda: float) -> tuple[torch.Tensor, dict]:
    """docs/method.md §6's true R-D loss per image: the loss of the latents the coder writes.

    Returns the (B,) loss and its terms: ``mse`` (of the float reconstruction over each image's
    own pixels) and ``bits`` (of the hard latents under the entropy models).
    """
    y_hat, bits = family.hard(latents)
    distortion = masked_mse(family.synthesis(y_hat), canvas.x, canvas.mask, canvas.num_pixels)
    return rd_loss(distortion, bits, lmbda, canvas.num_pixels), {"mse": distortion,
                                                                  "bits": bits}
