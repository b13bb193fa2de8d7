"""sgafast.Refining: a CompressAI model whose compress() refines, decoded by the bare model's
decompress(), judged by CompressAI's own evaluation, and otherwise the wrapped model."""

import pytest
import torch
from compressai.utils.eval_model.__main__ import inference
from conftest import BUNDLED
from test_families import ARCHS, DIMS, amplify
from torch import nn

import sgafast
from sgafast import families
from sgafast.errors import SgafastError
from sgafast.images import read_image

LMBDA = 0.01
FAST = dict(lmbda=LMBDA, iters=4, lr=2e-2, compile=False)
EVAL = dict(FAST, iters=30)  # enough for a measurable gain on every family's tiny model


def tiny_net(arch: str, seed: int = 0) -> nn.Module:
    """A tiny net whose latents use many symbols (``amplify``) and whose synthesis is centred on
    mid-grey: random weights otherwise decode far outside [0, 1], where the metric's clamping
    hides what refinement does to the distortion."""
    torch.manual_seed(seed)
    net = families.build(arch, DIMS[arch])
    amplify(net)
    last = [m for m in net.g_s.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
    with torch.no_grad():
        last.bias.fill_(0.5)
    net.update(force=True)
    return net.eval()


@pytest.fixture(scope="module")
def nets():
    return {arch: tiny_net(arch) for arch in ARCHS}


@pytest.fixture(scope="module")
def image192():
    """A real 192x192 image: CompressAI's evaluation takes MS-SSIM, which needs over 160."""
    return read_image(BUNDLED[0])[:, 32:224, 32:224]


def rd_loss(metrics: dict) -> float:
    """λ·255²·MSE + bpp from the PSNR and bpp CompressAI's ``inference`` measured."""
    return LMBDA * 255**2 * 10 ** (-metrics["psnr-rgb"] / 10) + metrics["bpp"]


def refined_latents(net, x, options) -> tuple[torch.Tensor, ...]:
    """The batch's refined latents from sgafast.refine (identities "0", "1", ...: the wrapper's)."""
    results = sgafast.refine(net, x, **options)
    return tuple(torch.cat(parts) for parts in zip(*(r.latents for r in results)))


@pytest.mark.parametrize("arch", ARCHS)
def test_compressai_evaluation_gives_a_lower_rd_loss(nets, image192, arch):
    bare = inference(nets[arch], image192)
    refined = inference(sgafast.Refining(nets[arch], **EVAL), image192)
    assert rd_loss(refined) < rd_loss(bare)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_bare_decompress_decodes_the_refined_latents(nets, kodak_crops, arch):
    net = nets[arch]
    out = sgafast.Refining(net, **FAST).compress(kodak_crops)
    with torch.no_grad():  # ELIC's own compress() needs it
        bare = net.compress(kodak_crops)
    assert out.keys() == bare.keys() and out["shape"] == bare["shape"]  # the model's layout
    assert out["strings"] != bare["strings"]
    latents = refined_latents(net, kodak_crops, FAST)
    with torch.no_grad():
        y_hat = families.family_of(net).hard(latents)[0]
        decoded = net.decompress(out["strings"], out["shape"])["x_hat"]
        assert torch.equal(decoded, net.g_s(y_hat).clamp(0, 1))
    assert torch.equal(out.get("y_hat", y_hat), y_hat)  # checkerboard and ELIC return it


def test_compress_refines_whatever_the_callers_mode(nets, kodak_crops):
    net = nets["mbt2018-mean"]
    flags = [p.requires_grad for p in net.parameters()]
    wrapper = sgafast.Refining(net, **FAST)
    expected = wrapper.compress(kodak_crops)["strings"]
    with torch.no_grad():
        assert wrapper.compress(kodak_crops)["strings"] == expected  # the same seeds every call
    with torch.inference_mode():
        assert wrapper.compress(kodak_crops.clone())["strings"] == expected
    assert not net.training and [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())


def test_everything_but_compress_is_the_wrapped_nets(kodak_crops):
    net = tiny_net("mbt2018-mean")
    wrapper = sgafast.Refining(net, lmbda=LMBDA)
    assert wrapper.state_dict().keys() == net.state_dict().keys()
    assert dict(wrapper.named_parameters()) == dict(net.named_parameters())
    assert wrapper.g_a is net.g_a and wrapper.M == net.M and wrapper.decompress == net.decompress
    assert torch.equal(wrapper(kodak_crops)["x_hat"], net(kodak_crops)["x_hat"])
    assert wrapper.train() is wrapper and net.training and wrapper.training
    assert wrapper.eval() is wrapper and not net.training and not wrapper.training
    assert wrapper.to(torch.float64) is wrapper and net.g_a[0].weight.dtype == torch.float64
    wrapper.float()
    other = tiny_net("mbt2018-mean", seed=1)
    wrapper.load_state_dict(other.state_dict())  # CompressAI's loader: it resizes CDF tables
    fresh = families.build("mbt2018-mean", DIMS["mbt2018-mean"])
    fresh.load_state_dict(wrapper.state_dict())
    for state in (net.state_dict(), fresh.state_dict()):
        assert all(torch.equal(v, state[k]) for k, v in other.state_dict().items())


@pytest.mark.parametrize("options,message", [
    (dict(lmbda=LMBDA, iter=5), "unknown option iter;"),
    (dict(lmbda=LMBDA, iters=-1), "iters must be >= 0"),
    (dict(lmbda=LMBDA, method="sgd"), "unknown rounding method"),
    (dict(lmbda=LMBDA, backend="cuda"), "backend must be one of"),
    (dict(lmbda=LMBDA, lr="fast"), "bad option value"),
    ({}, "give lmbda="),
])
def test_a_bad_option_fails_at_construction(nets, options, message):
    with pytest.raises(SgafastError, match=message):
        sgafast.Refining(nets["mbt2018-mean"], **options)


def test_what_compress_cannot_code_is_refused(nets, kodak_crops, default_model):
    with pytest.raises(SgafastError, match="not a supported model"):
        sgafast.Refining(nn.Conv2d(3, 3, 1), lmbda=LMBDA)
    with pytest.raises(SgafastError, match="multiples of 64"):
        sgafast.Refining(nets["mbt2018-mean"], **FAST).compress(kodak_crops[..., :60])
    with pytest.raises(SgafastError, match="call net.update"):
        sgafast.Refining(families.build("mbt2018-mean", DIMS["mbt2018-mean"]), **FAST
                         ).compress(kodak_crops)
    assert sgafast.Refining(default_model).config.lmbda is None  # the model's λ is the default
