"""What refinement sees of a CompressAI model: latents, how each is rounded and rated, its coder.

A :class:`Family` is built on the model's own modules and never copies its forward code. The
rounding itself is a *rounder* handed in by the caller: the step's stochastic soft rounding
(``sgafast.step``) or :data:`HARD`, the coder's rounding, so that one pass structure gives the
relaxed loss and the true one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import types
import warnings
from typing import ClassVar, Protocol

import torch
from compressai.layers import MaskedConv2d
from torch import nn

LOG2 = math.log(2)
Z_STREAM, Y_STREAM = 0, 1  # the fourth Philox counter word: which latent (y's passes: 1, 2, ...)


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """A Gaussian conditional with its bounds read once (a read-back each step would sync)."""

    module: nn.Module
    scale_bound: float
    likelihood_bound: float  # 0: none

    @classmethod
    def of(cls, gc: nn.Module) -> Gaussian:
        likelihood = float(gc.likelihood_lower_bound.bound) if gc.use_likelihood_bound else 0.0
        return cls(gc, float(gc.lower_bound_scale.bound), likelihood)

    def bits(self, v: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None):
        """(B,) bits of (soft or hard) values under CompressAI's differentiable likelihood."""
        likelihood = self.module._likelihood(v, scales, means)
        if self.module.use_likelihood_bound:
            likelihood = self.module.likelihood_lower_bound(likelihood)
        return bits_per_image(likelihood)


def bits_per_image(likelihood: torch.Tensor) -> torch.Tensor:
    """-sum log2 p over all but the batch dimension: (B,)."""
    return -torch.log(likelihood).flatten(1).sum(1) / LOG2


def medians(eb: nn.Module) -> torch.Tensor:
    """An entropy bottleneck's per-channel medians, shaped (1, C, 1, 1)."""
    return eb.quantiles[:, 0, 1].reshape(1, -1, 1, 1)


