"""The latent-codec families of ``compressai.models.sensetime``: checkerboard and ELIC.

Their contexts are computed in a fixed number of parallel passes (anchors, then non-anchors;
channel group after channel group), so the relaxation follows the coder's order exactly: each
pass is rounded around the means predicted from the passes before it, with its own noise
stream, and rated under the parameters of that prediction. A pass works on the checkerboard
half the coder codes (``unembed``), so with the coder's rounding the same operations give the
coder's y_hat. The refined latents enter the model's own ``compress()`` through shallow copies:
of the model, whose ``g_a`` returns y, and of its hyper codec, whose ``h_a`` returns z.
"""

from __future__ import annotations

import contextlib

import torch
from compressai.models import Cheng2020AnchorCheckerboard, Elic2022Chandelier, Elic2022Official

from .base import Y_STREAM, Z_STREAM, Family, Gaussian, Given, bottleneck_bits, medians, replaced
from .google import HYPER_STRIDE

LATENT_CODEC = "latent_codec.y."


class Checkerboard(Family):
    """cheng2020-anchor-checkerboard: y in two passes, anchors then non-anchors."""

    architectures = {"cheng2020-anchor-checkerboard": Cheng2020AnchorCheckerboard}

    def __init__(self, net):
        super().__init__(net)
        self.hyper_codec = net.latent_codec["hyper"]
        self.gaussians = {id(cb): Gaussian.of(cb.latent_codec["y"].gaussian_conditional)
                          for cb in self.checkerboards()}

    def checkerboards(self):
        return [self.net.latent_codec["y"]]

    @classmethod
    def dims(cls, net):
        n = net.latent_codec["hyper"].entropy_bottleneck.channels
        return {"N": n, "M": net.latent_codec["y"].context_prediction.in_channels}

    @classmethod
    def build(cls, architecture, dims):
        return cls.architectures[architecture](dims["N"])

    @classmethod
    def infer(cls, state):
        if "g_a.0.conv1.weight" not in state or LATENT_CODEC + "context_prediction.weight" \
                not in state:
            return []
        n = state["g_a.0.conv1.weight"].size(0)
        return [("cheng2020-anchor-checkerboard", {"N": n, "M": n})]

    def analyse(self, x):
        y = self.net.g_a(x)
        return y, self.hyper_codec.h_a(y)

    def relaxed(self, latents, rounder, transforms=contextlib.nullcontext):
        y, z = latents
        eb = self.hyper_codec.entropy_bottleneck
        z_soft = rounder.round(z, medians(eb), Z_STREAM)
        with transforms():
            side = self.hyper_codec.h_s(z_soft).float()
        y_soft, y_bits = self.round_y(y, side, rounder)
        return y_soft, bottleneck_bits(eb, z_soft) + y_bits

    def round_y(self, y, side, rounder):
        return self.two_passes(self.net.latent_codec["y"], y, side, rounder, Y_STREAM)

    def two_passes(self, cb, y, side, rounder, stream):
        """(y rounded anchors first, then non-anchors; bits) through checkerboard codec ``cb``."""
        gc_codec, gaussian = cb.latent_codec["y"], self.gaussians[id(cb)]
        y_, side_ = cb.unembed(y), cb.unembed(side)
        halves, bits = [], 0
        ctx = side_.new_zeros((side_.shape[1], cb.context_prediction.out_channels,
                               *side_.shape[3:]))  # the anchors have no spatial context
        for i in range(2):
            if i:
                decoded = torch.stack((halves[0], torch.zeros_like(halves[0])))
                ctx = cb.unembed(cb.context_prediction(cb.embed(decoded)))[1]
            params = gc_codec.entropy_parameters(cb.entropy_parameters(cb.merge(ctx, side_[i])))
            scales, means = gc_codec._chunk(params)
            hat, half_bits = rounder.round_gaussian(y_[i], scales, means, gaussian, stream + i)
            halves.append(hat)
            bits = bits + half_bits
        return cb.embed(torch.stack(halves)), bits

    def coder_output(self, latents):
        y, z = latents
        codec = self.net.latent_codec
        hyper = replaced(self.hyper_codec, h_a=Given(z))
        shell = replaced(codec, hyper=hyper)
        shell.latent_codec = {**codec.latent_codec, "hyper": hyper}
        return replaced(self.net, g_a=Given(y), latent_codec=shell).compress(y)

    def coder_shape(self, latent_size):
        hyper = torch.Size(-(-side // HYPER_STRIDE) for side in latent_size)
        return {"y": self.y_shape(latent_size), "hyper": hyper}

    def y_shape(self, latent_size):
        return torch.Size((self.dims(self.net)["M"], *latent_size))

    def strings_per_image(self):
        return 1 + 2 * len(self.checkerboards())


class ChannelGroups(Checkerboard):
    """elic2022-official / -chandelier: channel groups in order, each in two checkerboard
    passes; a group's parameters come from the groups before it (the model's own
    ``_get_ctx_params``, which also carries Chandelier's choice of groups)."""

    architectures = {"elic2022-official": Elic2022Official,
                     "elic2022-chandelier": Elic2022Chandelier}

    def checkerboards(self):
        groups = self.net.latent_codec["y"]
        return [groups.latent_codec[f"y{k}"] for k in range(len(groups.groups))]

    @classmethod
    def dims(cls, net):
        groups = list(net.latent_codec["y"].groups)
        return {"N": net.g_a[0].out_channels, "M": sum(groups), "groups": groups}

    @classmethod
    def build(cls, architecture, dims):
        return cls.architectures[architecture](dims["N"], dims["M"], groups=dims.get("groups"))

    @classmethod
    def infer(cls, state):
        prefix = LATENT_CODEC + "latent_codec.y{}.context_prediction.weight"
        groups, k = [], 0
        while prefix.format(k) in state:
            groups.append(state[prefix.format(k)].size(1))
            k += 1
        if not groups or "g_a.0.weight" not in state:
            return []
        dims = {"N": state["g_a.0.weight"].size(0), "M": sum(groups), "groups": groups}
        last = state.get("latent_codec.hyper.h_s.4.weight")
        if last is None:
            return []
        # h_s ends in Chandelier's conv (3N/2 -> 2M) or the official deconv (3N/2 -> 2N)
        n, m = dims["N"], dims["M"]
        shapes = {"elic2022-chandelier": (2 * m, n * 3 // 2),
                  "elic2022-official": (n * 3 // 2, 2 * n)}
        return [(name, dims) for name, shape in shapes.items() if tuple(last.shape[:2]) == shape]

    def round_y(self, y, side, rounder):
        groups = self.net.latent_codec["y"]
        parts, hats, bits = y.split(groups.groups, dim=1), [], 0
        for k, cb in enumerate(self.checkerboards()):
            params = groups._get_ctx_params(k, side, hats)
            hat, group_bits = self.two_passes(cb, parts[k], params, rounder, Y_STREAM + 2 * k)
            hats.append(hat)
            bits = bits + group_bits
        return torch.cat(hats, dim=1), bits

    def y_shape(self, latent_size):
        return [torch.Size((g, *latent_size)) for g in self.net.latent_codec["y"].groups]
