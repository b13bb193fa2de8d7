"""Fused SGA/SGA+ soft rounding S(v - c; tau) + c: one Triton kernel forward, one backward.

Each element is independent: the kernels read v (and the center), draw the Gumbel noise in
registers from the counter-based stream of ``sgafast.noise`` (or read explicit noise, for tests),
compute the candidates, log-weights and softmax in fp32, and write one value. The backward kernel
regenerates the same noise and recomputes the weights from v, so nothing but v and the seeds is
saved. Only ``tl.*`` math is used (no libdevice), so the same kernels run under
``TRITON_INTERPRET=1`` on the CPU. Formulas: SPEC section 2, mirrored from ``sgafast.reference``.
"""

import contextlib
import math

import torch
import triton
import triton.language as tl

from sgafast import reference
from sgafast.errors import SgafastError
from sgafast.noise import UNIFORM_MIN

METHOD_IDS = {"atanh": 0, "linear": 1, "cosine": 2, "ssl": 3}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_ATANH = tl.constexpr(METHOD_IDS["atanh"])
_LINEAR = tl.constexpr(METHOD_IDS["linear"])
_COSINE = tl.constexpr(METHOD_IDS["cosine"])
_EPS = tl.constexpr(reference.EPS)
_COSINE_FLOOR = tl.constexpr(reference.COSINE_FLOOR)
_FLOOR3 = tl.constexpr(reference.THREE_CLASS_FLOOR)
_LOG_FLOOR3 = tl.constexpr(math.log(reference.THREE_CLASS_FLOOR))
_UNIFORM_MIN = tl.constexpr(UNIFORM_MIN)
_PI = tl.constexpr(math.pi)
_HALF_PI = tl.constexpr(math.pi / 2)


# ----------------------------------------------------------------------------------------------
# Small helpers from tl.log / tl.exp only (the interpreter has no libdevice)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _sigmoid_pair(z):
    """(sigmoid(z), sigmoid(-z)) from one exp(-|z|): no overflow, no 1 - w cancellation."""
    t = tl.exp(-tl.abs(z))
    big = 1.0 / (1.0 + t)
    small = t * big
    positive = z >= 0.0
    return tl.where(positive, big, small), tl.where(positive, small, big)


@triton.jit
def _softplus_terms(s):
    """softplus(s) = max(s, 0) + log(1 + t) with t = exp(-|s|), and sigmoid(s).

    Equals torch's softplus to rounding: above its threshold 20, where torch returns s, t is
    below 2.1e-9 and log(1 + t) vanishes against s in fp32.
    """
    t = tl.exp(-tl.abs(s))
    sigmoid, _ = _sigmoid_pair(s)
    return tl.maximum(s, 0.0), t, sigmoid


@triton.jit
def _sign(x):
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, 0.0))


@triton.jit
def _round_half_even(x):
    """torch.round: nearest integer, ties to even, from floor and the fraction (x + 0.5 would
    round 0.49999997 up). The fraction is exact except in (-1/2, 0), where it stays in (1/2, 1]
    or, for x = -0.49999997 alone, becomes the tie 1/2 that goes to the same integer, 0."""
    down = tl.floor(x)
    frac = x - down
    odd = (down - 2.0 * tl.floor(0.5 * down)) == 1.0
    return tl.where((frac > 0.5) | ((frac == 0.5) & odd), down + 1.0, down)


# ----------------------------------------------------------------------------------------------
# Log-weights of SPEC 2 and their derivatives, with torch's gradient rules for clamp and abs:
# zero at a clamp's bound (the minimum-norm subgradient of torch >= 2.12; earlier versions gave
# 1 there, so the two differ only where a distance equals a clamp bound exactly), sign(0) = 0
# ----------------------------------------------------------------------------------------------