def bottleneck_bits(eb: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """(B,) bits of (soft or hard) values under an entropy bottleneck, differentiably."""
    b, c = v.shape[:2]
    values = v.transpose(0, 1).reshape(c, 1, -1)  # the (C, 1, -1) layout _likelihood expects
    likelihood = eb._likelihood(values)[0]  # a tuple since CompressAI 1.2.5
    if eb.use_likelihood_bound:
        likelihood = eb.likelihood_lower_bound(likelihood)
    return bits_per_image(likelihood.reshape(c, b, *v.shape[2:]).transpose(0, 1))


class Rounder(Protocol):
    """How a family's latents are rounded: softly in the step, exactly in the coder."""

    def round(self, v: torch.Tensor, center: torch.Tensor, stream: int) -> torch.Tensor:
        """v rounded around ``center`` (noise stream ``stream``)."""

    def round_gaussian(self, v: torch.Tensor, scales: torch.Tensor, means: torch.Tensor | None,
                       gaussian: Gaussian, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(v rounded around ``means``, its (B,) bits under ``gaussian``)."""


class HardRounder:
    """The coder's rounding: round(v - center) + center, and the bits of the result."""

    def round(self, v, center, stream=0):
        return v.round() if center is None else torch.round(v - center) + center

    def round_gaussian(self, v, scales, means, gaussian, stream=0):
        hat = self.round(v, means)
        return hat, gaussian.bits(hat, scales, means)


HARD = HardRounder()


class Given(nn.Module):
    """Stands in for an analysis transform inside the coder: returns the latents it was given."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value

    def forward(self, *_):
        return self.value


def replaced(module: nn.Module, **children: nn.Module) -> nn.Module:
    """A shallow copy of ``module`` with some children replaced; ``module`` is untouched, so a
    coder thread can feed latents to a model another thread is refining with."""
    shell = copy.copy(module)
    shell._modules = {**module._modules, **children}
    return shell


@contextlib.contextmanager
def quiet_coder():
    """CompressAI warns that its autoregressive coder runs on the CPU: we know."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Inference on GPU is not recommended")
        yield


def _masked_conv(self, x: torch.Tensor) -> torch.Tensor:
    """MaskedConv2d's forward without rewriting its weight (``weight.data = weight * mask``)."""
    return self._conv_forward(x, self.weight * self.mask, self.bias)


def without_weight_rewrites(net: nn.Module) -> None:
    """Make ``net``'s masked convolutions leave their weights alone: CompressAI's re-assigns
    ``weight.data`` on every call, which frees the storage another thread may be reading (the
    pipeline codes one image while it refines the next), so the encoder and the decoder could
    see different weights. The result of a call is unchanged: the mask is applied either way."""
    for module in net.modules():
        if isinstance(module, MaskedConv2d):
            module.forward = types.MethodType(_masked_conv, module)


class Family:
    """One family of CompressAI image codecs, seen as latents to refine (see the module doc).

    Latents are a tuple of (B, C, h, w) tensors: ``(y, z)``, or ``(y,)`` without a hyperprior.
    """

    architectures: ClassVar[dict[str, type]] = {}  # CompressAI registry name -> class
    hyper: ClassVar[bool] = True  # whether there is a hyper-latent z (coded first)
    compiles: ClassVar[bool] = False  # whether compile="auto" compiles its step (where it pays)

    def __init__(self, net: nn.Module):
        self.net = net
        without_weight_rewrites(net)

    # -- structure --------------------------------------------------------------------------
    @classmethod
    def dims(cls, net: nn.Module) -> dict:
        """The constructor sizes of ``net`` (``N``, ``M``, and ``groups`` for ELIC)."""
        raise NotImplementedError

    @classmethod
    def build(cls, architecture: str, dims: dict) -> nn.Module:
        return cls.architectures[architecture](dims["N"], dims["M"])

    @classmethod
    def infer(cls, state: dict) -> list[tuple[str, dict]]:
        """The (architecture, dims) candidates a plain state dict's keys and shapes fit."""
        raise NotImplementedError

    # -- latents ----------------------------------------------------------------------------
    def analyse(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The amortised encoder's latents of a padded batch."""
        raise NotImplementedError

    def relaxed(self, latents, rounder: Rounder, transforms=contextlib.nullcontext):
        """(y rounded in the coder's order, (B,) bits of every latent); the hyper-synthesis
        runs under ``transforms``."""
        raise NotImplementedError

    def hard(self, latents) -> tuple[torch.Tensor, torch.Tensor]:
        """(the decoder's y_hat, its (B,) bits): what the bitstream holds."""
        return self.relaxed(latents, HARD)

    def synthesis(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.net.g_s(y_hat)

    # -- coder ------------------------------------------------------------------------------
    def compress(self, latents) -> list[bytes]:
        """The model's own ``compress()`` fed with these latents (batch of one): its strings,
        the hyper-latent's first (the order they are decoded in, and the ``.bin``'s)."""
        with quiet_coder():
            strings = [s[0] for s in self.coder_output(latents)["strings"]]
        return strings[-1:] + strings[:-1] if self.hyper else strings

    def coder_output(self, latents) -> dict:
        """What the model's own ``compress()`` returns (``strings``, ``shape``, ...) when its
        analysis transforms return these latents (any batch size)."""
        raise NotImplementedError

    def decompress_args(self, strings: list[bytes], latent_size: tuple[int, int]):
        """(strings, shape): the arguments of the model's own ``decompress()`` for strings in
        the ``.bin``'s order and a y of ``latent_size`` (h, w)."""
        ordered = strings[1:] + strings[:1] if self.hyper else strings
        return [[s] for s in ordered], self.coder_shape(latent_size)

    def decompress(self, strings: list[bytes], latent_size: tuple[int, int]) -> torch.Tensor:
        """The unchanged ``decompress()``: a padded (1, 3, H, W) image."""
        with quiet_coder():
            return self.net.decompress(*self.decompress_args(strings, latent_size))["x_hat"]

    def coder_shape(self, latent_size: tuple[int, int]):
        """The ``shape`` argument ``decompress()`` takes, for a y of ``latent_size``."""
        raise NotImplementedError

    def strings_per_image(self) -> int:
        """How many strings ``compress()`` writes per image."""
        raise NotImplementedError
