"""The counter-based noise stream: a torch twin of Triton's Philox, bit for bit.

Element ``i`` of an item with seed ``s`` gets one Philox-4x32-10 call with key (s_lo, s_hi) and
counter (i_lo, i_hi, k2, k3), exactly what ``tl.philox(s, i_lo, i_hi, k2, k3)`` computes; its
four words become four uniforms through ``uint_to_uniform_float`` and word ``k`` feeds class
``k``. The two upper counter words (k2, k3) are the caller's ``counter``, (0, 0) by default (then
the stream is ``tl.randint4x(s, i)``): the refinement driver puts (iteration, latent) there, so
one image seed gives every step its own stream with no per-step seed derivation on the host.
The stream depends only on (seed, counter, element index, class): never on block size, batch
position or device, so the fused kernels regenerate it in backward and every backend computes
the same function of the same noise.
"""

from __future__ import annotations

import torch

from .errors import SgafastError

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


def uniform_stream(shape, *, seed, classes: int, counter=None, device=None) -> torch.Tensor:
    """Uniforms of shape ``shape + (classes,)``, keyed by (seed, counter, index in item, class).

    ``seed`` is an int, or a tensor of one seed per entry of dim 0 (an item, e.g. an image of a
    batch): element indices then restart at 0 in every item. ``counter``: the two upper counter
    words (default (0, 0)).
    """
    if not 1 <= classes <= 4:
        raise SgafastError(f"classes must be 1..4 for the Philox stream, got {classes}")
    shape = tuple(shape)
    items = shape[0] if shape else 1
    seeds = check_seeds(seed, items, device)
    per_item = 1
    for s in shape[1:] if seeds.numel() > 1 else shape:
        per_item *= s
    total = 1
    for s in shape:
        total *= s
    index = torch.arange(total, dtype=torch.int64, device=device)
    item = index // per_item
    upper = check_counter(counter, device)
    words = philox4x32(index - item * per_item, seeds[item] if seeds.numel() > 1 else seeds,
                       (upper[0], upper[1]))
    return torch.stack([uint_to_uniform(w) for w in words[:classes]], dim=-1).reshape(
        *shape, classes)


def gumbel_noise(shape, *, seed, classes: int = 2, counter=None, device=None) -> torch.Tensor:
    """Gumbel(0, 1) noise of shape ``shape + (classes,)``: the stream the kernels draw in-kernel."""
    return gumbel_from_uniform(uniform_stream(shape, seed=seed, classes=classes, counter=counter,
                                              device=device))
