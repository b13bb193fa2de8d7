"""Fused SGA/SGA+ soft rounding S(v - c; tau) + c: one Triton kernel forward, one backward.

Each element is independent: the kernels read v (and the center), draw the noise in registers
from the counter-based stream of ``sgafast.noise`` (or read explicit noise, for tests), compute
the candidates, log-weights and softmax in fp32, and write one value. The backward kernel
regenerates the same noise and recomputes the weights from v, so nothing but v and the seeds is
saved. Only ``tl.*`` math is used (no libdevice), so the same kernels run under
``TRITON_INTERPRET=1`` on the CPU. Formulas: SPEC section 2, mirrored from ``sgafast.reference``.

Arithmetic (sm_90 SASS per element: README, benchmarks/results/sass/): two classes draw one
logistic variate per element, four elements per Philox call, and use closed forms of the
log-weight gap f(d_up) - f(d_down) in the nearer candidate's distance m <= 1/2 (one log, one
division); cosine uses one angle and short polynomials instead of tl.cos / tl.sin (whose
large-argument path cost a stack frame and ~100 registers); logs are a 15-instruction
polynomial (libdevice's logf is ~28 and handles inputs that never occur here); every quotient
is faithfully rounded (``_div``; on the GPU ``/`` is a 2-ulp approximation and tl.div_rn
brings a ~100-instruction slow path); the backward's three-class quotients share one
division.
"""

import math

import torch
import triton
import triton.language as tl

from sgafast import reference
from sgafast.errors import SgafastError
from sgafast.kernels.launch import check_input, check_like, check_schedule, on_device
from sgafast.noise import UNIFORM_MIN

METHOD_IDS = {"atanh": 0, "linear": 1, "cosine": 2, "ssl": 3}
# two classes draw the noise of four consecutive elements from one Philox call: a block holds
# whole groups of four
MIN_BLOCK = 4

_ATANH = tl.constexpr(METHOD_IDS["atanh"])
_LINEAR = tl.constexpr(METHOD_IDS["linear"])
_COSINE = tl.constexpr(METHOD_IDS["cosine"])
_EPS = tl.constexpr(reference.EPS)
# 1 - fp32(1 - EPS) = 84 * 2^-23, exactly: one minus the far distance's clamp bound, the
# complement of the farther candidate's clamped distance wherever the clamp is active
_FAR_GAP = 1.0 - torch.tensor(1.0 - reference.EPS, dtype=torch.float32).item()
_FAR_CLAMP = tl.constexpr(_FAR_GAP)
_SIN_FAR_CLAMP = tl.constexpr(math.sin(math.pi / 2 * _FAR_GAP))  # cos(pi/2 (1 - 84 * 2^-23))
_COSINE_FLOOR = tl.constexpr(reference.COSINE_FLOOR)
_FLOOR3 = tl.constexpr(reference.THREE_CLASS_FLOOR)
_LOG_FLOOR3 = tl.constexpr(math.log(reference.THREE_CLASS_FLOOR))
_UNIFORM_MIN = tl.constexpr(UNIFORM_MIN)
_PI = tl.constexpr(math.pi)
_LOG2E = tl.constexpr(1 / math.log(2))
# fp32(ln 2) 2^-23, exact: the exponent's share of a log from its bits (see _log)
_LN2_SCALED = tl.constexpr(torch.tensor(math.log(2), dtype=torch.float32).item() * 2.0**-23)
_HALF_PI = tl.constexpr(math.pi / 2)


# ----------------------------------------------------------------------------------------------
# Small helpers from tl.* math only (the interpreter has no libdevice)
# ----------------------------------------------------------------------------------------------


@triton.jit
def _log(x):
    """log(x) for positive, normal, finite fp32 x (every log here), within an ulp on the GPU.

    x = 2^e m with m in [2/3, 4/3) by integer arithmetic on the bits, then
    log(m) = f + f^2 P(f), f = m - 1, P of degree 7 (a minimax fit): 15 instructions instead
    of libdevice logf's ~28, which also handles 0, subnormals, inf and NaN. (The interpreter's
    fma is not fused: there it is within about two ulp.)
    """
    bits = x.to(tl.int32, bitcast=True)
    e_bits = (bits - 0x3F2AAAAB) & -8388608  # 2^23 e: the exponent that puts m in [2/3, 4/3)
    f = (bits - e_bits).to(tl.float32, bitcast=True) - 1.0
    p = tl.fma(f, 0.1402636021375656, -0.15388543903827667)
    p = tl.fma(p, f, 0.13995806872844696)
    p = tl.fma(p, f, -0.1641595959663391)
    p = tl.fma(p, f, 0.20011168718338013)
    p = tl.fma(p, f, -0.2500782012939453)
    p = tl.fma(p, f, 0.33333197236061096)
    p = tl.fma(p, f, -0.49999937415122986)
    # e ln 2 = (2^23 e) (2^-23 fp32(ln 2)): both factors and the product exact
    return tl.fma(e_bits.to(tl.float32), _LN2_SCALED, tl.fma(f * p, f, f))


