"""In-kernel noise: the counter-based Philox stream of ``sgafast.ops.noise``, bit for bit.

Two classes: one logistic variate per element (the softmax of two sees only g_up - g_down), the
four words of one Philox call for four consecutive elements. Three classes: Gumbel samples
-log(E), E = -log(u) ~ Exp(1), u from one Philox call per element. Either may instead be read
from explicit noise (``HAS_NOISE``), the tests' exact comparison with the reference.
"""

import triton
import triton.language as tl

from sgafast.kernels.fastmath import div, log
from sgafast.ops.noise import UNIFORM_MIN

_UNIFORM_MIN = tl.constexpr(UNIFORM_MIN)


@triton.jit
def _philox_words(seeds_ptr, counter_ptr, item, index):
    # counter = (the int64 index as two words, so items above 2^32 elements still get distinct
    # noise; then the caller's two counter words, e.g. iteration and latent), key = the item's
    # seed: sgafast.ops.noise.philox4x32, bit for bit
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
def logistic_gap(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask,
                 HAS_NOISE: tl.constexpr, BLOCK: tl.constexpr):
    """g_up - g_down for two classes: from explicit Gumbel noise, or the logistic variate
    log(u / (1 - u)) of sgafast.ops.noise (element i: Philox call i // 4 of the item, word
    i % 4)."""
    if HAS_NOISE:
        g_down = tl.load(noise_ptr + offs * 2, mask=mask, other=0.0).to(tl.float32)
        g_up = tl.load(noise_ptr + offs * 2 + 1, mask=mask, other=0.0).to(tl.float32)
        gap = g_up - g_down
    else:
        group = block_in_item * (BLOCK // 4) + tl.arange(0, BLOCK // 4)  # BLOCK >= 4
        w0, w1, w2, w3 = _philox_words(seeds_ptr, counter_ptr, item, group)
        u = _uniform(_interleave4(w0, w1, w2, w3, BLOCK))  # word k of call g: element 4 g + k
        gap = log(div(u, 1.0 - u))  # u <= 1 - 2^-24: 1 - u is exact and > 0
    return gap


@triton.jit
def _gumbel3_of(seeds_ptr, counter_ptr, item, index):
    b0, b1, b2, _ = _philox_words(seeds_ptr, counter_ptr, item, index)
    return -log(-log(_uniform(b0))), -log(-log(_uniform(b1))), -log(-log(_uniform(b2)))


@triton.jit
def gumbel3(seeds_ptr, counter_ptr, noise_ptr, item, block_in_item, offs, mask,
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

