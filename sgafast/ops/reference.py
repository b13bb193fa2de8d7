"""The reference soft rounding of docs/method.md §2, written as the formulas read (the CPU path).

No performance tricks: these functions are the specification in code, the ground truth of every
kernel test, and what ``sga_round(..., backend="torch")`` runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

EPS = 1e-5  # two-class distances stay below 1 - EPS; SSL clamps d to [EPS, 1 - EPS]
COSINE_FLOOR = 1e-7
THREE_CLASS_FLOOR = 1e-6


def _log_sigmoid_of_minus(x: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(-x)) = -softplus(x), stable for any x."""
    return -F.softplus(x)


def _logit(d: torch.Tensor) -> torch.Tensor:
    return torch.log(d) - torch.log1p(-d)


def two_class_log_weight(d: torch.Tensor, method: str, a: float) -> torch.Tensor:
    """f(d): the log-weight of the candidate at distance d in [0, 1 - EPS] (two classes,
    docs/method.md §2)."""
    if method == "atanh":
        return -torch.atanh(d)
    if method == "linear":
        return torch.log1p(-d)
    if method == "cosine":
        return torch.log((1 - COSINE_FLOOR) * torch.cos(math.pi * d / 2) ** 2 + COSINE_FLOOR)
    if method == "ssl":
        return _log_sigmoid_of_minus(a * _logit(d.clamp(EPS, 1 - EPS)))
    raise ValueError(f"no two-class log-weight for {method!r}")


def three_class_log_weight(d: torch.Tensor, method: str, a: float, r: float,
                           n: float) -> torch.Tensor:
    """g(d): the log-weight at signed distance d (three classes, docs/method.md §2)."""
    if method == "linear":
        return n * torch.log(torch.clamp(1 - r * d.abs(), min=THREE_CLASS_FLOOR))
    if method == "cosine":
        base = torch.cos(math.pi / 2 * torch.clamp(r * d, -1, 1)).clamp_min(0)
        # base ** n with a finite gradient where base == 0 (n < 1 would give 0 * inf there)
        positive = base > 0
        powered = torch.where(positive, torch.where(positive, base, 1) ** n, 0)
        return torch.log(powered + COSINE_FLOOR)
    if method == "ssl":
        u = torch.clamp((r * d / 1.5).abs(), THREE_CLASS_FLOOR, 1 - THREE_CLASS_FLOOR)
        log_sigma = _log_sigmoid_of_minus(a * _logit(u))
        return n * torch.clamp(log_sigma, min=math.log(THREE_CLASS_FLOOR))
    raise ValueError(f"no three-class log-weight for {method!r}")


def candidates_and_log_weights(v: torch.Tensor, *, method: str, classes: int, a: float,
                               r: float, n: float):
    """Candidates as ``base + offsets`` (ascending, no gradient) and their log-weights f(d).

    ``base`` has v's shape, ``offsets`` and ``f`` have shape (..., K). Writing S as
    base + sum_k w_k offsets_k (equal to sum_k w_k b_k since the weights sum to 1) keeps an
    exact integer exact and large |v| accurate.
    """
    if classes == 2:
        down, up = torch.floor(v), torch.ceil(v)
        d_down = torch.clamp(v - down, max=1 - EPS)
        d_up = torch.clamp(up - v, max=1 - EPS)
        offsets = torch.stack([torch.zeros_like(v), up - down], dim=-1)
        f = torch.stack([two_class_log_weight(d_down, method, a),
                         two_class_log_weight(d_up, method, a)], dim=-1)
        return down, offsets, f
    nearest = torch.round(v)
    offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=v.dtype, device=v.device)
    d = (v - nearest).unsqueeze(-1) - offsets  # {c + 1, c, c - 1}
    return nearest, offsets.expand(*v.shape, 3), three_class_log_weight(d, method, a, r, n)


def soft_round(v: torch.Tensor, tau: float, gumbel: torch.Tensor, *, method: str,
               classes: int, a: float, r: float, n: float) -> torch.Tensor:
    """S(v; tau) = sum_k softmax((f(d_k)/tau + g_k)/tau)_k b_k, gradients through the weights."""
    base, offsets, f = candidates_and_log_weights(v, method=method, classes=classes, a=a, r=r,
                                                  n=n)
    w = torch.softmax((f / tau + gumbel) / tau, dim=-1)
    return base + (w * offsets).sum(-1)


def deterministic_anneal(v: torch.Tensor, tau: float) -> torch.Tensor:
    """Deterministic annealing: softmax(f/tau) of the atanh log-weights, no noise."""
    base, offsets, f = candidates_and_log_weights(v, method="atanh", classes=2, a=1.0, r=1.0,
                                                  n=1.0)
    return base + (torch.softmax(f / tau, dim=-1) * offsets).sum(-1)


def straight_through(v: torch.Tensor) -> torch.Tensor:
    """round(v) forward, identity backward."""
    return v + (torch.round(v) - v).detach()


def uniform_noise(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """v + (u - 1/2) for uniforms u in [0, 1): the training-time proxy."""
    return v + (u - 0.5)