@triton.jit
def _log1p_unit(t):
    """log(1 + t) for t in [0, 1], within about an ulp on the GPU: t + t^2 P(t), P of degree 9
    (a minimax fit); 11 instructions instead of an addition and a log."""
    p = tl.fma(t, 0.002072949195280671, -0.013631489127874374)
    p = tl.fma(p, t, 0.04198138043284416)
    p = tl.fma(p, t, -0.08307409286499023)
    p = tl.fma(p, t, 0.12467124313116074)
    p = tl.fma(p, t, -0.16129335761070251)
    p = tl.fma(p, t, 0.19897931814193726)
    p = tl.fma(p, t, -0.24988579750061035)
    p = tl.fma(p, t, 0.33332690596580505)
    p = tl.fma(p, t, -0.49999988079071045)
    return tl.fma(t * p, t, t)


@triton.jit
def _exp(x):
    """exp(x) as tl.exp computes it (ex2.approx of x log2(e)), without its handling of
    subnormal results (flushed to 0 here): two instructions instead of about five."""
    return tl.exp2(x * _LOG2E)


@triton.jit
def _div(x, y):
    """x / y for y > 0, normal and below 2^126 (every divisor here), faithfully rounded: the
    correctly rounded quotient but where it lies within ~1e-13 of a rounding boundary.

    1 / y from the hardware's approximate rsqrt squared (relative error < 3e-7), q = x / y to
    that accuracy, and one residual correction by fma, q + (x - q y) / y, whose error is the
    product of the two: five instructions. tl.div_rn is exact but costs ~12 instructions a
    call and a ~100-instruction slow-path subroutine per kernel; ``/`` (div.full.f32, 2 ulp)
    costs 8. (The interpreter's fma is not fused: there the result is within an ulp.)
    """
    r = tl.rsqrt(y)
    r = r * r
    q = x * r
    return tl.fma(tl.fma(-q, y, x), r, q)


@triton.jit
def _sigmoid_pair(z2):
    """(sigmoid(z), sigmoid(-z)) of z = z2 ln 2 from one exp(-|z|) = 2^-|z2|: no overflow, no
    1 - w cancellation."""
    t = tl.exp2(-tl.abs(z2))
    big = _div(1.0, 1.0 + t)
    small = t * big
    positive = z2 >= 0.0
    return tl.where(positive, big, small), tl.where(positive, small, big)


@triton.jit
def _sin_cos(theta):
    """(sin, cos) of |theta| <= pi/4 within about an ulp: Cephes' sinf/cosf polynomials.

    tl.sin / tl.cos carry a large-argument reduction (stack, 90-120 registers in backward)
    that these arguments never need.
    """
    t2 = theta * theta
    sin = theta + theta * t2 * (-1.6666654611e-1 + t2 * (8.3321608736e-3
                                                         + t2 * -1.9515295891e-4))
    cos = 1.0 - 0.5 * t2 + t2 * t2 * (4.166664568298827e-2 + t2 * (-1.388731625493765e-3
                                                                   + t2 * 2.443315711809948e-5))
    return sin, cos


@triton.jit
def _sign(x):
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, 0.0))


@triton.jit
def _round_half_even(x):
    """torch.round: nearest integer, ties to even. Below 2^23 in magnitude, x +- 2^23 lands where
    the fp32 spacing is 1, so the addition itself rounds x to an integer, ties to even (exact
    for 0.49999997 too, unlike floor(x + 0.5)); from 2^23 on, x is an integer."""
    big = tl.where(x >= 0.0, 8388608.0, -8388608.0)
    return tl.where(tl.abs(x) < 8388608.0, (x + big) - big, x)


