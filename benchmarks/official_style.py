"""The refinement loop as the published SGA+ code runs it (docs/method.md §5): the baseline.

What makes it the authors' loop, not ours: eager PyTorch, one image at a time, the soft rounding
as a chain of small tensor ops with Gumbel noise from ``torch.rand`` (two-class SSL, the same
function as ``sgafast.reference``), tau computed in Python every iteration, the relaxed loss read
back with ``.item()`` for its log, and a true (hard-rounded) R-D loss forward after every update,
also read back. ``track=False`` drops that per-iteration true-loss forward: the pure compute.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sgafast import codec
from sgafast.images import Canvas, Geometry

EPS = 1e-5


def soft_round_ssl(v: torch.Tensor, tau: float, a: float) -> torch.Tensor:
    """Two-class SSL soft rounding, one op at a time, noise drawn with torch.rand."""
    v_floor = torch.floor(v)
    v_ceil = torch.ceil(v)
    bounds = torch.stack([v_floor, v_ceil], dim=-1)
    distance = torch.stack([v - v_floor, v_ceil - v], dim=-1)
    distance = torch.clamp(distance, EPS, 1 - EPS)
    logit = torch.log(distance) - torch.log(1 - distance)
    log_weight = -F.softplus(a * logit)
    log_weight = log_weight / tau
    u = torch.rand_like(log_weight).clamp_min(1e-10)
    gumbel = -torch.log(-torch.log(u))
    weights = torch.softmax((log_weight + gumbel) / tau, dim=-1)
    return torch.sum(weights * bounds, dim=-1)


class OfficialStyleRounder:
    """The published loop's rounding of every latent, as a family's rounder (any model)."""

    def __init__(self, tau: float, a: float):
        self.tau, self.a = tau, a

    def round(self, v, center, stream=0):
        return soft_round_ssl(v - center, self.tau, self.a) + center

    def round_gaussian(self, v, scales, means, gaussian, stream=0):
        soft = soft_round_ssl(v if means is None else v - means, self.tau, self.a)
        soft = soft if means is None else soft + means
        return soft, gaussian.bits(soft, scales, means)


class OfficialStyleRun:
    """One image's refinement, advanced ``k`` iterations at a time (for interleaved timing)."""

    def __init__(self, model, x: torch.Tensor, *, lmbda: float, lr: float = 5e-3,
                 tau_rate: float = 1e-3, tau_max: float = 1.0, a: float = 2.3,
                 track: bool = True):
        self.family, self.x, self.lmbda = model.family, x, lmbda
        self.tau_rate, self.tau_max, self.a, self.track = tau_rate, tau_max, a, track
        self.geometry = Geometry.of(x)
        with torch.no_grad():
            latents = self.family.analyse(self.geometry.pad(x))
        self.latents = tuple(v.requires_grad_(True) for v in latents)
        self.opt = torch.optim.Adam(self.latents, lr=lr)
        self.t = 0
        self.losses, self.true_losses = [], []

    def step(self) -> None:
        tau = min(math.exp(-self.tau_rate * self.t), self.tau_max)
        y_soft, bits = self.family.relaxed(self.latents, OfficialStyleRounder(tau, self.a))
        x_hat = self.geometry.unpad(self.family.synthesis(y_soft))
        loss = codec.rd_loss(codec.mse(x_hat, self.x), bits, self.lmbda,
                             self.geometry.num_pixels).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.losses.append(loss.item())
        if self.track:
            with torch.no_grad():
                true_loss, _ = codec.hard_rd(self.family, Canvas.of(self.x), self.latents,
                                             self.lmbda)
                self.true_losses.append(true_loss.sum().item())
        self.t += 1

    def advance(self, iters: int) -> None:
        for _ in range(iters):
            self.step()
