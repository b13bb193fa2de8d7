"""Temperature schedules of docs/method.md §2 and §4, on the host (floats) or device (tensors)."""

from __future__ import annotations

import dataclasses
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


PAPER_LR = 5e-3
DECAYS = ("exp", "cosine", "linear")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How tau and Adam's learning rate move over a run of ``iters`` iterations.

    ``paper`` is docs/method.md §4 exactly: tau(t) = min(exp(-rate t), tau_max) whatever the
    run's length, a constant learning rate. ``budget`` is defined over the run's fraction
    s = t / iters, so that the number of iterations chooses the whole trajectory: tau falls
    from 1 (capped at tau_max) to ``tau_end`` along ``decay`` (exp: linear in log tau; cosine:
    a half cosine in log tau; linear: linear in tau) over the first 1 - ``final`` of the run,
    then stays at ``final_tau`` for the last ``final`` of it; the learning rate rises linearly
    over the first ``warmup`` of the run, then falls along a half cosine to ``floor`` times its
    peak. ``betas`` are Adam's. The paper's schedule scaled to a budget of T iterations is
    ``budget`` with tau_end = exp(-2), floor = 1, warmup = 0 (its tau after 2000 iterations).
    """

    kind: str = "paper"
    tau_end: float = math.exp(-2)
    decay: str = "exp"
    final: float = 0.0
    final_tau: float = 0.01
    lr: float = PAPER_LR
    warmup: float = 0.0
    floor: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999

    def __post_init__(self):
        if self.kind not in ("paper", "budget"):
            raise ValueError(f"schedule kind must be paper or budget, got {self.kind!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {self.decay!r}")
        for name in ("tau_end", "final_tau", "lr", "floor"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {getattr(self, name)}")
        for name in ("final", "warmup", "beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    @property
    def betas(self) -> tuple[float, float]:
        return self.beta1, self.beta2

    def describe(self) -> str:
        """The schedule as ``parse_schedule`` reads it: its kind and what differs from it."""
        if self in PRESETS.values():
            return next(name for name, preset in PRESETS.items() if preset == self)
        base = PRESETS[self.kind]
        changed = [f"{f.name}={getattr(self, f.name):g}" if isinstance(getattr(self, f.name),
                                                                       float)
                   else f"{f.name}={getattr(self, f.name)}"
                   for f in dataclasses.fields(self)
                   if f.name != "kind" and getattr(self, f.name) != getattr(base, f.name)]
        return ":".join([self.kind, ",".join(changed)]) if changed else self.kind

    def temperature(self, t, iters: int, *, method: str, tau_max: float, rate: float):
        """tau at iteration ``t`` (an int or a 0-d tensor, as :func:`temperature`) of a run of
        ``iters`` iterations; danneal keeps its own tau schedule under either kind."""
        if self.kind == "paper" or method == "danneal":
            return temperature(t, method=method, tau_max=tau_max, rate=rate)
        decaying = max(iters * (1 - self.final), 1.0)
        if not isinstance(t, torch.Tensor):
            return float(self.temperature(torch.tensor(t), iters, method=method,
                                          tau_max=tau_max, rate=rate))
        s = (t.to(torch.float32) / decaying).clamp(max=1.0)
        if self.decay == "exp":
            tau = torch.exp(s * math.log(self.tau_end))
        elif self.decay == "cosine":
            tau = torch.exp((1 - torch.cos(s * math.pi)) / 2 * math.log(self.tau_end))
        else:
            tau = 1 + s * (self.tau_end - 1)
        if self.final:
            tau = torch.where(t.to(torch.float32) >= decaying, self.final_tau, tau)
        return tau.clamp(TAU_MIN, tau_max)

    def learning_rate(self, t: int, iters: int, lr: float) -> float:
        """Adam's learning rate for update ``t`` (0-based) of ``iters``; ``lr``: the peak."""
        if self.kind == "paper":
            return lr
        warm = self.warmup * iters
        if t < warm:
            return lr * (t + 1) / warm
        s = (t - warm) / max(iters - warm, 1)
        return lr * (self.floor + (1 - self.floor) * (1 + math.cos(math.pi * s)) / 2)


PRESETS = {
    "paper": Schedule(),
    # chosen on crops of training photos, never the evaluation images (benchmarks/budget.py):
    # 18 candidates on 8 crops of 128² training photos, then 8 around the best with q3 and q5
    # (benchmarks/results/budget/README.md)
    "budget": Schedule(kind="budget", decay="linear", tau_end=0.05, lr=4e-2, floor=0.05),
}
# a run's schedule unless it says otherwise (or gives the paper's tau_rate); on 24 Kodak crops
# it keeps 102 % of the paper's 2000-iteration gain at 500 iterations (benchmarks/results/budget)
DEFAULT_SCHEDULE = "budget"


def parse_schedule(text: str) -> Schedule:
    """``paper``, ``budget``, or either with fields changed: ``budget:tau_end=0.02,lr=0.01``."""
    name, _, changes = text.partition(":")
    if name not in PRESETS:
        raise ValueError(f"unknown schedule {name!r}: paper or budget, optionally followed by "
                         ":field=value,... (fields: " + ", ".join(
                             f.name for f in dataclasses.fields(Schedule)
                             if f.name != "kind") + ")")
    fields = {f.name: f.type for f in dataclasses.fields(Schedule)}
    values = {}
    for item in filter(None, changes.split(",")):
        key, _, value = item.partition("=")
        if key not in fields or key == "kind" or not value:
            raise ValueError(f"schedule {text!r}: {item!r} is not field=value (fields: "
                             + ", ".join(k for k in fields if k != "kind") + ")")
        try:
            values[key] = value if key == "decay" else float(value)
        except ValueError:
            raise ValueError(f"schedule {text!r}: {key} must be a number, got {value!r}") from None
    return dataclasses.replace(PRESETS[name], **values)
