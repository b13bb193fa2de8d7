"""Latent-space pieces of a CompressAI hyperprior that refinement needs (SPEC sections 3, 5, 6).

Built on the model's own parts (g_a, h_a, h_s, g_s, the entropy models); nothing is copied.
All per-image quantities keep the batch dimension so a batch is a sum of independent images.
"""

from __future__ import annotations

import math

import torch
from compressai.models import MeanScaleHyperprior

LOG2 = math.log(2)


def encode(net: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The amortised encoder's latents (y, z) of a padded batch."""
    y = net.g_a(x)
    z = net.h_a(y if isinstance(net, MeanScaleHyperprior) else torch.abs(y))
    return y, z


def medians(net: torch.nn.Module) -> torch.Tensor:
    """The entropy bottleneck's per-channel medians, shaped (1, C, 1, 1)."""
    q = net.entropy_bottleneck.quantiles
    return q[:, 0, 1].reshape(1, -1, 1, 1)


def hyper_params(net: torch.nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scales, means) predicted by h_s; means is None for a scale-only hyperprior."""
    params = net.h_s(z)
    if isinstance(net, MeanScaleHyperprior):
        scales, means = params.chunk(2, 1)
        return scales, means
    return params, None


def z_likelihood(net: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Differentiable, lower-bounded likelihood of (soft) z values, same shape as z."""
    eb = net.entropy_bottleneck
    b, c = z.shape[:2]
    values = z.transpose(0, 1).reshape(c, 1, -1)  # the (C, 1, -1) layout _likelihood expects
    likelihood = eb._likelihood(values)[0]  # a tuple since CompressAI 1.2.5
    if eb.use_likelihood_bound:
        likelihood = eb.likelihood_lower_bound(likelihood)
    return likelihood.reshape(c, b, *z.shape[2:]).transpose(0, 1)


def y_likelihood(net: torch.nn.Module, y: torch.Tensor, scales: torch.Tensor,
                 means: torch.Tensor | None) -> torch.Tensor:
    """Differentiable, lower-bounded likelihood of (soft) y values given the hyper-parameters."""
    gc = net.gaussian_conditional
    likelihood = gc._likelihood(y, scales, means)
    if gc.use_likelihood_bound:
        likelihood = gc.likelihood_lower_bound(likelihood)
    return likelihood


def gaussian_bounds(net: torch.nn.Module) -> tuple[float, float]:
    """The Gaussian conditional's scale bound and likelihood bound (0: none), read once."""
    gc = net.gaussian_conditional
    likelihood = float(gc.likelihood_lower_bound.bound) if gc.use_likelihood_bound else 0.0
    return float(gc.lower_bound_scale.bound), likelihood


def bits_per_image(likelihood: torch.Tensor) -> torch.Tensor:
    """-sum log2 p over all but the batch dimension: (B,)."""
    return -torch.log(likelihood).flatten(1).sum(1) / LOG2


def hard_latents(net: torch.nn.Module, y: torch.Tensor, z: torch.Tensor):
    """SPEC 6: z_hat = round(z - m) + m, then y_hat = round(y - mu) + mu with mu from h_s(z_hat).

    Returns (y_hat, z_hat, scales, means).
    """
    m = medians(net)
    z_hat = torch.round(z - m) + m
    scales, means = hyper_params(net, z_hat)
    mu = means if means is not None else torch.zeros_like(y)
    y_hat = torch.round(y - mu) + mu
    return y_hat, z_hat, scales, means


def bits(net: torch.nn.Module, y: torch.Tensor, z: torch.Tensor, scales: torch.Tensor,
         means: torch.Tensor | None) -> torch.Tensor:
    """(B,) bits of (soft or hard) latents under the entropy models."""
    return bits_per_image(z_likelihood(net, z)) + bits_per_image(
        y_likelihood(net, y, scales, means))


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(B,) mean squared error per image."""
    return ((x_hat - x) ** 2).flatten(1).mean(1)


def rd_terms(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
             scales: torch.Tensor, means: torch.Tensor | None, unpad) -> dict:
    """Per-image distortion and rate of given (soft or hard) latents over the real image area.

    ``x`` is the unpadded batch, ``unpad`` crops the padded reconstruction back to it. Returns
    (B,) tensors: ``mse`` (of the float reconstruction), ``bits``, ``x_hat`` (unpadded).
    """
    x_hat = unpad(net.g_s(y))
    return {"mse": mse(x_hat, x), "bits": bits(net, y, z, scales, means), "x_hat": x_hat}


def hard_rd(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
            lmbda: float, unpad) -> tuple[torch.Tensor, dict]:
    """SPEC 6's true R-D loss per image, at the hard latents of (y, z), and its terms."""
    y_hat, z_hat, scales, means = hard_latents(net, y, z)
    terms = rd_terms(net, x, y_hat, z_hat, scales, means, unpad)
    return rd_loss(terms["mse"], terms["bits"], lmbda, x.shape[-2] * x.shape[-1]), terms


def rd_loss(mse: torch.Tensor, bits: torch.Tensor, lmbda: float, num_pixels: int) -> torch.Tensor:
    """lambda * 255^2 * MSE + bits / pixels, per image (the paper's R-D loss)."""
    return lmbda * 255**2 * mse + bits / num_pixels
