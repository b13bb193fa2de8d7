"""Gaussian-conditional maths of the fused kernels: normal tails, a bin's likelihood, its bits.

``element_bits`` is CompressAI's bounded -log2 likelihood of one element, with the gradients of
its LowerBound rule; the normal tails come from polynomials and an exp of our own, since the
interpreter has no libdevice (no erfc) and 1 + erf would lose every lower-tail probability
below ~1e-7. Error bounds in each docstring; docs/kernels.md has the measurements.
"""

import math

import triton
import triton.language as tl

from sgafast.kernels.fastmath import LOG2E, sign

_SQRT1_2 = tl.constexpr(math.sqrt(0.5))
_INV_SQRT_2PI = tl.constexpr(1 / math.sqrt(2 * math.pi))
_LN2_HI = tl.constexpr(0.693359375)  # 9 significant bits: n * _LN2_HI is exact for |n| < 2^15
_LN2_LO = tl.constexpr(math.log(2) - 0.693359375)
# exp(-u^2 / 2) and Phi(-u) are below 2.7e-38 from here on, where 0 is as good as their value
_GAUSS_ZERO = tl.constexpr(13.15)


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
    n = tl.floor(y * LOG2E + 0.5)  # in [-125, 0]: 2^n stays a normal float
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
def element_bits(residual, sigma, upstream, scale_bound, likelihood_bound):
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
                         -LOG2E / bounded, 0.0)
    d_scale = d_bounded * d_s
    d_sigma = tl.where((sigma >= scale_bound) | (upstream * d_scale < 0.0), d_scale, 0.0)
    # torch's abs backward: sign(0) = 0
    return bits, d_bounded * d_r * sign(residual), d_sigma
