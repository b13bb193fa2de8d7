"""The SGA/SGA+ soft rounding of one block in registers: log-weights, softmax, S and dS/dx.

docs/method.md §2 gives the formulas (mirrored from ``sgafast.ops.reference``); docs/kernels.md
the arithmetic: two classes use closed forms of the log-weight gap f(d_up) - f(d_down) in the
nearer candidate's distance m <= 1/2 (one log, one division); cosine uses one angle and short
polynomials. Gradients follow torch's rules for clamp and abs: zero at a clamp's bound (the
minimum-norm subgradient of torch >= 2.12), sign(0) = 0.
"""

import math

import torch
import triton
import triton.language as tl

from sgafast.kernels.fastmath import (LOG2E, div, exp, log, log1p_unit, round_half_even,
                                      sigmoid_pair, sign, sin_cos)
from sgafast.kernels.noise import gumbel3, logistic_gap
from sgafast.ops import reference

METHOD_IDS = {"atanh": 0, "linear": 1, "cosine": 2, "ssl": 3}

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
_PI = tl.constexpr(math.pi)
_HALF_PI = tl.constexpr(math.pi / 2)


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
        gap = 0.5 * log(div((1.0 + m) * mf, (1.0 - m) * (2.0 - mf)))
        slope = div(tl.where(far_moves, far_p + near_p, far_p), near_p * far_p)
    elif METHOD == _LINEAR:  # f = log(1 - d)
        gap = log(div(mf, 1.0 - m))
        slope = div(tl.where(far_moves, mf + (1.0 - m), mf), (1.0 - m) * mf)
    elif METHOD == _COSINE:  # f = log((1 - 1e-7) cos^2(pi d / 2) + 1e-7)
        # cos(pi far / 2) = sin(pi (1 - far) / 2): one angle, theta = pi m / 2 <= pi / 4
        sin, cos = sin_cos(m * _HALF_PI)
        sin_far = tl.where(m < _FAR_CLAMP, _SIN_FAR_CLAMP, sin)
        q_near = cos * cos * (1.0 - _COSINE_FLOOR) + _COSINE_FLOOR
        q_far = sin_far * sin_far * (1.0 - _COSINE_FLOOR) + _COSINE_FLOOR
        gap = log(div(q_far, q_near))
        # f'(d) = -(1 - 1e-7) pi sin cos / q(d), and sin cos is the same at m and 1 - m
        slope = div(sin * cos * ((1.0 - _COSINE_FLOOR) * _PI)
                    * tl.where(far_moves, q_far + q_near, q_far), q_near * q_far)
    else:  # SSL: f = -softplus(a logit(d)), d clamped to [EPS, 1 - EPS]
        # logit(1 - d) = -logit(d), so f(1 - d) - f(d) = softplus(a L) - softplus(-a L) = a L
        mc = tl.maximum(m, _EPS)
        logit = log(div(mc, 1.0 - mc))  # <= 0
        gap = a * logit
        # f'(d) = -a sigmoid(a logit(d)) / (d (1 - d)); the two sigmoids sum to 1 where both
        # distances move, and one of them is taken alone near a clamp bound
        t = exp(gap)
        p = div(t, 1.0 + t)  # sigmoid(a L), the nearer candidate's
        near_moves = m > _EPS
        share = tl.where(near_moves, tl.where(far_moves, 1.0, p), tl.where(far_moves, 1.0 - p, 0.0))
        slope = div(a * share, mc * (1.0 - mc))
    return gap, slope


@triton.jit
def _linear_weight(dist, sign, r, n):
    """Three-class linear: g / n = log(max(1 - r |d|, 1e-6)) and dg/dd = num / den."""
    q = 1.0 - r * dist
    qc = tl.maximum(q, _FLOOR3)
    return log(qc), tl.where(q > _FLOOR3, -n * r * sign, 0.0), qc


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
    s = a * log(div(u, 1.0 - u))
    if NEAR:
        e = exp(s)
        g = -log1p_unit(e)  # -softplus(s)
        inside = t > _FLOOR3
        sig = e  # sigmoid(s) (1 + e)
    else:
        e = exp(-tl.abs(s))
        log_sigma = -(tl.maximum(s, 0.0) + log1p_unit(e))  # -softplus(s)
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
        log_base = log(base)
        powered = exp(n * log_base)
        num = -n * (r * _HALF_PI) * sine * exp((n - 1.0) * log_base)
    else:
        positive = base > 0.0
        log_base = log(tl.where(positive, base, 1.0))  # no log(0) where base == 0
        powered = tl.where(positive, exp(n * log_base), 0.0)
        num = tl.where(positive, -n * (r * _HALF_PI) * sine * exp((n - 1.0) * log_base), 0.0)
    q = powered + _COSINE_FLOOR
    return log(q), num, q


