"""The refinement driver (docs/method.md §3-6) on the bundled model and real Kodak crops."""

import math

import pytest
import torch
from compressai.models import ScaleHyperprior

import sgafast
from sgafast import bitstream, codec
from sgafast.errors import SgafastError
from sgafast.images import Canvas
from sgafast.models import BaseModel
from sgafast.ops.schedule import Schedule
from sgafast.refine import STOP_POINTS, RefineConfig, refine_batch
from conftest import EQUALITY_LR

FAST = dict(iters=120, tau_rate=2e-2, track_every=40)  # tau anneals within the short run


def _crop(kodak_crops, h=48, w=56):
    return kodak_crops[:, :, :h, :w]  # not a multiple of 64: exercises padding and masking


def test_refinement_lowers_true_rd_loss(default_model, kodak_crops):
    x = _crop(kodak_crops)[:1]
    (res,) = refine_batch(default_model, x, ["a"], RefineConfig.for_method("ssl", **FAST))
    lmbda, family, canvas = default_model.lmbda, default_model.family, Canvas.of(x)
    with torch.no_grad():
        base, _ = codec.hard_rd(family, canvas, res.base, lmbda)
        refined, _ = codec.hard_rd(family, canvas, res.latents, lmbda)
    assert refined.item() < 0.97 * base.item()
    assert len(res.relaxed_loss) == FAST["iters"]
    assert [t for t, _ in res.true_loss] == [0, 40, 80, 120]
    assert res.true_loss[-1][1] == pytest.approx(refined.item(), rel=1e-5)


def test_batch_equals_per_image(default_model, kodak_crops):
    x = _crop(kodak_crops)
    cfg = RefineConfig.for_method("linear", iters=15, track_every=0, lr=EQUALITY_LR)
    batched = refine_batch(default_model, x, ["first", "second"], cfg)
    for i, name in enumerate(["first", "second"]):
        (alone,) = refine_batch(default_model, x[i:i + 1], [name], cfg)
        torch.testing.assert_close(batched[i].latents, alone.latents, rtol=1e-4, atol=1e-4)
    # the noise follows the identity, not the batch position
    swapped = refine_batch(default_model, x.flip(0), ["second", "first"], cfg)
    torch.testing.assert_close(swapped[1].latents, batched[0].latents, rtol=1e-4, atol=1e-4)


def test_distortion_ignores_the_padding(default_model, kodak_crops):
    x = _crop(kodak_crops)[:1]
    canvas, family = Canvas.of(x), default_model.family
    with torch.no_grad():
        latents = family.analyse(canvas.x)
        _, terms = codec.hard_rd(family, canvas, latents, 0.01)
        x_hat = default_model.net.g_s(family.hard(latents)[0])
        top, left = (64 - 48) // 2, (64 - 56) // 2
        expected = ((x_hat[..., top:top + 48, left:left + 56] - x) ** 2).mean()
    torch.testing.assert_close(terms["mse"][0], expected)


def test_lambda_override_moves_along_the_rd_curve(default_model, kodak_crops):
    x = _crop(kodak_crops)[:1]
    low, high = (refine_batch(default_model, x, ["a"], RefineConfig(lmbda=lm, **FAST))[0]
                 for lm in (0.002, 0.05))
    bits = {}
    for name, res in (("low", low), ("high", high)):
        data = bitstream.encode(default_model, res.latents, res.geometry)
        bits[name] = len(data)
    assert bits["high"] > bits["low"]


def test_bitstream_round_trip_is_exact(default_model, kodak_crops):
    x = _crop(kodak_crops)[:1]
    (res,) = refine_batch(default_model, x, ["a"], RefineConfig(iters=10, track_every=0))
    data = bitstream.encode(default_model, res.latents, res.geometry)
    decoded = bitstream.decode(default_model, data)
    with torch.no_grad():
        y_hat, _ = default_model.family.hard(res.latents)
        expected = res.geometry.unpad(default_model.net.g_s(y_hat).clamp(0, 1))
    assert torch.equal(decoded, expected)