@triton.jit
def _two_class_log_odds(d_down, d_up, a, METHOD: tl.constexpr):
    """f(d_up) - f(d_down) and f'(d_down), f'(d_up), for distances in [0, 1 - EPS].

    The difference is taken as the log of a ratio: one log per element instead of one per
    class. 1 - d is exact for d >= 1/2 (Sterbenz) and within 2^-25 of 1 - d below, so log(1 - d)
    is as accurate as the reference's log1p(-d).
    """
    if METHOD == _ATANH:  # f = -atanh(d) = -log((1 + d) / (1 - d)) / 2
        odds = (1.0 + d_down) * (1.0 - d_up) / ((1.0 - d_down) * (1.0 + d_up))
        delta = 0.5 * tl.log(odds)
        df_down = -1.0 / ((1.0 - d_down) * (1.0 + d_down))
        df_up = -1.0 / ((1.0 - d_up) * (1.0 + d_up))
    elif METHOD == _LINEAR:  # f = log(1 - d)
        delta = tl.log((1.0 - d_up) / (1.0 - d_down))
        df_down = -1.0 / (1.0 - d_down)
        df_up = -1.0 / (1.0 - d_up)
    elif METHOD == _COSINE:  # f = log((1 - 1e-7) cos^2(pi d / 2) + 1e-7)
        angle_down = _PI * d_down * 0.5
        angle_up = _PI * d_up * 0.5
        cos_down = tl.cos(angle_down)
        cos_up = tl.cos(angle_up)
        q_down = (1.0 - _COSINE_FLOOR) * cos_down * cos_down + _COSINE_FLOOR
        q_up = (1.0 - _COSINE_FLOOR) * cos_up * cos_up + _COSINE_FLOOR
        delta = tl.log(q_up / q_down)
        df_down = -(1.0 - _COSINE_FLOOR) * _PI * tl.sin(angle_down) * cos_down / q_down
        df_up = -(1.0 - _COSINE_FLOOR) * _PI * tl.sin(angle_up) * cos_up / q_up
    else:  # SSL: f = -softplus(a logit(d)), d clamped to [EPS, 1 - EPS]
        dc_down = tl.minimum(tl.maximum(d_down, _EPS), 1.0 - _EPS)
        dc_up = tl.minimum(tl.maximum(d_up, _EPS), 1.0 - _EPS)
        top_down, t_down, sig_down = _softplus_terms(a * tl.log(dc_down / (1.0 - dc_down)))
        top_up, t_up, sig_up = _softplus_terms(a * tl.log(dc_up / (1.0 - dc_up)))
        delta = top_down - top_up + tl.log((1.0 + t_down) / (1.0 + t_up))
        # the clamp's upper bound needs no mask: d = 1 - EPS only where _two_class's is off
        df_down = tl.where(d_down > _EPS, -a * sig_down / (dc_down * (1.0 - dc_down)), 0.0)
        df_up = tl.where(d_up > _EPS, -a * sig_up / (dc_up * (1.0 - dc_up)), 0.0)
    return delta, df_down, df_up


@triton.jit
def _three_class_log_weight(d, a, r, n, METHOD: tl.constexpr):
    """g(d) and dg/dd of the three-class table, for a signed distance d."""
    if METHOD == _LINEAR:
        q = 1.0 - r * tl.abs(d)
        qc = tl.maximum(q, _FLOOR3)
        g = n * tl.log(qc)
        dg = tl.where(q > _FLOOR3, -n * r * _sign(d) / qc, 0.0)
    elif METHOD == _COSINE:
        t = r * d
        angle = _HALF_PI * tl.minimum(tl.maximum(t, -1.0), 1.0)
        base = tl.cos(angle)  # clamped at 0 below: in fp32 cos(pi/2) = -4.4e-8
        positive = base > 0.0
        safe = tl.where(positive, base, 1.0)  # base ** n with no log(0) where base == 0
        powered = tl.where(positive, tl.exp(n * tl.log(safe)), 0.0)
        q = powered + _COSINE_FLOOR
        g = tl.log(q)
        dpowered = n * (powered / safe) * (-tl.sin(angle) * _HALF_PI * r)
        dg = tl.where(positive & (t > -1.0) & (t < 1.0), dpowered / q, 0.0)
    else:  # SSL: n log(max(sigmoid(-a logit(u)), 1e-6)), u = clamp(|r d / 1.5|, 1e-6, 1 - 1e-6)
        t = tl.abs(r * d / 1.5)
        u = tl.minimum(tl.maximum(t, _FLOOR3), 1.0 - _FLOOR3)
        top, e, sig = _softplus_terms(a * tl.log(u / (1.0 - u)))
        log_sigma = -(top + tl.log(1.0 + e))
        g = n * tl.maximum(log_sigma, _LOG_FLOOR3)
        inside = (log_sigma > _LOG_FLOOR3) & (t > _FLOOR3) & (t < 1.0 - _FLOOR3)
        dg = tl.where(inside, -n * a * sig / (u * (1.0 - u)) * (r / 1.5) * _sign(d), 0.0)
    return g, dg


