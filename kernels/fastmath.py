"""Elementwise fp32 maths of the fused kernels, from tl.* only (the interpreter has no libdevice).

Logs, exp, faithfully rounded division, sigmoid, sin/cos on a quarter turn, sign, round-half-even
and the rounding cast to a narrower dtype: each cheaper than libdevice's general routine, with
its error bound in its docstring (docs/kernels.md explains the choices).
"""

import math

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1 / math.log(2))
# fp32(ln 2) 2^-23, exact: the exponent's share of a log from its bits (see log)
_LN2_SCALED = tl.constexpr(torch.tensor(math.log(2), dtype=torch.float32).item() * 2.0**-23)


@triton.jit
def log(x):
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
def log1p_unit(t):
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
def exp(x):
    """exp(x) as tl.exp computes it (ex2.approx of x log2(e)), without its handling of
    subnormal results (flushed to 0 here): two instructions instead of about five."""
    return tl.exp2(x * LOG2E)


@triton.jit
def div(x, y):
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
def sigmoid_pair(z2):
    """(sigmoid(z), sigmoid(-z)) of z = z2 ln 2 from one exp(-|z|) = 2^-|z2|: no overflow, no
    1 - w cancellation."""
    t = tl.exp2(-tl.abs(z2))
    big = div(1.0, 1.0 + t)
    small = t * big
    positive = z2 >= 0.0
    return tl.where(positive, big, small), tl.where(positive, small, big)


@triton.jit
def sin_cos(theta):
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
def sign(x):
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, 0.0))


@triton.jit
def round_half_even(x):
    """torch.round: nearest integer, ties to even. Below 2^23 in magnitude, x +- 2^23 lands where
    the fp32 spacing is 1, so the addition itself rounds x to an integer, ties to even (exact
    for 0.49999997 too, unlike floor(x + 0.5)); from 2^23 on, x is an integer."""
    big = tl.where(x >= 0.0, 8388608.0, -8388608.0)
    return tl.where(tl.abs(x) < 8388608.0, (x + big) - big, x)


@triton.jit
def round_to(x, dtype: tl.constexpr):
    """fp32 x in the output dtype, rounded to nearest even like torch's casts.

    Triton's interpreter truncates fp32 -> bf16 (the GPU's cvt.rn rounds): rounding the bits
    first makes that cast exact, so CPU and GPU give the same bf16 output.
    """
    if dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)