# ----------------------------------------------------------------------------------------------
# Log-weights of SPEC 2 and their derivatives, with torch's gradient rules for clamp and abs:
# zero at a clamp's bound (the minimum-norm subgradient of torch >= 2.12; earlier versions gave
# 1 there, so the two differ only where a distance equals a clamp bound exactly), sign(0) = 0
# ----------------------------------------------------------------------------------------------


@triton.jit
def _two_class_gap(m, far_moves, a, METHOD: tl.constexpr):
    """(f(far) - f(m), slope) for the nearer candidate's distance m <= 1/2.

    The farther candidate is at 1 - m, clamped at 1 - EPS: 1 - far = max(m, 84 * 2^-23) in fp32
    (taken from m, exact, rather than from the rounded far distance). slope = -(f'(m) + f'(far)
    where ``far_moves``), the derivative of f(d_up) - f(d_down) in x: d_up and d_down move in
    opposite directions, so it is the same whichever candidate is nearer. An exact integer
    (m = 0, no far candidate) gets finite values, multiplied by a zero step.
    """
    mf = tl.maximum(m, _FAR_CLAMP)
    if METHOD == _ATANH:  # f = -atanh(d) = -log((1 + d) / (1 - d)) / 2
        near_p = (1.0 - m) * (1.0 + m)
        far_p = mf * (2.0 - mf)  # (1 - far) (1 + far)
        gap = 0.5 * _log(_div((1.0 + m) * mf, (1.0 - m) * (2.0 - mf)))
        slope = _div(tl.where(far_moves, far_p + near_p, far_p), near_p * far_p)
    elif METHOD == _LINEAR:  # f = log(1 - d)
        gap = _log(_div(mf, 1.0 - m))
        slope = _div(tl.where(far_moves, mf + (1.0 - m), mf), (1.0 - m) * mf)
    elif METHOD == _COSINE:  # f = log((1 - 1e-7) cos^2(pi d / 2) + 1e-7)
        # cos(pi far / 2) = sin(pi (1 - far) / 2): one angle, theta = pi m / 2 <= pi / 4
        sin, cos = _sin_cos(m * _HALF_PI)
        sin_far = tl.where(m < _FAR_CLAMP, _SIN_FAR_CLAMP, sin)
        q_near = cos * cos * (1.0 - _COSINE_FLOOR) + _COSINE_FLOOR
        q_far = sin_far * sin_far * (1.0 - _COSINE_FLOOR) + _COSINE_FLOOR
        gap = _log(_div(q_far, q_near))
        # f'(d) = -(1 - 1e-7) pi sin cos / q(d), and sin cos is the same at m and 1 - m
        slope = _div(sin * cos * ((1.0 - _COSINE_FLOOR) * _PI)
                     * tl.where(far_moves, q_far + q_near, q_far), q_near * q_far)
    else:  # SSL: f = -softplus(a logit(d)), d clamped to [EPS, 1 - EPS]
        # logit(1 - d) = -logit(d), so f(1 - d) - f(d) = softplus(a L) - softplus(-a L) = a L
        mc = tl.maximum(m, _EPS)
        logit = _log(_div(mc, 1.0 - mc))  # <= 0
        gap = a * logit
        # f'(d) = -a sigmoid(a logit(d)) / (d (1 - d)); the two sigmoids sum to 1 where both
        # distances move, and one of them is taken alone near a clamp bound
        t = _exp(gap)
        p = _div(t, 1.0 + t)  # sigmoid(a L), the nearer candidate's
        near_moves = m > _EPS
        share = tl.where(near_moves, tl.where(far_moves, 1.0, p), tl.where(far_moves, 1.0 - p, 0.0))
        slope = _div(a * share, mc * (1.0 - mc))
    return gap, slope


@triton.jit
def _linear_weight(dist, sign, r, n):
    """Three-class linear: g / n = log(max(1 - r |d|, 1e-6)) and dg/dd = num / den."""
    q = 1.0 - r * dist
    qc = tl.maximum(q, _FLOOR3)
    return _log(qc), tl.where(q > _FLOOR3, -n * r * sign, 0.0), qc


