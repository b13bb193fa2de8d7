"""The rate-distortion loss of a batch of images coded from given latents (docs/method.md §5, §6).

All per-image quantities keep the batch dimension so a batch is a sum of independent images.
"""

from __future__ import annotations

import torch

from .families import Family
from .images import Geometry


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error per image."""
    return ((x_hat - x) ** 2).flatten(1).mean(1)


def rd_loss(mse: torch.Tensor, bits: torch.Tensor, lmbda: float, num_pixels: int) -> torch.Tensor:
    """lambda * 255^2 * MSE + bits / pixels, per image (the paper's R-D loss)."""
    return lmbda * 255**2 * mse + bits / num_pixels


def hard_rd(family: Family, x: torch.Tensor, latents, lmbda: float,
            geometry: Geometry) -> tuple[torch.Tensor, dict]:
    """docs/method.md §6's true R-D loss per image: the loss of the latents the coder writes.

    ``x`` is the unpadded batch. Returns the (B,) loss and its terms: ``mse`` (of the float
    reconstruction), ``bits`` (of the hard latents under the entropy models), ``x_hat``.
    """
    y_hat, bits = family.hard(latents)
    x_hat = geometry.unpad(family.synthesis(y_hat))
    distortion = mse(x_hat, x)
    loss = rd_loss(distortion, bits, lmbda, geometry.num_pixels)
    return loss, {"mse": distortion, "bits": bits, "x_hat": x_hat}
