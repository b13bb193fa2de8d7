"""The counter-based noise stream (docs/method.md §9): its laws, its layout, its seeds."""

import math

import torch

from sgafast import gumbel_noise
from sgafast.ops.noise import (logistic_noise, packed_words, philox4x32, uint_to_uniform,
                               uniform_stream)


def test_gumbel_noise_is_standard_gumbel():
    """Three classes (and any count but two): independent Gumbel(0, 1) samples per class."""
    noise = gumbel_noise((200000,), seed=3, classes=3).double()
    for g in noise.unbind(-1):
        assert abs(g.mean().item() - 0.5772156649) < 0.01
        assert abs(g.var().item() - math.pi**2 / 6) < 0.03
        # CDF exp(-exp(-x)) at a few points
        for x in (-1.0, 0.0, 1.0, 2.5):
            assert abs((g <= x).double().mean().item() - math.exp(-math.exp(-x))) < 0.005


def test_two_class_noise_is_zero_and_standard_logistic():
    """Two classes: the stream gives (0, L) per element, L standard logistic, the law of
    g_up - g_down, which is all a two-candidate softmax sees: S has the distribution of two
    independent Gumbels, and the kernels draw one uniform per element instead of two."""
    noise = gumbel_noise((200000,), seed=3, classes=2).double()
    assert torch.equal(noise[:, 0], torch.zeros(200000, dtype=torch.float64))
    g = noise[:, 1]
    assert abs(g.mean().item()) < 0.02
    assert abs(g.var().item() - math.pi**2 / 3) < 0.06
    for x in (-3.0, -1.0, 0.0, 0.5, 2.0):  # CDF sigmoid(x)
        assert abs((g <= x).double().mean().item() - 1 / (1 + math.exp(-x))) < 0.005
    # the clamped uniform bounds it: u in [1e-10, 1 - 2^-24]
    assert g.min() >= math.log(1e-10) - 1e-4 and g.max() <= math.log(2**24 - 1) + 1e-4


def test_stream_layout_is_the_documented_one():
    """Bit for bit from philox4x32: two classes take word i % 4 of call i // 4; the uniforms of
    any other class count (the noise baseline's one) take word k of call i."""
    seeds, upper = torch.tensor([7, 2**40 + 1]), (3, 2**33 + 5)
    index = torch.arange(11)
    for item, seed in enumerate(seeds):
        words = torch.stack(philox4x32(index // 4, seed, upper), dim=-1)
        word = words.gather(-1, (index % 4)[:, None])[:, 0]
        assert torch.equal(packed_words(index, seed, upper), word)
        u = uint_to_uniform(word).clamp_min(1e-10)
        assert torch.equal(logistic_noise((2, 11), seed=seeds, counter=upper)[item],
                           torch.log(u / (1 - u)))
        own = torch.stack(philox4x32(index, seed, upper), dim=-1)
        for classes in (1, 3):
            assert torch.equal(uniform_stream((2, 11), seed=seeds, classes=classes,
                                              counter=upper)[item],
                               uint_to_uniform(own[:, :classes]))


def test_seeded_stream_reproducible_and_seed_dependent():
    a = gumbel_noise((4, 5, 6), seed=42, classes=3)
    assert torch.equal(a, gumbel_noise((4, 5, 6), seed=42, classes=3))
    b = gumbel_noise((4, 5, 6), seed=43, classes=3)
    assert (a != b).float().mean() > 0.99
    assert (a[..., 0] != a[..., 1]).float().mean() > 0.99  # classes are independent words


def test_per_item_seeds_equal_separate_calls():
    seeds = torch.tensor([7, 2**40 + 1, 123])
    batched = gumbel_noise((3, 4, 5), seed=seeds, classes=2)
    for i, s in enumerate(seeds.tolist()):
        assert torch.equal(batched[i], gumbel_noise((4, 5), seed=s, classes=2))
