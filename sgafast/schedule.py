"""Temperature schedules of SPEC sections 2 and 4."""

from __future__ import annotations

import math

TAU_RATE = 1e-3
TAU_MAX = {"atanh": 0.5}  # every other SGA+ method starts at 1.0
DANNEAL_RATE = 4e-3


def default_tau_max(method: str) -> float:
    """tau_max of SPEC 4: 0.5 for atanh (the original SGA schedule), 1.0 for the SGA+ methods."""
    return TAU_MAX.get(method, 1.0)


def temperature(t: int, *, method: str = "ssl", tau_max: float | None = None,
                rate: float = TAU_RATE) -> float:
    """tau(t) = min(exp(-rate * t), tau_max); deterministic annealing has its own schedule."""
    if method == "danneal":
        return min(max(math.exp(-DANNEAL_RATE * t), 1e-8), 0.2)
    if tau_max is None:
        tau_max = default_tau_max(method)
    return min(math.exp(-rate * t), tau_max)
