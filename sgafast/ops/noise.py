"""The counter-based noise stream: a torch twin of Triton's Philox, bit for bit.

A Philox-4x32-10 call with key (s_lo, s_hi) (the item's seed ``s``) and counter
(c_lo, c_hi, k2, k3) is exactly what ``tl.philox(s, c_lo, c_hi, k2, k3)`` computes; its four
32-bit words become uniforms u in [0, 1 - 2^-24] through Triton's ``uint_to_uniform_float``. The
two upper counter words (k2, k3) are the caller's ``counter``, (0, 0) by default: the refinement
driver puts (iteration, latent) there, so one image seed gives every step its own stream with no
per-step seed derivation on the host. Element ``i`` is its index within its item (int64):

* two classes (:func:`logistic_noise`, and ``gumbel_noise(classes=2)``): element ``i`` takes
  word ``i % 4`` of the call with counter c = ``i // 4``, so one call serves four consecutive
  elements, and turns its uniform u into the standard logistic variate
  L = log(u / (1 - u)), u clamped below at 1e-10 (so L is in [-23.03, 16.64]). A softmax over
  two candidates only sees g_up - g_down, which for two independent Gumbels is standard
  logistic: L replaces that difference exactly in distribution, and the noise is given as
  (g_down, g_up) = (0, L).
* any other class count (:func:`uniform_stream`: three-class Gumbels, the uniforms of the
  ``noise`` baseline): element ``i`` takes the call with counter c = ``i`` (then the stream is
  ``tl.randint4x(s, i)``) and word ``k`` feeds class ``k``; ``gumbel_noise`` makes each uniform
  a Gumbel sample -log(-log(u)).

The stream depends only on (seed, counter, element index, class): never on block size, batch
position or device, so the fused kernels regenerate it in backward and every backend computes
the same function of the same noise (the kernels' own fp32 logs and quotients may differ from
torch's in the last bit).
"""

from __future__ import annotations

import torch

from ..errors import SgafastError

PHILOX_KEY_A = 0x9E3779B9
PHILOX_KEY_B = 0xBB67AE85
PHILOX_ROUND_A = 0xD2511F53
PHILOX_ROUND_B = 0xCD9E8D57
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF
UNIFORM_SCALE = 4.6566127342e-10  # triton.language.random.uint_to_uniform_float
UNIFORM_MIN = 1e-10  # tl.rand can return exactly 0: clamp before -log(-log(u))
MAX_SEED = 2**63 - 1


def _mul_hi_lo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of a * b for uint32 values held in int64 (no overflow)."""
    b_hi, b_lo = b >> 16, b & 0xFFFF
    partial = a * b_hi + ((a * b_lo) >> 16)  # < 2^49
    hi = partial >> 16
    lo = ((partial & 0xFFFF) << 16) | ((a * b_lo) & 0xFFFF)
    return hi, lo


def philox4x32(counter: torch.Tensor, seeds: torch.Tensor, upper=(0, 0)) -> list[torch.Tensor]:
    """Philox-4x32-10 of int64 counters (c0 = low, c1 = high word; (c2, c3) = ``upper``).

    ``seeds`` broadcasts against ``counter``; ``upper`` holds two ints or int64 tensors (their
    low 32 bits are used). Returns four uint32 words held in int64.
    """
    c0, c1 = counter & MASK32, (counter >> 32) & MASK32
    c2 = (upper[0] & MASK32) + torch.zeros_like(c0)
    c3 = (upper[1] & MASK32) + torch.zeros_like(c0)
    k0, k1 = seeds & MASK32, (seeds >> 32) & MASK32
    for _ in range(PHILOX_ROUNDS):
        hi_b, lo_b = _mul_hi_lo(c2, PHILOX_ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, PHILOX_ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + PHILOX_KEY_A) & MASK32
        k1 = (k1 + PHILOX_KEY_B) & MASK32
    return [c0, c1, c2, c3]


def uint_to_uniform(x: torch.Tensor) -> torch.Tensor:
    """Triton's uint32 -> float32 in [0, 1): reinterpret as int32, fold negatives with ~x."""
    folded = torch.where(x >= 2**31, MASK32 - x, x)
    return folded.to(torch.float32) * torch.tensor(UNIFORM_SCALE, dtype=torch.float32)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel samples -log(-log(u)), with u clamped away from 0."""
    return -torch.log(-torch.log(u.clamp_min(UNIFORM_MIN)))


def logistic_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard logistic samples log(u / (1 - u)), u clamped below at 1e-10 (u <= 1 - 2^-24
    already, so 1 - u is exact and positive): in fp32, as the kernels compute it."""
    u = u.clamp_min(UNIFORM_MIN)
    return torch.log(u / (1 - u))


def packed_words(index: torch.Tensor, seeds: torch.Tensor, upper=(0, 0)) -> torch.Tensor:
    """The Philox word of two-class element ``index`` (int64): word ``index % 4`` of the call
    with counter ``index // 4``. ``seeds`` broadcasts against ``index``. (This computes one call
    per element; :func:`logistic_noise` computes one per four.)"""
    words = torch.stack(philox4x32(index >> 2, seeds, upper), dim=-1)
    return words.gather(-1, (index & 3).unsqueeze(-1)).squeeze(-1)


