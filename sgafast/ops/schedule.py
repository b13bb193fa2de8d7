"""Temperature schedules of docs/method.md §2 and §4, on the host (floats) or device (tensors)."""

from __future__ import annotations

import math

import torch

TAU_RATE = 1e-3
TAU_MAX = {"atanh": 0.5}  # every other SGA+ method starts at 1.0
DANNEAL_RATE = 4e-3
DANNEAL_MAX, DANNEAL_MIN = 0.2, 1e-8
# tau never goes below this: the soft rounding divides its log-weights by tau twice, and at
# 1e-6 the weights are already one-hot in fp32 while 1 / tau^2 = 1e12 stays finite (a schedule
# that underflowed to 0 turned the latents into NaN).
TAU_MIN = 1e-6


def default_tau_max(method: str) -> float:
    """tau_max of docs/method.md §4: 0.5 for atanh (the original SGA schedule), 1.0 for the
    SGA+ methods."""
    return TAU_MAX.get(method, 1.0)


def temperature(t, *, method: str = "ssl", tau_max: float | None = None,
                rate: float = TAU_RATE):
    """tau(t) = min(exp(-rate * t), tau_max), at least TAU_MIN; danneal has its own schedule.

    ``t`` is an int (a float comes back) or a tensor (a float32 tensor on its device comes back,
    computed without the host).
    """
    if method == "danneal":
        high, low, rate = DANNEAL_MAX, DANNEAL_MIN, DANNEAL_RATE
    else:
        high, low = default_tau_max(method) if tau_max is None else tau_max, TAU_MIN
    if isinstance(t, torch.Tensor):
        return torch.exp(t.to(torch.float32) * -rate).clamp(low, high)
    return min(max(math.exp(-rate * t), low), high)
