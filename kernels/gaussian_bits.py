"""Fused Gaussian-conditional rate of y: CompressAI's bounded -log2 likelihood, summed per image."""

import math

import torch
import triton
import triton.language as tl

from sgafast.kernels.launch import (check_grad_bits, check_input, check_like, on_device,
                                    per_image_grid)
from sgafast.kernels.sga_round import _round_to

_SQRT1_2 = tl.constexpr(math.sqrt(0.5))
_INV_SQRT_2PI = tl.constexpr(1 / math.sqrt(2 * math.pi))
_LOG2E = tl.constexpr(1 / math.log(2))
_LN2_HI = tl.constexpr(0.693359375)  # 9 significant bits: n * _LN2_HI is exact for |n| < 2^15
_LN2_LO = tl.constexpr(math.log(2) - 0.693359375)
# exp(-u^2 / 2) and Phi(-u) are below 2.7e-38 from here on, where 0 is as good as their value
_GAUSS_ZERO = tl.constexpr(13.15)


# ----------------------------------------------------------------------------------------------
# Normal tails from polynomials and an exp of our own: the interpreter has no libdevice (no
# erfc), and 1 + erf would lose every lower-tail probability below ~1e-7
# ----------------------------------------------------------------------------------------------


@triton.jit
def _exp_neg_half_square(u):
    """exp(-u^2 / 2) for u >= 0, within 0.8 eps relative (measured), and 0 from _GAUSS_ZERO on.

    Rounding u^2 / 2 first would cost up to 10 eps at the 1e-9 tail (u^2 / 2 = 20.7), tl.exp
    is numpy's on the CPU (up to 2.4 ulp), and on the GPU ex2.approx(x log2 e), whose rounded
    argument alone costs as much: so u = hi + lo with hi = floor(256 u) / 256, whose square is
    exact (12 significant bits); -hi^2 / 2 = n ln2 + rest by Cody and Waite's two-part ln2
    (n ln2_hi is exact); then exp(rest - lo (u + hi) / 2) by a polynomial (|argument| < 0.41,
    relative error 2.4e-10) and the scaling by 2^n is exact, through the exponent bits.
    """
    uc = tl.minimum(u, _GAUSS_ZERO)
    hi = tl.floor(uc * 256.0) * (1.0 / 256.0)
    lo = uc - hi
    y = -0.5 * hi * hi
    n = tl.floor(y * _LOG2E + 0.5)  # in [-125, 0]: 2^n stays a normal float
    r = (y - n * _LN2_HI) - (n * _LN2_LO + 0.5 * lo * (uc + hi))
    p = 0.00018868986808229238
    p = p * r + 0.001393569866195321
    p = p * r + 0.00833523366600275
    p = p * r + 0.04166645556688309
    p = p * r + 0.16666658222675323
    p = p * r + 0.5
    p = p * r + 1.0
    scale = ((n.to(tl.int32) + 127) << 23).to(tl.float32, bitcast=True)
    return tl.where(u < _GAUSS_ZERO, (1.0 + r * p) * scale, 0.0)


@triton.jit
def _normal_tails(u):
    """(Phi(u) - 1/2, Phi(-u), exp(-u^2 / 2)) for u >= 0, each within 2.3 eps relative.

    With x = u / sqrt 2: Phi(u) - 1/2 = erf(x) / 2 and Phi(-u) = erfc(x) / 2. Below x = 1/2,
    erf(x) = x + x P(x^2), P of degree 4 (least squares on Chebyshev nodes, the coefficients
    rounded to fp32 one at a time and the rest refitted: 1.5e-9 relative, against mpmath at
    20001 points), and erfc = 1 - erf >= 0.48 loses nothing. Above, erfc(x) =
    exp(-x^2) (1 + Q(w)) / (1 + 2 x), w = (x - 2) / (x + 2), the form of N. Juffa's erfcf:
    Q of degree 9, fitted the same way, is within 9.2e-9 of (1 + 2 x) exp(x^2) erfc(x) up to
    x = 10.05, and exp(-x^2) comes from u itself (x is rounded). With fp32 rounding, measured
    under the interpreter against scipy's float64 erf and erfc at 2^20 log-spaced u in
    [1.5e-6, 13.1] (Phi(-u) from 0.5 down to 1.7e-39): Phi(u) - 1/2 within 2.1 eps, Phi(-u)
    within 2.3 eps, exp(-u^2 / 2) within 0.8 eps (eps = 2^-23; torch's CPU erfc: 0.8 ulp).
    """
    x = u * _SQRT1_2
    xs = tl.minimum(x, 0.5)  # the polynomial is selected below 1/2 only: no overflow above
    z = xs * xs
    small = xs + xs * (0.12837916612625122 + z * (-0.37612611055374146 + z * (
        0.11282855272293091 + z * (-0.026758812367916107 + z * 0.004720761906355619))))
    xc = tl.minimum(x, _GAUSS_ZERO * _SQRT1_2)
    # |w (1 + Q)' / (1 + Q)| < 0.16: w's relative error barely reaches the tail, / suffices
    w = (xc - 2.0) / (xc + 2.0)
    q = -0.0002212460822192952
    q = q * w - 0.0012788116000592709
    q = q * w + 0.001144403824582696
    q = q * w + 0.008670683018863201
    q = q * w - 0.00800553523004055
    q = q * w - 0.054214637726545334
    q = q * w + 0.16404877603054047
    q = q * w - 0.16603045165538788
    q = q * w - 0.09276376664638519
    q = q * w + 0.27697837352752686
    gauss = _exp_neg_half_square(u)
    tail = gauss * tl.div_rn(1.0 + q, 1.0 + 2.0 * xc)  # on the GPU, / is 2 ulp
    below = x < 0.5
    return 0.5 * tl.where(below, small, 1.0 - tail), 0.5 * tl.where(below, 1.0 - small, tail), gauss