# ----------------------------------------------------------------------------------------------
# Noise: Gumbel samples -log(E), E = -log(u) ~ Exp(1), u from one Philox call per element
# ----------------------------------------------------------------------------------------------


@triton.jit
def _philox_words(seeds_ptr, counter_ptr, item, local):
    # counter = (the int64 index within the item as two words, so items above 2^32 elements
    # still get distinct noise; then the caller's two counter words, e.g. iteration and latent),
    # key = the item's seed; word k feeds class k: sgafast.noise.uniform_stream, bit for bit
    seed = tl.load(seeds_ptr + item)
    lo = local.to(tl.uint32)
    zero = lo * 0
    upper_a = zero + tl.load(counter_ptr).to(tl.uint32)  # low 32 bits, as the torch twin
    upper_b = zero + tl.load(counter_ptr + 1).to(tl.uint32)
    return tl.philox(seed, lo, (local >> 32).to(tl.uint32), upper_a, upper_b)


@triton.jit
def _exponential(bits):
    u = tl.maximum(tl.uint_to_uniform_float(bits), _UNIFORM_MIN)  # tl.rand can return 0
    return -tl.log(u)


@triton.jit
def _gumbel_gap(seeds_ptr, counter_ptr, noise_ptr, item, local, offs, mask,
                HAS_NOISE: tl.constexpr):
    """g_up - g_down for two classes: log(E_down / E_up), three logs instead of four."""
    if HAS_NOISE:
        g_down = tl.load(noise_ptr + offs * 2, mask=mask, other=0.0).to(tl.float32)
        g_up = tl.load(noise_ptr + offs * 2 + 1, mask=mask, other=0.0).to(tl.float32)
        gap = g_up - g_down
    else:
        b0, b1, _, _ = _philox_words(seeds_ptr, counter_ptr, item, local)
        gap = tl.log(_exponential(b0) / _exponential(b1))
    return gap


@triton.jit
def _gumbel3(seeds_ptr, counter_ptr, noise_ptr, item, local, offs, mask,
             HAS_NOISE: tl.constexpr):
    """Gumbel noise of the three candidates, in ascending order."""
    if HAS_NOISE:
        g0 = tl.load(noise_ptr + offs * 3, mask=mask, other=0.0).to(tl.float32)
        g1 = tl.load(noise_ptr + offs * 3 + 1, mask=mask, other=0.0).to(tl.float32)
        g2 = tl.load(noise_ptr + offs * 3 + 2, mask=mask, other=0.0).to(tl.float32)
    else:
        b0, b1, b2, _ = _philox_words(seeds_ptr, counter_ptr, item, local)
        g0 = -tl.log(_exponential(b0))
        g1 = -tl.log(_exponential(b1))
        g2 = -tl.log(_exponential(b2))
    return g0, g1, g2


# ----------------------------------------------------------------------------------------------
# The soft rounding of a block: S(x) = base + s, ds = dS/dx (dead code in forward, removed)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _two_class(x, gap, inv_tau, a, METHOD: tl.constexpr):
    down = tl.floor(x)
    up = tl.ceil(x)  # ceil, not floor + 1: an exact integer has one candidate and S(v) = v
    frac = x - down  # the same fp32 roundings as the reference's v - floor(v), ceil(v) - v
    rest = up - x
    delta, df_down, df_up = _two_class_log_odds(tl.minimum(frac, 1.0 - _EPS),
                                                tl.minimum(rest, 1.0 - _EPS), a, METHOD)
    # z_up - z_down of softmax((f / tau + g) / tau): a softmax of two is the sigmoid of it
    w_up, w_down = _sigmoid_pair((delta * inv_tau + gap) * inv_tau)
    step = up - down
    # d frac/dx = 1 and d rest/dx = -1, each where its clamp at 1 - EPS is inactive
    dz = -(tl.where(rest < 1.0 - _EPS, df_up, 0.0)
           + tl.where(frac < 1.0 - _EPS, df_down, 0.0)) * inv_tau * inv_tau
    return down, w_up * step, w_up * w_down * step * dz