@triton.jit
def _three_class_weights(c, a, r, n, METHOD: tl.constexpr):
    """g_k / scale, dg_k/dd = num_k / den_k at the distances d_k = c + 1, c, c - 1 of the
    candidates nearest - 1, nearest, nearest + 1 (c in [-1/2, 1/2]: the signs of d_0 and d_2
    are known, and |d_0| = 1 + c, |d_2| = 1 - c), and the scalar scale (n or 1)."""
    if METHOD == _LINEAR:
        g0, num0, den0 = _linear_weight(1.0 + c, 1.0, r, n)
        g1, num1, den1 = _linear_weight(tl.abs(c), sign(c), r, n)
        g2, num2, den2 = _linear_weight(1.0 - c, -1.0, r, n)
        scale = n
    elif METHOD == _COSINE:
        # one angle alpha = pi/2 r c (|alpha| <= pi/4) and beta = pi/2 r: the candidates'
        # angles are alpha + beta, alpha, alpha - beta, by the addition formulas
        low = r <= 0.5  # beta <= pi/4; else its complement pi/2 (1 - r) is
        sin_b, cos_b = sin_cos(tl.where(low, r, 1.0 - r) * _HALF_PI)
        sin_beta = tl.where(low, sin_b, cos_b)
        cos_beta = tl.where(low, cos_b, sin_b)
        sin_a, cos_a = sin_cos(r * c * _HALF_PI)
        g0, num0, den0 = _cosine_weight(cos_a * cos_beta - sin_a * sin_beta,
                                        sin_a * cos_beta + cos_a * sin_beta, n, r, False)
        g1, num1, den1 = _cosine_weight(cos_a, sin_a, n, r, True)
        g2, num2, den2 = _cosine_weight(cos_a * cos_beta + sin_a * sin_beta,
                                        sin_a * cos_beta - cos_a * sin_beta, n, r, False)
        scale = 1.0
    else:
        r15 = div(r, 1.5)
        g0, num0, den0 = _ssl_weight(1.0 + c, 1.0, a, r15, n, False)
        # sign(0) = 0 needs no case: c = 0 is inside the lower clamp, where the slope is 0
        g1, num1, den1 = _ssl_weight(tl.abs(c), tl.where(c > 0.0, 1.0, -1.0), a, r15, n, True)
        g2, num2, den2 = _ssl_weight(1.0 - c, -1.0, a, r15, n, False)
        scale = n
    return g0, num0, den0, g1, num1, den1, g2, num2, den2, scale


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
    w_up, w_down = sigmoid_pair((delta * inv_tau + gap) * (inv_tau * LOG2E))
    step = up - down
    return down, w_up * step, w_up * w_down * step * slope * (inv_tau * inv_tau)


@triton.jit
def _three_class(x, g0, g1, g2, inv_tau, a, r, n, METHOD: tl.constexpr):
    nearest = round_half_even(x)
    f0, num0, den0, f1, num1, den1, f2, num2, den2, scale = _three_class_weights(
        x - nearest, a, r, n, METHOD)
    # z_k = (f_k / tau + g_k) / tau, in units of log(2) for exp2
    f_scale = scale * inv_tau
    z_scale = inv_tau * LOG2E
    z0 = (f0 * f_scale + g0) * z_scale
    z1 = (f1 * f_scale + g1) * z_scale
    z2 = (f2 * f_scale + g2) * z_scale
    top = tl.maximum(tl.maximum(z0, z1), z2)
    e0 = tl.exp2(z0 - top)
    e1 = tl.exp2(z1 - top)
    e2 = tl.exp2(z2 - top)
    total = e0 + e1 + e2
    s = div(e2 - e0, total)  # S - nearest = w2 - w0: offsets -1, 0, +1
    # dS/dx = sum_k w_k (b_k - S) g'(d_k) / tau^2 with b - S = (-1, 0, 1) - (e2 - e0) / total:
    # total (b_k - S) = -(2 e2 + e1), e0 - e2, 2 e0 + e1 (no cancellation but e0 - e2, as in
    # S); g'(d_k) = num_k / den_k: one quotient
    den01 = den0 * den1
    ds = div(e2 * (2.0 * e0 + e1) * num2 * den01 - e0 * (2.0 * e2 + e1) * num0 * (den1 * den2)
             - e1 * (e2 - e0) * num1 * (den0 * den2), total * total * (den01 * den2))
    return nearest, s, ds * (inv_tau * inv_tau)


@triton.jit
def soft_round(x, seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask, tau_ptr,
               a, r, n, METHOD: tl.constexpr, CLASSES: tl.constexpr, HAS_NOISE: tl.constexpr,
               BLOCK: tl.constexpr):
    """(base, s, ds): S(x) = base + s, ds = dS/dx; tau is read from device memory."""
    inv_tau = div(1.0, tl.load(tau_ptr).to(tl.float32))
    a = tl.cast(a, tl.float32)  # scalars may arrive as fp64 (Inductor): fp32 math
    if CLASSES == 2:
        gap = logistic_gap(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask,
                           HAS_NOISE, BLOCK)
        base, s, ds = _two_class(x, gap, inv_tau, a, METHOD)
    else:
        g0, g1, g2 = gumbel3(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs,
                             mask, HAS_NOISE, BLOCK)
        base, s, ds = _three_class(x, g0, g1, g2, inv_tau, a, tl.cast(r, tl.float32),
                                   tl.cast(n, tl.float32), METHOD)
    return base, s, ds