def test_base_bitstream_is_compressai_compress(default_model, kodak_crops):
    """The encoder-side twin on the encoder's own latents writes what model.compress writes."""
    x = _crop(kodak_crops)[:1]
    (res,) = refine_batch(default_model, x, ["a"], RefineConfig.for_method("none"))
    data = bitstream.encode(default_model, res.base, res.geometry)
    header, z_string, y_string = bitstream.parse(data)
    with torch.no_grad():
        ref = default_model.net.compress(res.geometry.pad(x))
    assert (y_string, z_string) == (ref["strings"][0][0], ref["strings"][1][0])


def test_scale_hyperprior_of_any_size_is_refined():
    torch.manual_seed(0)
    net = ScaleHyperprior(16, 24).eval()
    net.update(force=True)
    x = torch.rand(1, 3, 64, 64)
    (res,) = sgafast.refine(net, x, lmbda=0.01, iters=5, track_every=0, method="atanh")
    model = BaseModel(net, "scale", "bmshj2018-hyperprior", 0.01)
    decoded = bitstream.decode(model, bitstream.encode(model, res.latents, res.geometry))
    with torch.no_grad():
        y_hat, _ = model.family.hard(res.latents)
        assert torch.equal(decoded, net.g_s(y_hat).clamp(0, 1))


def test_unsupported_models_are_refused():
    with pytest.raises(SgafastError, match="not a supported model.*mbt2018"):
        sgafast.refine(torch.nn.Conv2d(3, 3, 1), torch.rand(1, 3, 64, 64), lmbda=0.01)


@pytest.mark.parametrize("method", ["ste", "noise", "danneal", "atanh", "cosine"])
def test_every_method_runs(default_model, kodak_crops, method):
    x = _crop(kodak_crops)[:1]
    (res,) = refine_batch(default_model, x, ["a"], RefineConfig.for_method(method, iters=3,
                                                                         track_every=0))
    assert torch.isfinite(res.latents[0]).all() and len(res.relaxed_loss) == 3


@pytest.mark.parametrize("kwargs", [dict(iters=-1), dict(lr=0.0), dict(method="bogus"),
                                    dict(lmbda=-0.1), dict(tau_max=0.0)])
def test_bad_config_is_refused(kwargs):
    with pytest.raises(SgafastError):
        RefineConfig.for_method(**kwargs)


def test_budget_schedule_generalises_the_paper(default_model, kodak_crops):
    """A budget schedule whose tau ends where the paper's does after ``iters`` (exponential
    decay, constant learning rate) follows the paper's trajectory: tau and lr reach the step."""
    x, iters, rate = _crop(kodak_crops)[:1], 30, 2e-2
    paper = RefineConfig.for_method("ssl", iters=iters, tau_rate=rate, track_every=0)
    same = paper.with_options(schedule=Schedule(kind="budget", tau_end=math.exp(-rate * iters)))
    slower = same.with_options(schedule=Schedule(kind="budget", tau_end=math.exp(-rate * iters),
                                                 warmup=0.5))
    (a,), (b,), (c,) = (refine_batch(default_model, x, ["a"], cfg) for cfg in (paper, same,
                                                                              slower))
    torch.testing.assert_close(b.latents, a.latents, rtol=1e-4, atol=1e-4)
    assert (c.latents[0] - a.latents[0]).abs().max() > 1e-3  # the warm-up reached Adam


def test_stop_below_keeps_an_image_where_it_stopped(default_model, kodak_crops):
    x = _crop(kodak_crops)[:1]
    cfg = RefineConfig.for_method("ssl", iters=60, tau_rate=2e-2, track_every=10)
    # every improvement is below 100 %: the image stops as soon as it can be judged
    (stopped,) = refine_batch(default_model, x, ["a"], cfg.with_options(stop_below=1.0))
    judged = STOP_POINTS * 10
    (short,) = refine_batch(default_model, x, ["a"], cfg.with_options(iters=judged))
    assert stopped.stopped_at == judged and short.stopped_at is None
    torch.testing.assert_close(stopped.latents, short.latents, rtol=0, atol=0)
    assert len(stopped.relaxed_loss) == judged
    assert [t for t, _ in stopped.true_loss] == [t for t, _ in short.true_loss]
    (never,) = refine_batch(default_model, x, ["a"], cfg.with_options(stop_below=-0.0))
    assert never.stopped_at is None and len(never.relaxed_loss) == 60


def test_stop_below_needs_tracking():
    with pytest.raises(SgafastError, match="stop_below needs true-loss tracking"):
        RefineConfig(stop_below=0.01, track_every=0)