@triton.jit
def _three_class(x, g0, g1, g2, inv_tau, a, r, n, METHOD: tl.constexpr):
    nearest = _round_half_even(x)
    c = x - nearest
    f0, df0 = _three_class_log_weight(c + 1.0, a, r, n, METHOD)  # candidate nearest - 1
    f1, df1 = _three_class_log_weight(c, a, r, n, METHOD)
    f2, df2 = _three_class_log_weight(c - 1.0, a, r, n, METHOD)  # candidate nearest + 1
    z0 = (f0 * inv_tau + g0) * inv_tau
    z1 = (f1 * inv_tau + g1) * inv_tau
    z2 = (f2 * inv_tau + g2) * inv_tau
    top = tl.maximum(tl.maximum(z0, z1), z2)
    e0 = tl.exp(z0 - top)
    e1 = tl.exp(z1 - top)
    e2 = tl.exp(z2 - top)
    total = e0 + e1 + e2
    w0 = e0 / total
    w1 = e1 / total
    w2 = e2 / total
    s = w2 - w0  # S - nearest: candidate offsets -1, 0, +1 (no cancellation against nearest)
    # dS/dx = sum_k w_k (b_k - S) dz_k/dx with dz_k/dx = g'(d_k) / tau^2
    ds = (w0 * (-1.0 - s) * df0 - w1 * s * df1 + w2 * (1.0 - s) * df2) * inv_tau * inv_tau
    return nearest, s, ds


@triton.jit
def _soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, local, offs, mask, tau_ptr, a, r, n,
                METHOD: tl.constexpr, CLASSES: tl.constexpr, HAS_NOISE: tl.constexpr):
    """(base, s, ds): S(x) = base + s, ds = dS/dx; tau is read from device memory."""
    inv_tau = 1.0 / tl.load(tau_ptr).to(tl.float32)
    a = tl.cast(a, tl.float32)  # scalars may arrive as fp64 (Inductor): fp32 math
    if CLASSES == 2:
        gap = _gumbel_gap(seeds_ptr, counter_ptr, noise_ptr, item, local, offs, mask, HAS_NOISE)
        base, s, ds = _two_class(x, gap, inv_tau, a, METHOD)
    else:
        g0, g1, g2 = _gumbel3(seeds_ptr, counter_ptr, noise_ptr, item, local, offs, mask,
                              HAS_NOISE)
        base, s, ds = _three_class(x, g0, g1, g2, inv_tau, a, tl.cast(r, tl.float32),
                                   tl.cast(n, tl.float32), METHOD)
    return base, s, ds