@triton.jit
def _ssl_weight(dist, sign, a, r15, n, NEAR: tl.constexpr):
    """Three-class SSL: g / n = log(max(sigmoid(-a logit(u)), 1e-6)), u = clamp(r |d| / 1.5,
    1e-6, 1 - 1e-6), and dg/dd = num / den (``r15`` = r / 1.5).

    ``NEAR``: |d| <= 1/2, so u <= 1/3: the upper clamp never binds, s = a logit(u) < 0, and
    log sigmoid(-s) >= -log 2 stays above the floor log(1e-6).
    """
    t = r15 * dist
    u = tl.maximum(t, _FLOOR3)
    if not NEAR:
        u = tl.minimum(u, 1.0 - _FLOOR3)
    s = a * _log(_div(u, 1.0 - u))
    if NEAR:
        e = _exp(s)
        g = -_log1p_unit(e)  # -softplus(s)
        inside = t > _FLOOR3
        sig = e  # sigmoid(s) (1 + e)
    else:
        e = _exp(-tl.abs(s))
        log_sigma = -(tl.maximum(s, 0.0) + _log1p_unit(e))  # -softplus(s)
        g = tl.maximum(log_sigma, _LOG_FLOOR3)
        # no clamp active, nor at its bound (the minimum-norm subgradient there is 0)
        inside = (log_sigma > _LOG_FLOOR3) & (t > _FLOOR3) & (t < 1.0 - _FLOOR3)
        sig = tl.where(s >= 0.0, 1.0, e)
    # d log sigmoid(-s) / du = -a sigmoid(s) / (u (1 - u)), sigmoid(s) = (1 or e) / (1 + e)
    num = tl.where(inside, -n * a * r15 * sign * sig, 0.0)
    return g, num, (1.0 + e) * u * (1.0 - u)


@triton.jit
def _cosine_weight(base, sine, n, r, NEAR: tl.constexpr):
    """Three-class cosine: g = log(max(base, 0)^n + 1e-7) and dg/dd = num / den, for
    base = cos(angle), sine = sin(angle), angle = pi/2 r d; zero slope where base <= 0
    (|r d| >= 1, clamped in the reference). base^(n - 1) = exp((n - 1) log base), not
    base^n / base: the denominators stay >= 1e-7 and their product cannot underflow.
    ``NEAR``: |d| <= 1/2, where base >= cos(pi/4)."""
    if NEAR:
        log_base = _log(base)
        powered = _exp(n * log_base)
        num = -n * (r * _HALF_PI) * sine * _exp((n - 1.0) * log_base)
    else:
        positive = base > 0.0
        log_base = _log(tl.where(positive, base, 1.0))  # no log(0) where base == 0
        powered = tl.where(positive, _exp(n * log_base), 0.0)
        num = tl.where(positive, -n * (r * _HALF_PI) * sine * _exp((n - 1.0) * log_base), 0.0)
    q = powered + _COSINE_FLOOR
    return _log(q), num, q


@triton.jit
def _three_class_weights(c, a, r, n, METHOD: tl.constexpr):
    """g_k / scale, dg_k/dd = num_k / den_k at the distances d_k = c + 1, c, c - 1 of the
    candidates nearest - 1, nearest, nearest + 1 (c in [-1/2, 1/2]: the signs of d_0 and d_2
    are known, and |d_0| = 1 + c, |d_2| = 1 - c), and the scalar scale (n or 1)."""
    if METHOD == _LINEAR:
        g0, num0, den0 = _linear_weight(1.0 + c, 1.0, r, n)
        g1, num1, den1 = _linear_weight(tl.abs(c), _sign(c), r, n)
        g2, num2, den2 = _linear_weight(1.0 - c, -1.0, r, n)
        scale = n
    elif METHOD == _COSINE:
        # one angle alpha = pi/2 r c (|alpha| <= pi/4) and beta = pi/2 r: the candidates'
        # angles are alpha + beta, alpha, alpha - beta, by the addition formulas
        low = r <= 0.5  # beta <= pi/4; else its complement pi/2 (1 - r) is
        sin_b, cos_b = _sin_cos(tl.where(low, r, 1.0 - r) * _HALF_PI)
        sin_beta = tl.where(low, sin_b, cos_b)
        cos_beta = tl.where(low, cos_b, sin_b)
        sin_a, cos_a = _sin_cos(r * c * _HALF_PI)
        g0, num0, den0 = _cosine_weight(cos_a * cos_beta - sin_a * sin_beta,
                                        sin_a * cos_beta + cos_a * sin_beta, n, r, False)
        g1, num1, den1 = _cosine_weight(cos_a, sin_a, n, r, True)
        g2, num2, den2 = _cosine_weight(cos_a * cos_beta + sin_a * sin_beta,
                                        sin_a * cos_beta - cos_a * sin_beta, n, r, False)
        scale = 1.0
    else:
        r15 = _div(r, 1.5)
        g0, num0, den0 = _ssl_weight(1.0 + c, 1.0, a, r15, n, False)
        # sign(0) = 0 needs no case: c = 0 is inside the lower clamp, where the slope is 0
        g1, num1, den1 = _ssl_weight(tl.abs(c), tl.where(c > 0.0, 1.0, -1.0), a, r15, n, True)
        g2, num2, den2 = _ssl_weight(1.0 - c, -1.0, a, r15, n, False)
        scale = n
    return g0, num0, den0, g1, num1, den1, g2, num2, den2, scale


