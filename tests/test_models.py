"""Loading base models: sgafast files, plain CompressAI state dicts, and clear refusals."""

import pytest
import torch
from compressai.models import (JointAutoregressiveHierarchicalPriors, MeanScaleHyperprior,
                               ScaleHyperprior)

from sgafast import families, models
from sgafast.errors import SgafastError


def test_bundled_default_is_small_and_loads(default_model):
    assert default_model.name == "q3"
    for path in models.bundled_models().values():
        assert path.stat().st_size <= 4 * 2**20
    assert default_model.architecture == "mbt2018-mean" and default_model.lmbda == 0.0067
    assert default_model.net.entropy_bottleneck._quantized_cdf.numel() > 0  # update() ran


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ScaleHyperprior(16, 24)
    models.save(tmp_path / "m.pt", net, lmbda=0.01, dtype=torch.float32)
    loaded = models.load(tmp_path / "m.pt")
    assert loaded.architecture == "bmshj2018-hyperprior" and loaded.lmbda == 0.01
    for key, value in net.state_dict().items():
        if not key.endswith(models.DERIVED_BUFFERS):
            assert torch.equal(loaded.net.state_dict()[key], value), key


@pytest.mark.parametrize("cls,arch", [(MeanScaleHyperprior, "mbt2018-mean"),
                                      (ScaleHyperprior, "bmshj2018-hyperprior")])
def test_plain_compressai_state_dicts_load(tmp_path, cls, arch):
    net = cls(16, 24)
    net.update(force=True)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "ckpt.pth.tar")
    loaded = models.load(tmp_path / "ckpt.pth.tar")
    assert loaded.architecture == arch and loaded.lmbda is None
    assert families.dims_of(loaded.net) == {"N": 16, "M": 24}


def test_autoregressive_checkpoint_loads(tmp_path):
    torch.save(JointAutoregressiveHierarchicalPriors(16, 24).state_dict(), tmp_path / "ar.pt")
    loaded = models.load(tmp_path / "ar.pt")
    assert loaded.architecture == "mbt2018" and loaded.describe()["M"] == 24


class NotWeights:
    pass


@pytest.mark.parametrize("content", ["text", "pickle", "wrong-shapes", "partial"])
def test_bad_checkpoints_are_refused(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "text":
        path.write_text("not a checkpoint")
    elif content == "pickle":  # weights_only=True refuses arbitrary objects
        torch.save({"state_dict": NotWeights()}, path)
    elif content == "wrong-shapes":
        state = MeanScaleHyperprior(16, 24).state_dict()
        models.save(path, MeanScaleHyperprior(16, 24), lmbda=0.01)
        payload = torch.load(path, weights_only=True)
        payload["M"] = 32
        torch.save(payload, path)
    else:
        state = MeanScaleHyperprior(16, 24).state_dict()
        torch.save({k: v for k, v in state.items() if not k.startswith("g_s")}, path)
    with pytest.raises(SgafastError, match="bad.pt"):
        models.load(path)


@pytest.mark.parametrize("spec,message", [("nosuchmodel", "no such file"),
                                          ("cheng2020-anchor:7", "quality must be one of 1"),
                                          ("elic2022-official:1", "no pretrained weights"),
                                          ("mbt2018:3:psnr", "METRIC one of mse, ms-ssim"),
                                          ("mbt2018-mean:9", "quality"),
                                          ("foo:1", "zoo architectures: bmshj2018")])
def test_bad_model_names_are_refused(spec, message):
    with pytest.raises(SgafastError, match=message):
        models.load(spec)


def test_buffers_survive_fp16_storage(tmp_path):
    """CompressAI's 1e-9 likelihood bound underflows in fp16: a zero bound gives infinite rates."""
    net = MeanScaleHyperprior(16, 24)
    models.save(tmp_path / "m.pt", net, lmbda=0.01)  # fp16 parameters
    loaded = models.load(tmp_path / "m.pt").net
    for module in (loaded.gaussian_conditional, loaded.entropy_bottleneck):
        assert module.likelihood_lower_bound.bound.item() == pytest.approx(1e-9)
    assert loaded.g_a[1].beta_reparam.pedestal.item() == pytest.approx(2.0**-36)


def test_bundled_models_have_the_architecture_constants(default_model):
    fresh = MeanScaleHyperprior(64, 96).state_dict()
    params = {name for name, _ in default_model.net.named_parameters()}
    for name in models.bundled_models():
        state = models.load(name).net.state_dict()
        for key, value in fresh.items():
            if key not in params and not key.endswith(models.DERIVED_BUFFERS):
                assert torch.equal(state[key], value), (name, key)