# ----------------------------------------------------------------------------------------------
# The likelihood L = Phi((1/2 - r) / s) - Phi((-1/2 - r) / s) and its derivatives in r and s
# ----------------------------------------------------------------------------------------------


@triton.jit
def _likelihood_wide(r, s, inv):
    """(L, dL/dr, dL/ds) from the normal tails at a = (r - 1/2) / s and b = (r + 1/2) / s.

    L = (Phi(-a) - 1/2) + (Phi(b) - 1/2) for r <= 1/2, a sum; Phi(-a) - Phi(-b) above, whose
    cancellation costs at most a factor 1.6 where this form is used (s <= 1 or r > s^2: there
    Phi(-b) / Phi(-a) <= 1/e); ``_likelihood_narrow`` takes the rest. a and b are correctly
    rounded quotients: their error, times b^2, is that of the Gaussians in the derivatives,
    the whole gradient where the likelihood bound is active (torch rounds twice there).
    """
    a = tl.div_rn(r - 0.5, s)
    b = tl.div_rn(r + 0.5, s)
    half_a, tail_a, gauss_a = _normal_tails(tl.abs(a))
    half_b, tail_b, gauss_b = _normal_tails(b)
    likelihood = tl.where(a <= 0.0, half_a + half_b, tail_a - tail_b)
    # the Gaussian densities phi(-a) = gauss_a / sqrt(2 pi), phi(-b) = gauss_b / sqrt(2 pi);
    # a and b are clamped where their Gaussian is 0 anyway, so that inf * 0 never happens
    d_r = (gauss_b - gauss_a) * (inv * _INV_SQRT_2PI)
    d_s = (tl.minimum(a, 16.0) * gauss_a - tl.minimum(b, 16.0) * gauss_b) * (inv * _INV_SQRT_2PI)
    return likelihood, d_r, d_s


@triton.jit
def _likelihood_narrow(r, s, inv, TERMS: tl.constexpr):
    """(L, dL/dr, dL/ds) as phi(m) times the integral of exp(m u - u^2 / 2) over |u| <= h.

    m = r / s, h = 1 / (2 s). For s > 1 and r <= s^2 (h < 1/2, m h <= 1/2) the two Phi values
    are close: their difference would lose a factor of up to ~min(s, s^2 / r) in relative
    accuracy. The integral is summed instead: 2 h sum_k He_2k(m) h^2k / (2k + 1)!, all from
    one recurrence for
    T_n = He_n(m) h^n / n!: T_n+1 = (m h T_n - h^2 T_n-1) / (n + 1). Twelve terms leave a
    relative truncation error below 1e-11 in L and 2e-10 in its derivatives there (against 60
    terms in float64). Clamped elsewhere so as to stay finite: the caller selects this only
    where it applies.
    """
    m = tl.minimum(tl.div_rn(r, s), 16.0)  # exp(-16^2 / 2) = 0 in fp32
    h = tl.minimum(0.5 * inv, 0.5)
    mh = m * h
    hh = h * h
    t_prev = tl.full(r.shape, 1.0, tl.float32)
    t_cur = mh
    s0 = t_prev  # sum T_2k / (2k + 1): the integral over 2 h
    s1 = t_cur / 3.0  # sum T_2k+1 / (2k + 3): d(integral)/dm over 2 h^2
    s2 = t_prev  # sum T_2k: d(integral)/dh over 2
    for n in tl.static_range(1, TERMS - 1):
        t_next = (mh * t_cur - hh * t_prev) / (n + 1)
        if (n + 1) % 2 == 0:
            s0 += t_next / (n + 2)
            s2 += t_next
        else:
            s1 += t_next / (n + 3)
        t_prev = t_cur
        t_cur = t_next
    likelihood = _exp_neg_half_square(m) * (inv * _INV_SQRT_2PI) * s0
    dlog_dm = h * s1 / s0 - m  # d log L / dm
    d_r = likelihood * inv * dlog_dm
    d_s = -likelihood * inv * (m * dlog_dm + s2 / s0)  # dm/ds = -m/s, dh/ds = -h/s
    return likelihood, d_r, d_s


