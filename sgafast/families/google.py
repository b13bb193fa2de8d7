"""The families of ``compressai.models.google`` and ``waseda``: factorized, hyperprior, raster AR.

Their ``compress()`` runs ``g_a`` and ``h_a`` itself, so the refined latents are fed in through
a shallow copy of the model whose analysis transforms return them (``base.replaced``).
"""

from __future__ import annotations

import contextlib

import torch
from compressai.models import (Cheng2020Anchor, Cheng2020Attention, FactorizedPrior,
                               FactorizedPriorReLU, JointAutoregressiveHierarchicalPriors,
                               MeanScaleHyperprior, ScaleHyperprior)

from .base import (HARD, Y_STREAM, Z_STREAM, Family, Gaussian, Given, bottleneck_bits, medians,
                   quiet_coder, replaced)

HYPER_STRIDE = 4  # z is y downsampled four times


def _sizes(state: dict, first: str, last: str) -> dict | None:
    if first not in state or last not in state:
        return None
    return {"N": state[first].size(0), "M": state[last].size(0)}


class Factorized(Family):
    """bmshj2018-factorized(-relu): one latent y, rounded around the bottleneck's medians."""

    architectures = {"bmshj2018-factorized": FactorizedPrior,
                     "bmshj2018-factorized-relu": FactorizedPriorReLU}
    hyper = False
    compiles = True

    @classmethod
    def dims(cls, net):
        return {"N": net.g_a[0].out_channels, "M": net.entropy_bottleneck.channels}

    @classmethod
    def infer(cls, state):
        dims = _sizes(state, "g_a.0.weight", "g_a.6.weight")
        if dims is None or any(k.startswith("h_a.") for k in state):
            return []
        relu = "g_a.1.beta" not in state  # GDN has parameters, ReLU has none
        return [("bmshj2018-factorized-relu" if relu else "bmshj2018-factorized", dims)]

    def analyse(self, x):
        return (self.net.g_a(x),)

    def relaxed(self, latents, rounder, transforms=contextlib.nullcontext):
        (y,) = latents
        eb = self.net.entropy_bottleneck
        y_soft = rounder.round(y, medians(eb), Y_STREAM)
        return y_soft, bottleneck_bits(eb, y_soft)

    def coder_output(self, latents):
        (y,) = latents
        return replaced(self.net, g_a=Given(y)).compress(y)

    def coder_shape(self, latent_size):
        return torch.Size(latent_size)

    def strings_per_image(self):
        return 1