# ----------------------------------------------------------------------------------------------
# Noise. Two classes: one logistic variate per element (the softmax of two sees only
# g_up - g_down), the four words of one Philox call for four consecutive elements. Three
# classes: Gumbel samples -log(E), E = -log(u) ~ Exp(1), u from one Philox call per element.
# ----------------------------------------------------------------------------------------------


@triton.jit
def _philox_words(seeds_ptr, counter_ptr, item, index):
    # counter = (the int64 index as two words, so items above 2^32 elements still get distinct
    # noise; then the caller's two counter words, e.g. iteration and latent), key = the item's
    # seed: sgafast.noise.philox4x32, bit for bit
    seed = tl.load(seeds_ptr + item)
    lo = index.to(tl.uint32)
    zero = lo * 0
    upper_a = zero + tl.load(counter_ptr).to(tl.uint32)  # low 32 bits, as the torch twin
    upper_b = zero + tl.load(counter_ptr + 1).to(tl.uint32)
    return tl.philox(seed, lo, (index >> 32).to(tl.uint32), upper_a, upper_b)


@triton.jit
def _uniform(bits):
    return tl.maximum(tl.uint_to_uniform_float(bits), _UNIFORM_MIN)  # tl.rand can return 0


@triton.jit
def _interleave4(a, b, c, d, BLOCK: tl.constexpr):
    """[a0, b0, c0, d0, a1, b1, ...]: four [BLOCK / 4] tensors as one [BLOCK], in registers."""
    return tl.reshape(tl.join(tl.join(a, c), tl.join(b, d)), [BLOCK])


