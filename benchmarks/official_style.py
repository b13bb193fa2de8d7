"""The refinement loop as the published SGA+ code runs it, written from SPEC section 5: the baseline.

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
from sgafast.images import pad, unpad

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


class OfficialStyleRun:
    """One image's refinement, advanced ``k`` iterations at a time (for interleaved timing)."""

    def __init__(self, model, x: torch.Tensor, *, lmbda: float, lr: float = 5e-3,
                 tau_rate: float = 1e-3, tau_max: float = 1.0, a: float = 2.3,
                 track: bool = True):
        self.net, self.x, self.lmbda = model.net, x, lmbda
        self.tau_rate, self.tau_max, self.a, self.track = tau_rate, tau_max, a, track
        x_padded, self.unpadding = pad(x)
        with torch.no_grad():
            y, z = codec.encode(self.net, x_padded)
        self.y, self.z = y.requires_grad_(True), z.requires_grad_(True)
        self.opt = torch.optim.Adam([self.y, self.z], lr=lr)
        self.t = 0
        self.losses, self.true_losses = [], []

    def rd_loss(self, y_soft, z_soft, scales, means) -> torch.Tensor:
        terms = codec.rd_terms(self.net, self.x, y_soft, z_soft, scales, means,
                               lambda t: unpad(t, self.unpadding))
        return codec.rd_loss(terms["mse"], terms["bits"], self.lmbda,
                             self.x.shape[-2] * self.x.shape[-1]).sum()

    def step(self) -> None:
        tau = min(math.exp(-self.tau_rate * self.t), self.tau_max)
        medians = codec.medians(self.net)
        z_soft = soft_round_ssl(self.z - medians, tau, self.a) + medians
        scales, means = codec.hyper_params(self.net, z_soft)
        y_soft = soft_round_ssl(self.y - means, tau, self.a) + means
        loss = self.rd_loss(y_soft, z_soft, scales, means)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.losses.append(loss.item())
        if self.track:
            with torch.no_grad():
                y_hat, z_hat, scales, means = codec.hard_latents(self.net, self.y, self.z)
                self.true_losses.append(self.rd_loss(y_hat, z_hat, scales, means).item())
        self.t += 1

    def advance(self, iters: int) -> None:
        for _ in range(iters):
            self.step()