class Hyperprior(Factorized):
    """bmshj2018-hyperprior and mbt2018-mean: z around the medians, then y around h_s's means
    (zero for the scale-only model), in one parallel pass each."""

    architectures = {"bmshj2018-hyperprior": ScaleHyperprior, "mbt2018-mean": MeanScaleHyperprior}
    hyper = True

    def __init__(self, net):
        super().__init__(net)
        self.gaussian = Gaussian.of(net.gaussian_conditional)
        self.has_means = isinstance(net, MeanScaleHyperprior)

    @classmethod
    def dims(cls, net):
        return {"N": net.entropy_bottleneck.channels, "M": net.g_a[-1].out_channels}

    @classmethod
    def infer(cls, state):
        dims = _sizes(state, "g_a.0.weight", "g_a.6.weight")
        if dims is None or "h_s.4.weight" not in state or "context_prediction.weight" in state:
            return []
        mean_scale = state["h_s.4.weight"].size(0) == 2 * dims["M"]  # conv(.., 2M) vs deconv
        return [("mbt2018-mean" if mean_scale else "bmshj2018-hyperprior", dims)]

    def analyse(self, x):
        y = self.net.g_a(x)
        return y, self.net.h_a(y if self.has_means else torch.abs(y))

    def side(self, z_hat, transforms=contextlib.nullcontext) -> torch.Tensor:
        """h_s of (soft or hard) z, in fp32."""
        with transforms():
            return self.net.h_s(z_hat).float()

    def gaussian_params(self, z_hat, transforms=contextlib.nullcontext):
        """(scales, means or None) predicted by h_s from (soft or hard) z."""
        params = self.side(z_hat, transforms)
        if not self.has_means:
            return params, None
        scales, means = params.chunk(2, 1)
        return scales, means

    def round_z(self, z, rounder):
        eb = self.net.entropy_bottleneck
        return rounder.round(z, medians(eb), Z_STREAM)

    def relaxed(self, latents, rounder, transforms=contextlib.nullcontext):
        y, z = latents
        z_soft = self.round_z(z, rounder)
        scales, means = self.gaussian_params(z_soft, transforms)
        y_soft, y_bits = rounder.round_gaussian(y, scales, means, self.gaussian, Y_STREAM)
        return y_soft, bottleneck_bits(self.net.entropy_bottleneck, z_soft) + y_bits

    def coder_output(self, latents):
        y, z = latents
        return replaced(self.net, g_a=Given(y), h_a=Given(z)).compress(y)

    def coder_shape(self, latent_size):
        return torch.Size(-(-side // HYPER_STRIDE) for side in latent_size)

    def strings_per_image(self):
        return 2


class Raster(Hyperprior):
    """mbt2018, cheng2020-anchor, cheng2020-attn: y's means come from a masked context of the
    latents decoded before, in raster order, which no parallel pass reproduces.

    Relaxation: the context is taken from the current continuous latents y (one masked
    convolution), recomputed every iteration; y is soft-rounded around the means it predicts
    and rated under them. The hard evaluation is the coder's own: y_hat is what the model's
    ``compress()`` writes, taken from its raster loop, and its bits are rated under the
    parameters the decoder predicts from y_hat.
    """

    architectures = {"mbt2018": JointAutoregressiveHierarchicalPriors,
                     "cheng2020-anchor": Cheng2020Anchor, "cheng2020-attn": Cheng2020Attention}
    compiles = True  # 1.52x the eager step on a CPU (benchmarks/results/e2e/families)

    @classmethod
    def dims(cls, net):
        n = net.entropy_bottleneck.channels
        return {"N": n, "M": net.context_prediction.in_channels}

    @classmethod
    def build(cls, architecture, dims):
        net_class = cls.architectures[architecture]
        if architecture == "mbt2018":
            return net_class(dims["N"], dims["M"])
        return net_class(dims["N"])  # cheng2020: M = N

    @classmethod
    def infer(cls, state):
        if "context_prediction.weight" not in state:
            return []
        if "g_a.0.conv1.weight" in state:  # cheng2020: residual blocks, M = N
            n = state["g_a.0.conv1.weight"].size(0)
            attention = any(".conv_a." in k for k in state)
            return [("cheng2020-attn" if attention else "cheng2020-anchor", {"N": n, "M": n})]
        dims = _sizes(state, "g_a.0.weight", "g_a.6.weight")
        return [("mbt2018", dims)] if dims else []

    def means_from_context(self, y_context, side):
        """(scales, means) of y from h_s's output and the masked context of ``y_context``."""
        ctx = self.net.context_prediction(y_context)
        params = self.net.entropy_parameters(torch.cat((side, ctx), dim=1))
        scales, means = params.chunk(2, 1)
        return scales, means

    def relaxed(self, latents, rounder, transforms=contextlib.nullcontext):
        y, z = latents
        z_soft = self.round_z(z, rounder)
        scales, means = self.means_from_context(y, self.side(z_soft, transforms))
        y_soft, y_bits = rounder.round_gaussian(y, scales, means, self.gaussian, Y_STREAM)
        return y_soft, bottleneck_bits(self.net.entropy_bottleneck, z_soft) + y_bits

    def hard(self, latents):
        y, z = latents
        y_hat = self.coder_latents(y, z)
        z_hat = self.round_z(z, HARD)
        scales, means = self.means_from_context(y_hat, self.side(z_hat))
        bits = bottleneck_bits(self.net.entropy_bottleneck, z_hat)
        return y_hat, bits + self.gaussian.bits(y_hat, scales, means)

    def coder_latents(self, y, z) -> torch.Tensor:
        """y_hat as the model's raster-order ``compress()`` computes it (and so the decoder)."""
        decoded = []
        shell = replaced(self.net, g_a=Given(y), h_a=Given(z))

        def raster_loop(y_hat, *args):  # the padded y_hat the loop fills in place
            decoded.append(y_hat)
            return self.net._compress_ar(y_hat, *args)

        shell._compress_ar = raster_loop
        with quiet_coder():
            shell.compress(y)
        p = self.net.context_prediction.padding[0]
        return torch.cat(decoded)[..., p:-p, p:-p]

    def strings_per_image(self):
        return 2


