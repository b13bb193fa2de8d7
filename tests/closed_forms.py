"""Closed forms of docs/method.md §2, written independently of the code under test."""

import math

import torch


def p_up_closed_form(method: str, r: torch.Tensor, a: float = 2.3) -> torch.Tensor:
    """P(round up) at tau = 1 for a fractional part r: the two-class table of docs/method.md §2."""
    if method == "atanh":
        q_u, q_d = (r / (2 - r)).sqrt(), ((1 - r) / (1 + r)).sqrt()
        return q_u / (q_u + q_d)
    if method == "linear":
        return r
    if method == "cosine":
        return torch.sin(math.pi * r / 2) ** 2
    return r**a / (r**a + (1 - r) ** a)


def binomial_bound(p: torch.Tensor, samples: int) -> torch.Tensor:
    """4.5 standard deviations of a frequency: about 1e-5 false alarms per comparison."""
    return 4.5 * (p * (1 - p) / samples).sqrt()