def check_seeds(seed, items: int, device) -> torch.Tensor:
    """Seeds as an int64 tensor with one entry per item (an int means one item or all items).

    An int is range-checked; a tensor's values are not (that would cost a device sync per call).
    """
    if isinstance(seed, torch.Tensor):
        if seed.dtype.is_floating_point or seed.dtype.is_complex or seed.dtype == torch.bool:
            raise SgafastError(f"seed must be an integer tensor, got {seed.dtype}")
        seeds = seed.to(device=device, dtype=torch.int64).reshape(-1)
    else:
        if not 0 <= int(seed) <= MAX_SEED:
            raise SgafastError(f"seed must be in [0, 2^63), got {seed}")
        seeds = torch.tensor([int(seed)], dtype=torch.int64, device=device)
    if seeds.numel() not in (1, items):
        raise SgafastError(f"seed: give one int, or one seed per item along dim 0 "
                           f"({items} here), not {seeds.numel()}")
    return seeds


def check_counter(counter, device) -> torch.Tensor:
    """The two upper Philox counter words as an int64 tensor of shape (2,) on ``device``."""
    if counter is None:
        return torch.zeros(2, dtype=torch.int64, device=device)
    if not isinstance(counter, torch.Tensor):
        counter = torch.tensor([int(w) for w in counter], dtype=torch.int64)
    if counter.shape != (2,) or counter.dtype != torch.int64:
        raise SgafastError(f"counter: give two integer words (a pair or an int64 tensor of "
                           f"shape (2,)), got shape {tuple(counter.shape)}")
    return counter.to(device)


def _items(shape, seed, device):
    """(shape, seeds, items, elements per item) of a stream: per-item seeds split dim 0."""
    shape = tuple(shape)
    seeds = check_seeds(seed, shape[0] if shape else 1, device)
    per_item = 1
    for s in shape[1:] if seeds.numel() > 1 else shape:
        per_item *= s
    return shape, seeds, seeds.numel(), per_item


def uniform_stream(shape, *, seed, classes: int, counter=None, device=None) -> torch.Tensor:
    """Uniforms of shape ``shape + (classes,)``, keyed by (seed, counter, index in item, class):
    one Philox call per element, word k for class k.

    ``seed`` is an int, or a tensor of one seed per entry of dim 0 (an item, e.g. an image of a
    batch): element indices then restart at 0 in every item. ``counter``: the two upper counter
    words (default (0, 0)).
    """
    if not 1 <= classes <= 4:
        raise SgafastError(f"classes must be 1..4 for the Philox stream, got {classes}")
    shape, seeds, items, per_item = _items(shape, seed, device)
    index = torch.arange(per_item, dtype=torch.int64, device=device)
    upper = check_counter(counter, device)
    words = philox4x32(index, seeds[:, None], (upper[0], upper[1]))  # (items, per_item) each
    return torch.stack([uint_to_uniform(w) for w in words[:classes]], dim=-1).reshape(
        *shape, classes)


def logistic_noise(shape, *, seed, counter=None, device=None) -> torch.Tensor:
    """The two-class stream: one standard logistic variate per element, of shape ``shape``.

    Element i of an item: word i % 4 of the Philox call with counter i // 4, through
    :func:`logistic_from_uniform`. ``seed`` and ``counter`` as for :func:`uniform_stream`.
    """
    shape, seeds, items, per_item = _items(shape, seed, device)
    calls = torch.arange((per_item + 3) // 4, dtype=torch.int64, device=device)
    upper = check_counter(counter, device)
    words = philox4x32(calls, seeds[:, None], (upper[0], upper[1]))  # (items, calls) each
    # word k of call c is element 4 c + k
    words = torch.stack(words, dim=-1).reshape(items, 4 * calls.numel())[:, :per_item]
    return logistic_from_uniform(uint_to_uniform(words)).reshape(shape)


def gumbel_noise(shape, *, seed, classes: int = 2, counter=None, device=None) -> torch.Tensor:
    """The noise the kernels draw in-kernel, of shape ``shape + (classes,)``, as the reference's
    Gumbel noise g (the softmax of (f / tau + g) / tau).

    Two classes: ``[..., 0] = 0`` and ``[..., 1]`` = :func:`logistic_noise`, a standard
    logistic variate that stands for g_up - g_down (what a two-candidate softmax sees): exact in
    distribution for S, not two Gumbel samples. Other counts: independent Gumbel(0, 1) samples,
    one per class, from :func:`uniform_stream`.
    """
    if classes == 2:
        up = logistic_noise(shape, seed=seed, counter=counter, device=device)
        return torch.stack([torch.zeros_like(up), up], dim=-1)
    return gumbel_from_uniform(uniform_stream(shape, seed=seed, classes=classes, counter=counter,
                                              device=device))
