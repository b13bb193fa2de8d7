"""What a rounding is (``Rounding``: method, classes, parameters), and where the kernels run."""

from __future__ import annotations

import dataclasses
import math

import torch

from ..errors import SgafastError
from ..kernels.launch import KERNEL_DTYPES
from .noise import MAX_SEED

TWO_CLASS_METHODS = ("atanh", "linear", "cosine", "ssl")
THREE_CLASS_METHODS = ("linear", "cosine", "ssl")
BASELINES = ("ste", "noise", "danneal")
METHODS = TWO_CLASS_METHODS + BASELINES
BACKENDS = ("auto", "torch", "triton")
DEFAULT_A = {2: 2.3, 3: 1.4}


@dataclasses.dataclass(frozen=True)
class Rounding:
    """A fully specified rounding: method, class count and its parameters, checked."""

    method: str = "ssl"
    classes: int = 2
    a: float | None = None
    r: float = 0.98
    n: float = 1.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise SgafastError(f"unknown rounding method {self.method!r}; choose one of "
                               f"{', '.join(METHODS)}")
        if self.classes not in (2, 3):
            raise SgafastError(f"classes must be 2 or 3, got {self.classes}")
        if self.classes == 3 and self.method not in THREE_CLASS_METHODS:
            raise SgafastError(f"method {self.method!r} has no three-class form; three-class "
                               f"methods: {', '.join(THREE_CLASS_METHODS)}")
        if self.a is None:
            object.__setattr__(self, "a", DEFAULT_A[self.classes])
        for name in ("a", "r", "n"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SgafastError(f"{name} must be a finite number > 0, got {value}")
        if self.r > 1:
            raise SgafastError(f"r must be in (0, 1], got {self.r}")

    @property
    def is_gumbel(self) -> bool:
        """Whether this rounding is the Gumbel-softmax family the fused kernels implement."""
        return self.method not in BASELINES

    @property
    def noise_classes(self) -> int:
        """Noise samples per element: one Gumbel per candidate, one uniform for ``noise``."""
        return 1 if self.method == "noise" else self.classes


def check_tau(tau, name: str = "tau"):
    """A float tau must be finite and > 0; a tensor tau is the caller's (checking it would sync)."""
    if isinstance(tau, torch.Tensor):
        if tau.numel() != 1 or not tau.dtype.is_floating_point:
            raise SgafastError(f"{name}: expected a float or a one-element float tensor")
        return tau
    tau = float(tau)
    if not (math.isfinite(tau) and tau > 0):
        raise SgafastError(f"{name} must be a finite number > 0, got {tau}")
    return tau


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A fresh stream seed from torch's generator (so ``torch.manual_seed`` controls it)."""
    return int(torch.randint(0, MAX_SEED, (), generator=generator))


def kernels_run(backend: str, v: torch.Tensor) -> bool:
    """Whether the fused kernels compute on ``v``: ``"triton"`` always, ``"auto"`` on CUDA for
    the dtypes they take (float64 stays on the reference), ``"torch"`` never."""
    if backend not in BACKENDS:
        raise SgafastError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return v.is_cuda and v.dtype in KERNEL_DTYPES
    return backend == "triton"
