"""The host-free refinement step: tensor tau and counter words, no host sync, compiled = eager."""

import math

import pytest
import torch

from helpers import DEVICE
from sgafast import gumbel_noise, sga_round
from sgafast.ops.schedule import TAU_MIN, temperature
from sgafast.refine import RefineConfig, Refinement, refine_batch


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_tau_as_a_tensor_equals_tau_as_a_float(backend):
    v = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0)).to(DEVICE) * 3
    as_float = sga_round(v, 0.37, seed=5, backend=backend)
    as_tensor = sga_round(v, torch.tensor(0.37, device=DEVICE), seed=5, backend=backend)
    assert torch.equal(as_float, as_tensor)


@pytest.mark.parametrize("classes", [2, 3])
def test_counter_words_select_the_stream_in_kernel_and_twin(classes):
    """The kernel's in-kernel noise with counter words is the twin's gumbel_noise(counter)."""
    v = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1)).to(DEVICE) * 3
    seeds = torch.tensor([11, 12], device=DEVICE)
    method = dict(method="linear", classes=classes)
    fused = sga_round(v, 0.5, seed=seeds, counter=(7, 1), backend="triton", **method)
    noise = gumbel_noise(v.shape, seed=seeds, classes=classes, counter=(7, 1), device=DEVICE)
    twin = sga_round(v, 0.5, noise=noise, backend="torch", **method)
    torch.testing.assert_close(fused, twin, rtol=1e-6, atol=1e-6)
    for other in ((7, 0), (8, 1)):
        moved = sga_round(v, 0.5, seed=seeds, counter=other, backend="triton", **method)
        assert (moved != fused).float().mean() > 0.5


def test_temperature_on_the_device_is_the_host_schedule():
    for method, rate in (("ssl", 1e-3), ("atanh", 1e-3), ("danneal", 1e-3), ("ssl", 1.0)):
        for t in (0, 1, 699, 700, 2000, 10**5):
            host = temperature(t, method=method, rate=rate)
            device = temperature(torch.tensor(t), method=method, rate=rate)
            assert math.isclose(float(device), host, rel_tol=1e-6), (method, t)


def test_tau_never_underflows():
    assert temperature(10**6, method="ssl", rate=1.0) == TAU_MIN
    v = torch.tensor([0.5, 1.25, -2.75, 3.0], requires_grad=True)
    out = sga_round(v, temperature(10**6, rate=1.0), seed=3, backend="torch")
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(v.grad).all()
    assert torch.equal(out.detach().frac().abs() > 0, torch.zeros(4, dtype=torch.bool))


class HostRead(AssertionError):
    pass


def test_a_step_reads_nothing_back_to_the_host(default_model, kodak_crops, monkeypatch):
    run = Refinement(default_model, kodak_crops[:, :, :40, :48], ["a", "b"],
                     RefineConfig(iters=4, track_every=0, compile=False))
    run.advance(1)  # Adam's first step allocates its state

    def refuse(*args, **kwargs):
        raise HostRead("a tensor was read back to the host inside the loop")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    run.advance(3)  # raises HostRead on any read-back
    monkeypatch.undo()
    assert len(run.results()[0].relaxed_loss) == 4


@pytest.mark.slow
def test_the_compiled_step_gives_the_eager_result(default_model, kodak_crops):
    """Same noise, same schedule: the true R-D loss within 0.5 % per image (docs/method.md §5)."""
    x = kodak_crops[:, :, :48, :64].to(DEVICE)
    cfg = RefineConfig(iters=30, track_every=10, tau_rate=0.02)
    eager, compiled = (refine_batch(default_model, x, ["a", "b"],
                                    cfg.with_options(compile=flag)) for flag in (False, True))
    for e, c in zip(eager, compiled):
        assert e.true_loss[-1][1] < e.true_loss[0][1]  # the refinement did something
        assert math.isclose(c.true_loss[-1][1], e.true_loss[-1][1], rel_tol=5e-3)
        torch.testing.assert_close(c.relaxed_loss, e.relaxed_loss, rtol=5e-3, atol=0)


def test_a_diverging_image_fails_alone_with_a_message(default_model, kodak_crops):
    x = kodak_crops[:, :, :40, :48]
    (res,) = refine_batch(default_model, x[:1], ["a"],
                          RefineConfig(iters=6, lr=3e38, track_every=0, compile=False))
    assert not res.codable and "lower --lr" in res.divergence_message()
    run = Refinement(default_model, x[:1], ["a"], RefineConfig(iters=50, lr=3e38,
                                                               track_every=5, compile=False))
    run.advance(50)
    assert run.stopped and run.done == 5  # stopped at the first tracking point after it
    (good,) = refine_batch(default_model, x[1:], ["b"],
                           RefineConfig(iters=6, track_every=0, compile=False))
    assert good.codable and good.diverged_at is None


@pytest.mark.parametrize("option,value", [("lr", math.inf), ("lmbda", math.inf),
                                          ("tau_rate", math.nan), ("tau_rate", -100.0),
                                          ("tau_max", 0.0)])
def test_non_finite_or_impossible_numbers_are_refused(option, value):
    from sgafast.errors import SgafastError

    with pytest.raises(SgafastError, match=option):
        RefineConfig(**{option: value})


def test_bf16_transforms_stay_close_to_fp32(default_model, kodak_crops):
    x = kodak_crops[:1, :, :48, :64]
    runs = [refine_batch(default_model, x, ["a"], RefineConfig(iters=8, track_every=8,
                                                               precision=p, compile=False))[0]
            for p in ("fp32", "bf16")]
    fp32, bf16 = (r.true_loss[-1][1] for r in runs)
    assert math.isfinite(bf16) and abs(bf16 - fp32) <= 0.02 * fp32
    assert runs[1].true_loss[-1][1] < runs[1].true_loss[0][1]


def test_an_unknown_precision_is_refused():
    from sgafast.errors import SgafastError

    with pytest.raises(SgafastError, match="precision"):
        RefineConfig(precision="fp8")


def test_huge_finite_latents_are_not_handed_to_the_coder():
    from sgafast.images import Geometry
    from sgafast.refine import LATENT_LIMIT, Refined

    ok, huge = torch.zeros(1, 2, 3, 3), torch.full((1, 2, 3, 3), 2 * LATENT_LIMIT)
    make = lambda y: Refined((y, ok), (ok, ok), Geometry(48, 48), [], [], 0.0, 0.0, 0.0,  # noqa: E731
                             None)
    assert make(ok).codable and not make(huge).codable