@triton.jit
def _round_to(x, dtype: tl.constexpr):
    """fp32 x in the output dtype, rounded to nearest even like torch's casts.

    Triton's interpreter truncates fp32 -> bf16 (the GPU's cvt.rn rounds): rounding the bits
    first makes that cast exact, so CPU and GPU give the same bf16 output.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _block(per_item, blocks_per_item, BLOCK: tl.constexpr):
    """(item, index within item, flat offset, mask) of this program: one item per program."""
    pid = tl.program_id(0).to(tl.int64)  # int64 before any multiply: offsets pass 2^31
    item = pid // blocks_per_item
    local = (pid - item * blocks_per_item) * BLOCK + tl.arange(0, BLOCK)
    return item, local, item * per_item + local, local < per_item


# blocks_per_item is not specialised (fewer compiled variants); per_item is: its divisibility
# by 16 is what lets the loads and stores vectorise
@triton.jit(do_not_specialize=["blocks_per_item"])
def _sga_round_fwd_kernel(v_ptr, center_ptr, seeds_ptr, counter_ptr, noise_ptr, out_ptr,
                          per_item, blocks_per_item, tau_ptr, a, r, n, METHOD: tl.constexpr,
                          CLASSES: tl.constexpr, HAS_CENTER: tl.constexpr,
                          HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    item, local, offs, mask = _block(per_item, blocks_per_item, BLOCK)
    x = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_CENTER:
        center = tl.load(center_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = x - center
    base, s, _ = _soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, local, offs, mask,
                             tau_ptr, a, r, n, METHOD, CLASSES, HAS_NOISE)
    out = base + s
    if HAS_CENTER:
        out = out + center
    tl.store(out_ptr + offs, _round_to(out, out_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=["blocks_per_item"])
def _sga_round_bwd_kernel(grad_out_ptr, v_ptr, center_ptr, seeds_ptr, counter_ptr, noise_ptr,
                          grad_v_ptr, grad_center_ptr, per_item, blocks_per_item, tau_ptr, a, r,
                          n,
                          METHOD: tl.constexpr, CLASSES: tl.constexpr,
                          HAS_CENTER: tl.constexpr, CENTER_GRAD: tl.constexpr,
                          HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    item, local, offs, mask = _block(per_item, blocks_per_item, BLOCK)
    x = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_CENTER:
        x = x - tl.load(center_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    _, _, ds = _soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, local, offs, mask,
                           tau_ptr, a, r, n, METHOD, CLASSES, HAS_NOISE)
    grad_out = tl.load(grad_out_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    grad_v = grad_out * ds
    tl.store(grad_v_ptr + offs, _round_to(grad_v, grad_v_ptr.dtype.element_ty), mask=mask)
    if CENTER_GRAD:
        # out = S(v - c) + c: d out / dc = 1 - S', summed in autograd's order
        grad_center = grad_out - grad_v
        tl.store(grad_center_ptr + offs,
                 _round_to(grad_center, grad_center_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def interpreted() -> bool:
    """Whether the kernels were built for Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return not isinstance(_sga_round_fwd_kernel, triton.runtime.JITFunction)


def launch_config(per_item: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK, num_warps), fixed rather than autotuned so that backward reuses forward's choice.

    GPU: 1024 elements per program, 4 per thread (one 16-byte fp32 vector), 8 warps. The
    kernels are arithmetic-heavy (sm_90 SASS of the two-class SSL forward: ~310 instructions
    per element, Philox-10 ~50 of them and six accurate logs most of the rest), so they want
    many warps in flight rather than wide vectors. Not yet measured on a GPU:
    benchmarks/gpu_suite.py sweeps the alternatives. CPU interpreter: its cost is per program
    and per op, not per element, so one block covers a whole item, up to 2^16 elements.
    """
    if device.type == "cpu":
        return min(triton.next_power_of_2(max(per_item, 1)), 1 << 16), 1
    return 1024, 8


def _on(device: torch.device):
    """Launch on the tensors' own GPU, not the current one (a no-op on the CPU)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _items(v: torch.Tensor, seeds: torch.Tensor | None) -> tuple[int, int]:
    """(items, elements per item): per-item seeds split v along dim 0, else v is one item."""
    items = 1 if seeds is None else seeds.numel()
    return items, v.numel() // items


