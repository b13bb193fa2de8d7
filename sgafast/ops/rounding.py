"""``sga_round``: the public soft-rounding op, its argument checks and backend dispatch."""

from __future__ import annotations

import dataclasses
import math

import torch

from . import reference
from .errors import SgafastError
from .noise import MAX_SEED, gumbel_noise, uniform_stream

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


def _reference(v: torch.Tensor, tau, rounding: Rounding, seed, counter, noise):
    if rounding.method == "ste":
        return reference.straight_through(v)
    if rounding.method == "danneal":
        return reference.deterministic_anneal(v, tau)
    if rounding.method == "noise":
        u = noise[..., 0] if noise is not None else uniform_stream(
            v.shape, seed=seed, classes=1, counter=counter, device=v.device)[..., 0]
        return reference.uniform_noise(v, u.to(v.dtype))
    if noise is None:
        noise = gumbel_noise(v.shape, seed=seed, classes=rounding.classes, counter=counter,
                             device=v.device)
    return reference.soft_round(v, tau, noise.to(v.dtype), method=rounding.method,
                                classes=rounding.classes, a=rounding.a, r=rounding.r,
                                n=rounding.n)


def _use_triton(backend: str, v: torch.Tensor, rounding: Rounding) -> bool:
    if backend not in BACKENDS:
        raise SgafastError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not rounding.is_gumbel:
        return False  # the baselines are one or two PyTorch ops: nothing to fuse
    if backend == "auto":  # the kernels take fp32/fp16/bf16; float64 stays on the reference
        return v.is_cuda and v.dtype in (torch.float32, torch.float16, torch.bfloat16)
    return backend == "triton"


def sga_round(v: torch.Tensor, tau, rounding: Rounding | None = None, *,
              center: torch.Tensor | None = None, seed=None, counter=None,
              noise: torch.Tensor | None = None, backend: str = "auto",
              **params) -> torch.Tensor:
    """Stochastic soft rounding S(v; tau) of SPEC section 2 (or a baseline), differentiable.

    The rounding is a :class:`Rounding`, or built from ``params`` (``method``, ``classes``,
    ``a``, ``r``, ``n``; its defaults: two-class SSL). ``tau`` is a float or a one-element
    tensor (kept on the device: no host sync). ``center`` gives S(v - center) + center
    (differentiable in both). Noise is either explicit (``noise`` of shape
    ``v.shape + (classes,)``, Gumbel samples with ``noise[..., k]`` for the k-th candidate in
    ascending order; uniforms in [0, 1) of shape ``v.shape + (1,)`` for ``method="noise"``) or
    drawn from the counter-based stream of ``seed`` (an int, or one seed per entry of dim 0) and
    ``counter`` (two upper Philox counter words, default (0, 0)); with neither, a seed is drawn
    from torch's generator. ``backend``: ``"auto"`` fuses on CUDA, ``"triton"`` always fuses,
    ``"torch"`` never does.
    """
    if rounding is None:
        try:
            rounding = Rounding(**params)
        except TypeError as err:
            raise SgafastError(f"sga_round: {err}") from err
    elif params:
        raise SgafastError("give either a Rounding or its parameters, not both")
    tau = check_tau(tau)
    if noise is not None and seed is not None:
        raise SgafastError("give either noise or seed, not both")
    if noise is not None and noise.shape != (*v.shape, rounding.noise_classes):
        raise SgafastError(f"noise must have shape {(*v.shape, rounding.noise_classes)}, "
                           f"got {tuple(noise.shape)}")
    if noise is None and seed is None and rounding.method not in ("ste", "danneal"):
        seed = draw_seed()
    if center is not None and center.dtype != v.dtype:
        center = center.to(v.dtype)
    if _use_triton(backend, v, rounding):
        from .fused import fused_sga_round

        if not isinstance(tau, torch.Tensor):
            tau = torch.tensor(tau, dtype=torch.float32)
        return fused_sga_round(v, tau, rounding, center=center, seed=seed, counter=counter,
                               noise=noise)
    if center is None:
        return _reference(v, tau, rounding, seed, counter, noise)
    return _reference(v - center, tau, rounding, seed, counter, noise) + center