@triton.jit
def _gaussian_bits(residual, sigma, upstream, scale_bound, likelihood_bound):
    """(bits, d bits/d residual, d bits/d sigma) of one element, fp32, as CompressAI computes
    -log2(LowerBound(L(|residual|, LowerBound(sigma, scale_bound)), likelihood_bound)).

    The derivatives follow CompressAI's LowerBound rule for an upstream gradient of the sign of
    ``upstream`` (the gradient of the bits): below a bound, a gradient passes only where it
    pushes the bounded value up (the rule depends on that sign, not on its size).
    """
    scale_bound = tl.cast(scale_bound, tl.float32)  # scalars may arrive as fp64: fp32 math
    likelihood_bound = tl.cast(likelihood_bound, tl.float32)
    r = tl.abs(residual)
    s = tl.maximum(sigma, scale_bound)
    inv = 1.0 / s
    wide, wide_r, wide_s = _likelihood_wide(r, s, inv)
    narrow, narrow_r, narrow_s = _likelihood_narrow(r, s, inv, 12)
    use_narrow = (r > 0.5) & (s > 1.0) & (r * inv * inv <= 1.0)
    likelihood = tl.where(use_narrow, narrow, wide)
    d_r = tl.where(use_narrow, narrow_r, wide_r)
    d_s = tl.where(use_narrow, narrow_s, wide_s)
    bounded = tl.maximum(likelihood, likelihood_bound)
    bits = -tl.log2(bounded)
    # d bits / d bounded = -1 / (bounded ln 2) < 0: it pushes L up exactly when upstream > 0
    d_bounded = tl.where((likelihood >= likelihood_bound) | (upstream > 0.0),
                        -_LOG2E / bounded, 0.0)
    d_scale = d_bounded * d_s
    d_sigma = tl.where((sigma >= scale_bound) | (upstream * d_scale < 0.0), d_scale, 0.0)
    # torch's abs backward: sign(0) = 0
    sign = tl.where(residual > 0.0, 1.0, tl.where(residual < 0.0, -1.0, 0.0))
    return bits, d_bounded * d_r * sign, d_sigma


# ----------------------------------------------------------------------------------------------
# Kernels: one element per lane, one image per range of programs (as kernels.sga_round)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _block(per_item, blocks_per_item, BLOCK: tl.constexpr):
    """(image, flat offset, mask) of this program's elements: one image per program range."""
    pid = tl.program_id(0).to(tl.int64)  # int64 before any multiply: offsets pass 2^31
    item = pid // blocks_per_item
    local = (pid - item * blocks_per_item) * BLOCK + tl.arange(0, BLOCK)
    return item, item * per_item + local, local < per_item


