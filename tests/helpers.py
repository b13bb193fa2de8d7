"""What the op tests and benchmarks/gpu_suite.py share: the device, the methods, the tolerance."""

import torch

from sgafast.ops.rounding import THREE_CLASS_METHODS, TWO_CLASS_METHODS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# every Gumbel-softmax rounding the fused kernels implement, as (method, classes)
GUMBEL = [(m, 2) for m in TWO_CLASS_METHODS] + [(m, 3) for m in THREE_CLASS_METHODS]
ULPS = 8  # slack of the tolerance rule, in units of the dtype's epsilon


def relative_errors(kernel, sames, ref64) -> tuple[float, float]:
    """(worst error of ``kernel``, worst of the PyTorch results ``sames``), relative to
    1 + |ref64|; ``sames``: one tensor or several, PyTorch's computation at the kernel's dtype."""
    if isinstance(sames, torch.Tensor):
        sames = (sames,)
    scale = 1 + ref64.double().abs()
    worst = float(((kernel.double() - ref64.double()).abs() / scale).max())
    worst_torch = max(float(((same.double() - ref64.double()).abs() / scale).max())
                      for same in sames)
    return worst, worst_torch


def within_tolerance(worst: float, worst_torch: float, eps: float,
                     half_eps: float | None = None) -> bool:
    """flash-attention's rule: the kernel's worst error is at most twice PyTorch's worst at the
    same dtype, plus ULPS epsilons. A half-precision result, computed in fp32 from exact inputs,
    must also be within two of its epsilons (``half_eps``) of the float64 value."""
    return worst <= 2 * worst_torch + ULPS * eps and (half_eps is None or worst <= 2 * half_eps)


def tolerance(dtype: torch.dtype) -> dict:
    """The rule's epsilons for a result in ``dtype``: its epsilon, and the half-precision bound
    for fp16 and bf16."""
    eps = torch.finfo(dtype).eps
    return {"eps": eps, "half_eps": None if dtype == torch.float32 else eps}


def assert_no_worse_than_torch(kernel, sames, ref64, what, *, eps, half_eps=None) -> float:
    """``within_tolerance`` as an assertion with a message that locates the worst element;
    ``ref64``: the reference in float64 on the same noise. Returns the kernel's worst error."""
    assert kernel.shape == ref64.shape, what
    err = (kernel.double() - ref64.double()).abs() / (1 + ref64.double().abs())
    assert err.isfinite().all(), f"{what}: not finite at {(~err.isfinite()).nonzero()[:5]}"
    worst, worst_torch = relative_errors(kernel, sames, ref64)
    assert within_tolerance(worst, worst_torch, eps, half_eps), (
        f"{what}: worst relative error {worst:.3g} (PyTorch's {worst_torch:.3g}, eps {eps:.3g}, "
        f"half eps {half_eps}) at element {int(err.argmax())}, "
        f"{int((err > 2 * (half_eps or eps)).sum())} elements beyond two epsilons")
    return worst