def _check(v, tau, seeds, counter, noise, classes, block, **like_v):
    """Dtype, device, contiguity and shapes, up front (``like_v``: tensors shaped like v)."""
    if tau.numel() != 1 or not tau.dtype.is_floating_point or tau.device != v.device:
        raise SgafastError("tau: expected a one-element float tensor on v's device")
    if counter.shape != (2,) or counter.dtype != torch.int64 or counter.device != v.device:
        raise SgafastError("counter: expected an int64 tensor of shape (2,) on v's device")
    if v.dtype not in KERNEL_DTYPES:
        raise SgafastError(f"the fused kernels take float32, float16 or bfloat16, not {v.dtype}; "
                           f"use backend='torch'")
    if v.device.type == "cpu" and not interpreted():
        raise SgafastError("the fused kernels ran on a CPU tensor without the Triton "
                           "interpreter: set TRITON_INTERPRET=1 before importing triton, "
                           "or use backend='torch'")
    if not v.is_contiguous():
        raise SgafastError("v must be contiguous (fused_sga_round makes it so)")
    if block & (block - 1):
        raise SgafastError(f"BLOCK must be a power of two, got {block}")
    if (seeds is None) == (noise is None):
        raise SgafastError("give the kernels exactly one of seeds and noise")
    shapes = {name: (t, v.shape) for name, t in like_v.items()}
    shapes["noise"] = (noise, (*v.shape, classes))
    for name, (t, shape) in shapes.items():
        if t is not None and (t.shape != shape or t.device != v.device or not t.is_contiguous()):
            raise SgafastError(f"{name}: expected a contiguous tensor of shape {tuple(shape)} "
                               f"on {v.device}, got {tuple(t.shape)} on {t.device}")
        if t is not None and name != "noise" and t.dtype != v.dtype:
            raise SgafastError(f"{name}: expected dtype {v.dtype}, got {t.dtype}")
    if seeds is not None:
        if seeds.dtype != torch.int64 or seeds.device != v.device or seeds.dim() != 1:
            raise SgafastError("seeds: expected a 1-D int64 tensor on v's device")
        if seeds.numel() not in (1, v.shape[0] if v.dim() else 1):
            raise SgafastError(f"seeds: give one seed, or one per entry of dim 0, not "
                               f"{seeds.numel()}")


def sga_round_forward(v: torch.Tensor, tau: torch.Tensor, *, method: str, classes: int,
                      a: float, r: float, n: float, center: torch.Tensor | None = None,
                      seeds: torch.Tensor | None = None, counter: torch.Tensor,
                      noise: torch.Tensor | None = None, block: int,
                      num_warps: int) -> torch.Tensor:
    """S(v - center; tau) + center in one launch: reads v (and center), writes the output.

    ``tau``: a one-element fp32 tensor; ``counter``: the two upper Philox counter words (int64,
    shape (2,)); both stay on the device, so a changing tau or iteration never recompiles.
    """
    _check(v, tau, seeds, counter, noise, classes, block, center=center)
    out = torch.empty_like(v)
    if v.numel() == 0:
        return out
    items, per_item = _items(v, seeds)
    blocks_per_item = triton.cdiv(per_item, block)
    with _on(v.device):
        _sga_round_fwd_kernel[(items * blocks_per_item,)](
            v, center, seeds, counter, noise, out, per_item, blocks_per_item, tau, a, r, n,
            METHOD=METHOD_IDS[method], CLASSES=classes, HAS_CENTER=center is not None,
            HAS_NOISE=noise is not None, BLOCK=block, num_warps=num_warps)
    return out


def sga_round_backward(grad_out: torch.Tensor, v: torch.Tensor, tau: torch.Tensor, *,
                       method: str, classes: int, a: float, r: float, n: float,
                       center: torch.Tensor | None = None, center_grad: bool = True,
                       seeds: torch.Tensor | None = None, counter: torch.Tensor,
                       noise: torch.Tensor | None = None, block: int,
                       num_warps: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(grad_v, grad_center) in one launch: regenerates the noise and recomputes the weights.

    grad_center is None without a center or with ``center_grad=False`` (a detached center:
    then nothing is written for it).
    """
    _check(v, tau, seeds, counter, noise, classes, block, center=center, grad_out=grad_out)
    grad_v = torch.empty_like(v)
    grad_center = torch.empty_like(center) if center is not None and center_grad else None
    if v.numel() == 0:
        return grad_v, grad_center
    items, per_item = _items(v, seeds)
    blocks_per_item = triton.cdiv(per_item, block)
    with _on(v.device):
        _sga_round_bwd_kernel[(items * blocks_per_item,)](
            grad_out, v, center, seeds, counter, noise, grad_v, grad_center, per_item,
            blocks_per_item, tau, a, r, n, METHOD=METHOD_IDS[method], CLASSES=classes,
            HAS_CENTER=center is not None, CENTER_GRAD=grad_center is not None,
            HAS_NOISE=noise is not None, BLOCK=block, num_warps=num_warps)
    return grad_v, grad_center