@triton.jit
def _logistic_gap(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask,
                  HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    """g_up - g_down for two classes: from explicit Gumbel noise, or the logistic variate
    log(u / (1 - u)) of sgafast.noise (element i: Philox call i // 4 of the item, word i % 4)."""
    if HAS_NOISE:
        g_down = tl.load(noise_ptr + offs * 2, mask=mask, other=0.0).to(tl.float32)
        g_up = tl.load(noise_ptr + offs * 2 + 1, mask=mask, other=0.0).to(tl.float32)
        gap = g_up - g_down
    else:
        group = block_in_item * (BLOCK // 4) + tl.arange(0, BLOCK // 4)  # BLOCK >= 4
        w0, w1, w2, w3 = _philox_words(seeds_ptr, counter_ptr, item, group)
        u = _uniform(_interleave4(w0, w1, w2, w3, BLOCK))  # word k of call g: element 4 g + k
        gap = _log(_div(u, 1.0 - u))  # u <= 1 - 2^-24: 1 - u is exact and > 0
    return gap


@triton.jit
def _gumbel3_of(seeds_ptr, counter_ptr, item, index):
    b0, b1, b2, _ = _philox_words(seeds_ptr, counter_ptr, item, index)
    return -_log(-_log(_uniform(b0))), -_log(-_log(_uniform(b1))), -_log(-_log(_uniform(b2)))


@triton.jit
def _gumbel3(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask,
             HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    """Gumbel noise of the three candidates, in ascending order."""
    if HAS_NOISE:
        g0 = tl.load(noise_ptr + offs * 3, mask=mask, other=0.0).to(tl.float32)
        g1 = tl.load(noise_ptr + offs * 3 + 1, mask=mask, other=0.0).to(tl.float32)
        g2 = tl.load(noise_ptr + offs * 3 + 2, mask=mask, other=0.0).to(tl.float32)
    else:
        # one Philox call per element, drawn for every fourth element and its three
        # successors and interleaved: the noise comes in the loads' four-per-thread layout,
        # not through shared memory
        first = block_in_item * BLOCK + tl.arange(0, BLOCK // 4) * 4
        a0, a1, a2 = _gumbel3_of(seeds_ptr, counter_ptr, item, first)
        b0, b1, b2 = _gumbel3_of(seeds_ptr, counter_ptr, item, first + 1)
        c0, c1, c2 = _gumbel3_of(seeds_ptr, counter_ptr, item, first + 2)
        d0, d1, d2 = _gumbel3_of(seeds_ptr, counter_ptr, item, first + 3)
        g0 = _interleave4(a0, b0, c0, d0, BLOCK)
        g1 = _interleave4(a1, b1, c1, d1, BLOCK)
        g2 = _interleave4(a2, b2, c2, d2, BLOCK)
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
    near_down = frac <= rest
    # the nearer distance is exact (the only rounded ones, x + 1 and 1 - x for |x| < 1/2, are
    # the farther); the farther one's clamp at 1 - EPS, as the reference's
    lam, slope = _two_class_gap(tl.minimum(frac, rest), tl.maximum(frac, rest) < 1.0 - _EPS,
                                a, METHOD)
    delta = tl.where(near_down, lam, -lam)  # f(d_up) - f(d_down)
    # z_up - z_down of softmax((f / tau + g) / tau): a softmax of two is the sigmoid of it
    w_up, w_down = _sigmoid_pair((delta * inv_tau + gap) * (inv_tau * _LOG2E))
    step = up - down
    return down, w_up * step, w_up * w_down * step * slope * (inv_tau * inv_tau)


@triton.jit
def _three_class(x, g0, g1, g2, inv_tau, a, r, n, METHOD: tl.constexpr):
    nearest = _round_half_even(x)
    f0, num0, den0, f1, num1, den1, f2, num2, den2, scale = _three_class_weights(
        x - nearest, a, r, n, METHOD)
    # z_k = (f_k / tau + g_k) / tau, in units of log(2) for exp2
    f_scale = scale * inv_tau
    z_scale = inv_tau * _LOG2E
    z0 = (f0 * f_scale + g0) * z_scale
    z1 = (f1 * f_scale + g1) * z_scale
    z2 = (f2 * f_scale + g2) * z_scale
    top = tl.maximum(tl.maximum(z0, z1), z2)
    e0 = tl.exp2(z0 - top)
    e1 = tl.exp2(z1 - top)
    e2 = tl.exp2(z2 - top)
    total = e0 + e1 + e2
    s = _div(e2 - e0, total)  # S - nearest = w2 - w0: offsets -1, 0, +1
    # dS/dx = sum_k w_k (b_k - S) g'(d_k) / tau^2 with b - S = (-1, 0, 1) - (e2 - e0) / total:
    # total (b_k - S) = -(2 e2 + e1), e0 - e2, 2 e0 + e1 (no cancellation but e0 - e2, as in
    # S); g'(d_k) = num_k / den_k: one quotient
    den01 = den0 * den1
    ds = _div(e2 * (2.0 * e0 + e1) * num2 * den01 - e0 * (2.0 * e2 + e1) * num0 * (den1 * den2)
              - e1 * (e2 - e0) * num1 * (den0 * den2), total * total * (den01 * den2))
    return nearest, s, ds * (inv_tau * inv_tau)


@triton.jit
def _soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask, tau_ptr,
                a, r, n, METHOD: tl.constexpr, CLASSES: tl.constexpr, HAS_NOISE: tl.constexpr,
                BLOCK: tl.constexpr):
    """(base, s, ds): S(x) = base + s, ds = dS/dx; tau is read from device memory."""
    inv_tau = _div(1.0, tl.load(tau_ptr).to(tl.float32))
    a = tl.cast(a, tl.float32)  # scalars may arrive as fp64 (Inductor): fp32 math
    if CLASSES == 2:
        gap = _logistic_gap(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask,
                            HAS_NOISE, BLOCK)
        base, s, ds = _two_class(x, gap, inv_tau, a, METHOD)
    else:
        g0, g1, g2 = _gumbel3(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs,
                              mask, HAS_NOISE, BLOCK)
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
    """(item, block within item, flat offset, mask) of this program: one item per program."""
    # a 32-bit division: the grid has fewer than 2^31 programs, so blocks_per_item fits
    pid = tl.program_id(0)
    blocks = blocks_per_item.to(tl.int32)
    item32 = pid // blocks
    item = item32.to(tl.int64)
    block_in_item = (pid - item32 * blocks).to(tl.int64)  # int64 before any multiply: offsets
    local = block_in_item * BLOCK + tl.arange(0, BLOCK)  # pass 2^31
    return item, block_in_item, item * per_item + local, local < per_item


# blocks_per_item is not specialised (fewer compiled variants); per_item is: its divisibility
# by 16 is what lets the loads and stores vectorise
@triton.jit(do_not_specialize=["blocks_per_item"])
def _sga_round_fwd_kernel(v_ptr, center_ptr, seeds_ptr, counter_ptr, noise_ptr, out_ptr,
                          per_item, blocks_per_item, tau_ptr, a, r, n, METHOD: tl.constexpr,
                          CLASSES: tl.constexpr, HAS_CENTER: tl.constexpr,
                          HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    item, block_in_item, offs, mask = _block(per_item, blocks_per_item, BLOCK)
    x = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_CENTER:
        center = tl.load(center_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = x - center
    base, s, _ = _soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs,
                             mask, tau_ptr, a, r, n, METHOD, CLASSES, HAS_NOISE, BLOCK)
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
    item, block_in_item, offs, mask = _block(per_item, blocks_per_item, BLOCK)
    x = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_CENTER:
        x = x - tl.load(center_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    _, _, ds = _soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs,
                           mask, tau_ptr, a, r, n, METHOD, CLASSES, HAS_NOISE, BLOCK)
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



def launch_config(per_item: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK, num_warps), fixed rather than autotuned so that backward reuses forward's choice.

    GPU: 1024 elements per program, 4 per thread (one 16-byte fp32 vector), 8 warps. The
    kernels are arithmetic-heavy (sm_90 SASS per element: 111 for the two-class SSL forward,
    up to ~400 for three classes, whose noise alone is ~165: a Philox-10 call and six logs per
    element; benchmarks/results/sass/), so they want many warps in flight rather than wide
    vectors. Not yet measured on a GPU: benchmarks/gpu_suite.py sweeps the alternatives. CPU
    interpreter: its cost is per program and per op, not per element, so one block covers a
    whole item, up to 2^16 elements. The launchers raise a BLOCK below 4 to 4 (two classes
    draw four elements' noise per Philox call); results never depend on BLOCK.
    """
    if device.type == "cpu":
        return min(triton.next_power_of_2(max(per_item, 1)), 1 << 16), 1
    return 1024, 8



def _items(v: torch.Tensor, seeds: torch.Tensor | None) -> tuple[int, int]:
    """(items, elements per item): per-item seeds split v along dim 0, else v is one item."""
    items = 1 if seeds is None else seeds.numel()
    return items, v.numel() // items


def _check(v, tau, seeds, counter, noise, classes, block, **like_v):
    """Dtype, device, contiguity and shapes, up front (``like_v``: tensors shaped like v)."""
    check_schedule(v, tau, counter)
    check_input(v, block, kernels="rounding",
                fallback="use --backend torch (backend='torch' in Python)")
    check_like(v, **like_v)
    if (seeds is None) == (noise is None):
        raise SgafastError("give the kernels exactly one of seeds and noise")
    if noise is not None and (noise.shape != (*v.shape, classes) or noise.device != v.device
                              or not noise.is_contiguous()):
        raise SgafastError(f"noise: expected a contiguous tensor of shape "
                           f"{(*v.shape, classes)} on {v.device}, got {tuple(noise.shape)} on "
                           f"{noise.device}")
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
    block = max(block, MIN_BLOCK)  # results do not depend on it
    blocks_per_item = triton.cdiv(per_item, block)
    with on_device(v.device):
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
    block = max(block, MIN_BLOCK)  # results do not depend on it
    blocks_per_item = triton.cdiv(per_item, block)
    with on_device(v.device):
        _sga_round_bwd_kernel[(items * blocks_per_item,)](
            grad_out, v, center, seeds, counter, noise, grad_v, grad_center, per_item,
            blocks_per_item, tau, a, r, n, METHOD=METHOD_IDS[method], CLASSES=classes,
            HAS_CENTER=center is not None, CENTER_GRAD=grad_center is not None,
            HAS_NOISE=noise is not None, BLOCK=block, num_warps=num_warps)
    return grad_v, grad_center