@triton.jit
def _load_inputs(v_ptr, scales_ptr, means_ptr, offs, mask, HAS_MEANS: tl.constexpr):
    """(v - mu, sigma) in fp32; padding lanes get (0, 1), a finite element."""
    residual = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_MEANS:
        residual = residual - tl.load(means_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sigma = tl.load(scales_ptr + offs, mask=mask, other=1.0).to(tl.float32)
    return residual, sigma


@triton.jit(do_not_specialize=["blocks_per_item"])
def _gaussian_bits_fwd_kernel(v_ptr, scales_ptr, means_ptr, partial_ptr, per_item,
                              blocks_per_item, scale_bound, likelihood_bound,
                              HAS_MEANS: tl.constexpr, BLOCK: tl.constexpr):
    _, offs, mask = _block(per_item, blocks_per_item, BLOCK)
    residual, sigma = _load_inputs(v_ptr, scales_ptr, means_ptr, offs, mask, HAS_MEANS)
    bits, _, _ = _gaussian_bits(residual, sigma, 1.0, scale_bound, likelihood_bound)
    # one partial sum per program, summed by torch: deterministic, unlike atomics
    tl.store(partial_ptr + tl.program_id(0), tl.sum(tl.where(mask, bits, 0.0), axis=0))


@triton.jit(do_not_specialize=["blocks_per_item"])
def _gaussian_bits_bwd_kernel(grad_bits_ptr, v_ptr, scales_ptr, means_ptr, grad_v_ptr,
                              grad_scales_ptr, grad_means_ptr, per_item, blocks_per_item,
                              scale_bound, likelihood_bound, HAS_MEANS: tl.constexpr,
                              MEANS_GRAD: tl.constexpr, BLOCK: tl.constexpr):
    item, offs, mask = _block(per_item, blocks_per_item, BLOCK)
    # one value per image, as a block: Triton's interpreter cannot `|` a scalar mask with a block
    upstream = tl.broadcast_to(tl.load(grad_bits_ptr + item), (BLOCK,))
    residual, sigma = _load_inputs(v_ptr, scales_ptr, means_ptr, offs, mask, HAS_MEANS)
    _, d_residual, d_sigma = _gaussian_bits(residual, sigma, upstream, scale_bound,
                                            likelihood_bound)
    grad_v = upstream * d_residual
    tl.store(grad_v_ptr + offs, _round_to(grad_v, grad_v_ptr.dtype.element_ty), mask=mask)
    tl.store(grad_scales_ptr + offs,
             _round_to(upstream * d_sigma, grad_scales_ptr.dtype.element_ty), mask=mask)
    if MEANS_GRAD:
        tl.store(grad_means_ptr + offs, _round_to(-grad_v, grad_means_ptr.dtype.element_ty),
                 mask=mask)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _check(v, block, grad_bits=None, **like_v):
    """Dtype, device, contiguity and shapes, up front (``like_v``: tensors shaped like v)."""
    check_input(v, block, kernels="rate", batched=True,
                fallback="use codec.bits_per_image(codec.y_likelihood(...))")
    check_like(v, **like_v)
    check_grad_bits(v, grad_bits)


def gaussian_bits_forward(v: torch.Tensor, scales: torch.Tensor,
                          means: torch.Tensor | None = None, *, scale_bound: float,
                          likelihood_bound: float, block: int, num_warps: int) -> torch.Tensor:
    """Bits of each image (entry of dim 0), float32 (B,): reads v, scales (and means) once."""
    _check(v, block, scales=scales, means=means)
    items, per_item, blocks_per_item = per_image_grid(v, block)
    if items * per_item == 0:
        return torch.zeros(items, dtype=torch.float32, device=v.device)
    partial = torch.empty(items * blocks_per_item, dtype=torch.float32, device=v.device)
    with on_device(v.device):
        _gaussian_bits_fwd_kernel[(items * blocks_per_item,)](
            v, scales, means, partial, per_item, blocks_per_item, scale_bound,
            likelihood_bound, HAS_MEANS=means is not None, BLOCK=block, num_warps=num_warps)
    return partial.view(items, blocks_per_item).sum(1)


def gaussian_bits_backward(grad_bits: torch.Tensor, v: torch.Tensor, scales: torch.Tensor,
                           means: torch.Tensor | None = None, *, means_grad: bool = True,
                           scale_bound: float, likelihood_bound: float, block: int,
                           num_warps: int):
    """(grad_v, grad_scales, grad_means) in one launch, in v's dtype, for the per-image
    upstream ``grad_bits``; grad_means is None without means or with ``means_grad=False``."""
    _check(v, block, grad_bits=grad_bits, scales=scales, means=means)
    grad_v, grad_scales = torch.empty_like(v), torch.empty_like(v)
    grad_means = torch.empty_like(v) if means is not None and means_grad else None
    items, per_item, blocks_per_item = per_image_grid(v, block)
    if items * per_item == 0:
        return grad_v, grad_scales, grad_means
    with on_device(v.device):
        _gaussian_bits_bwd_kernel[(items * blocks_per_item,)](
            grad_bits, v, scales, means, grad_v, grad_scales, grad_means, per_item,
            blocks_per_item, scale_bound, likelihood_bound, HAS_MEANS=means is not None,
            MEANS_GRAD=grad_means is not None, BLOCK=block, num_warps=num_warps)
    return grad_v, grad_scales, grad_means
