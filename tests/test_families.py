"""Every CompressAI architecture end to end: refinement, bitstreams, loading, training, the CLI."""

import json
import re
from pathlib import Path

import pytest
import torch
from compressai.layers import MaskedConv2d
from compressai.zoo import image as zoo
from torch import nn

from sgafast import bitstream, codec, families, models
from sgafast.cli import main
from sgafast.errors import SgafastError
from sgafast.images import Canvas, Geometry, read_image, write_png
from sgafast.inputs import collect
from sgafast.metrics import psnr
from sgafast.pipeline import refine_items
from sgafast.refine import RefineConfig, refine_batch
from conftest import EQUALITY_LR

DIMS = {  # tiny sizes; ELIC's groups are not CompressAI's default
    "bmshj2018-factorized": {"N": 8, "M": 12},
    "bmshj2018-factorized-relu": {"N": 8, "M": 12},
    "bmshj2018-hyperprior": {"N": 8, "M": 12},
    "mbt2018-mean": {"N": 8, "M": 12},
    "mbt2018": {"N": 8, "M": 12},
    "cheng2020-anchor": {"N": 8, "M": 8},
    "cheng2020-attn": {"N": 8, "M": 8},
    "cheng2020-anchor-checkerboard": {"N": 12, "M": 12},
    "elic2022-official": {"N": 8, "M": 12, "groups": [2, 2, 8]},
    "elic2022-chandelier": {"N": 8, "M": 12, "groups": [2, 2, 4, 4]},
}
ARCHS = list(families.ARCHITECTURES)
FACTORIZED = ("bmshj2018-factorized", "bmshj2018-factorized-relu")
CFG = RefineConfig(iters=4, track_every=2, compile=False)
H, W = 40, 57  # odd, and padded on both sides


def y_string_count(arch: str) -> int:
    """How many strings CompressAI's compress() writes for y: two passes per checkerboard."""
    if arch.startswith("elic2022"):
        return 2 * len(DIMS[arch]["groups"])
    return 2 if arch == "cheng2020-anchor-checkerboard" else 1


def amplify(net: nn.Module) -> None:
    """Scale the last convolution of g_a and h_a: random weights give latents that all round
    to one value, which would make any decoder look exact."""
    hyper = net.latent_codec["hyper"] if hasattr(net, "latent_codec") else net
    for transform in (net.g_a, getattr(hyper, "h_a", None)):
        if transform is not None:
            last = [m for m in transform if isinstance(m, nn.Conv2d)][-1]
            with torch.no_grad():
                last.weight.mul_(20)
                last.bias.mul_(20)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Every architecture at a tiny size, saved and loaded as sgafast model files (lambda 0.01)."""
    folder = tmp_path_factory.mktemp("models")
    loaded = {}
    for arch in ARCHS:
        torch.manual_seed(0)
        net = families.build(arch, DIMS[arch])
        amplify(net)
        models.save(folder / f"{arch}.pt", net, lmbda=0.01)
        loaded[arch] = models.load(folder / f"{arch}.pt")
    return loaded


@pytest.fixture
def pngs(tmp_path, kodak_crops):
    """Two real 40x57 images written as PNG files, and the images as read back."""
    folder = tmp_path / "in"
    for name, image in zip("ab", kodak_crops):
        write_png(folder / f"{name}.png", image[:, :H, :W])
    return folder, torch.stack([read_image(folder / f"{name}.png") for name in "ab"])


def compressai_strings(data: bytes) -> list[list[bytes]]:
    """A .bin's strings in CompressAI's order (y's strings, then z's), split by the test."""
    header, z_string, latent_part = bitstream.parse(data)
    strings = bitstream.split_latent_part(latent_part, y_string_count(header.architecture), "test")
    if header.architecture not in FACTORIZED:
        strings.append(z_string)
    return [[s] for s in strings]


def decompress_directly(model, data: bytes) -> torch.Tensor:
    """The model's own decompress() on a .bin's strings without sgafast's decoder; the unpadded
    image."""
    header = bitstream.parse(data)[0]
    shape = model.family.coder_shape(header.geometry.latent_size)
    with torch.no_grad():
        x_hat = model.net.decompress(compressai_strings(data), shape)["x_hat"]
    return header.geometry.unpad(x_hat)


def plain_state_dict(tiny, arch, folder: Path, wrapped: bool = False) -> Path:
    state = tiny[arch].net.state_dict()
    path = folder / f"{arch}.pth.tar"
    torch.save({"state_dict": state} if wrapped else state, path)
    return path


@pytest.mark.parametrize("arch", ARCHS)
def test_batch_refinement_equals_per_image(tiny, kodak_crops, arch):
    x = kodak_crops[:, :, :H, :W]
    cfg = CFG.with_options(lr=EQUALITY_LR)
    batched = refine_batch(tiny[arch], x, ["first", "second"], cfg)
    for i, name in enumerate(["first", "second"]):
        (alone,) = refine_batch(tiny[arch], x[i:i + 1], [name], cfg)
        torch.testing.assert_close(batched[i].latents, alone.latents, rtol=1e-4, atol=1e-4)
        assert not torch.equal(batched[i].latents[0], batched[i].base[0])  # it did refine
        assert [t for t, _ in batched[i].true_loss] == [0, 2, 4]


@pytest.mark.parametrize("arch", ARCHS)
def test_bitstream_is_what_the_models_own_decompress_decodes(tiny, kodak_crops, arch):
    model = tiny[arch]
    (res,) = refine_batch(model, kodak_crops[1:, :, :H, :W], ["b"], CFG)
    data = bitstream.encode(model, res.latents, res.geometry)
    header = bitstream.parse(data)[0]
    assert (header.architecture, header.height, header.width) == (arch, H, W)
    assert model.family.strings_per_image() == y_string_count(arch) + (arch not in FACTORIZED)
    with torch.no_grad():
        y_hat = model.family.hard(res.latents)[0]
        expected = res.geometry.unpad(model.net.g_s(y_hat).clamp(0, 1))
    assert y_hat.round().unique().numel() > 2  # not one symbol: wrong latents would show
    assert torch.equal(decompress_directly(model, data), expected)
    strings, shape = bitstream.decompress_args(model, data)  # the arguments for a user's decoder
    assert strings == compressai_strings(data)
    assert shape == model.family.coder_shape(res.geometry.latent_size)


@pytest.mark.parametrize("arch", ARCHS)
def test_pipeline_records_agree_with_the_bitstreams(tiny, pngs, tmp_path, arch):
    folder, x = pngs
    model, out = tiny[arch], tmp_path / "out"
    items, refused = collect([str(folder)])
    report = refine_items(items, out, model, CFG, batch_size=2, progress=False)
    assert not refused and not report.failures and len(report.records) == 2
    results = refine_batch(model, x, ["a", "b"], CFG)  # the pipeline's batch, identities
    for i, (name, res) in enumerate(zip("ab", results)):
        record = json.loads((out / f"{name}.json").read_text())
        data = (out / f"{name}.bin").read_bytes()
        assert data == bitstream.encode(model, res.latents, res.geometry)
        assert record["history"]["relaxed_loss"] == pytest.approx(res.relaxed_loss, rel=1e-5)
        with torch.no_grad():
            loss, _ = codec.hard_rd(model.family, Canvas.of(x[i:i + 1]), res.latents, 0.01)
        assert record["rd_loss"] == pytest.approx(loss.item(), rel=1e-5)
        assert record["bpp"] == pytest.approx(8 * len(data) / (H * W))
        decoded = decompress_directly(model, data)
        assert record["psnr"] == pytest.approx(psnr(x[i:i + 1], decoded), abs=1e-9)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_bitstream_is_refused_by_another_architecture(tiny, kodak_crops, arch):
    model, geometry = tiny[arch], Geometry(H, W)
    with torch.no_grad():
        latents = model.family.analyse(geometry.pad(kodak_crops[:1, :, :H, :W]))
    data = bitstream.encode(model, latents, geometry)
    other = tiny[ARCHS[(ARCHS.index(arch) + 1) % len(ARCHS)]]
    with pytest.raises(SgafastError, match="another model"):
        bitstream.decode(other, data)


@pytest.mark.parametrize("wrapped", [False, True], ids=["bare", "wrapped"])
@pytest.mark.parametrize("arch", ARCHS)
def test_plain_state_dicts_load_with_their_architecture(tiny, tmp_path, arch, wrapped):
    loaded = models.load(plain_state_dict(tiny, arch, tmp_path, wrapped))
    assert (loaded.architecture, loaded.lmbda) == (arch, None)
    assert families.dims_of(loaded.net) == DIMS[arch]
    state = tiny[arch].net.state_dict()
    for key, value in loaded.net.state_dict().items():
        if not key.endswith(models.DERIVED_BUFFERS):
            assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("arch", ["elic2022-official", "elic2022-chandelier"])
def test_elic_whose_sizes_look_alike_loads_without_arch(tmp_path, arch):
    """With 2M = 3N/2, h_s's last weight has the same first size in both ELICs (Chandelier's
    conv: 2M outputs; the official deconv: 3N/2 inputs), yet the weights fit only one."""
    dims = {"N": 8, "M": 6, "groups": [2, 4]}
    torch.save(families.build(arch, dims).state_dict(), tmp_path / "elic.pt")
    assert models.load(tmp_path / "elic.pt", arch=arch).architecture == arch
    assert models.load(tmp_path / "elic.pt").architecture == arch


def test_arch_that_does_not_fit_is_refused(tiny, tmp_path):
    path = plain_state_dict(tiny, "elic2022-official", tmp_path)
    with pytest.raises(SgafastError, match="not a state dict of elic2022-chandelier: its keys "
                       "and shapes fit elic2022-official"):
        models.load(path, arch="elic2022-chandelier")
    with pytest.raises(SgafastError, match="--arch elic2023: unknown"):
        models.load(path, arch="elic2023")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """Torch hub's cache in a temporary folder, and no downloads: its checkpoints folder."""
    def no_network(url, *args, **kwargs):
        raise OSError(f"no network in tests ({url})")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    return checkpoints


@pytest.mark.parametrize("spec,lmbda", [("bmshj2018-factorized:1", 0.0018),
                                        ("mbt2018:4", 0.0130),
                                        ("bmshj2018-factorized:2:ms-ssim", 4.58)])
def test_zoo_weights_load_from_the_hub_cache(tiny, offline_hub, spec, lmbda):
    arch, quality, *metric = spec.split(":")
    url = zoo.model_urls[arch][(metric or ["mse"])[0]][int(quality)]
    state = tiny[arch].net.state_dict()
    torch.save(state, offline_hub / Path(url).name)
    loaded = models.load(spec)
    assert (loaded.architecture, loaded.lmbda) == (arch, lmbda)
    assert families.dims_of(loaded.net) == DIMS[arch]
    assert torch.equal(loaded.net.g_a[0].weight, state["g_a.0.weight"])


def test_missing_zoo_weights_name_where_to_put_them(offline_hub):
    url = zoo.model_urls["mbt2018-mean"]["mse"][3]
    expected = offline_hub / Path(url).name
    with pytest.raises(SgafastError, match=re.escape(f"put that file at {expected}")):
        models.load("mbt2018-mean:3")


@pytest.fixture(scope="module")
def training_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("train")
    generator = torch.Generator().manual_seed(0)
    for k in range(3):
        write_png(folder / f"{k}.png", torch.rand(3, 64, 64, generator=generator))
    return folder


@pytest.mark.parametrize("arch", ARCHS)
def test_train_writes_a_model_of_every_architecture(training_images, tmp_path, arch):
    dims = DIMS[arch]
    sizes = ["--N", str(dims["N"]), "--M", str(dims["M"])]
    if "groups" in dims:
        sizes += ["--groups", ",".join(map(str, dims["groups"]))]
    assert main(["train", str(training_images), "-o", str(tmp_path / "m.pt"), "--arch", arch,
                 *sizes, "--steps", "1", "--crop", "64", "--batch-size", "2"]) == 0
    loaded = models.load(tmp_path / "m.pt")
    assert loaded.architecture == arch and families.dims_of(loaded.net) == dims


@pytest.mark.parametrize("arch", ["mbt2018", "elic2022-official"])
def test_cli_refines_and_decodes_with_a_plain_state_dict(tiny, pngs, tmp_path, arch):
    folder, x = pngs
    model = plain_state_dict(tiny, arch, tmp_path)
    out, decoded = tmp_path / "out", tmp_path / "a.decoded.png"
    assert main(["refine", str(folder / "a.png"), "-o", str(out), "--model", str(model),
                 "--lmbda", "0.01", "--iters", "3", "--quiet"]) == 0
    assert main(["decode", str(out / "a.bin"), "-o", str(decoded), "--model", str(model)]) == 0
    record = json.loads((out / "a.json").read_text())
    assert record["settings"]["model"]["architecture"] == arch and record["iterations"] == 3
    assert read_image(decoded).shape == (3, H, W)
    assert psnr(x[:1], read_image(decoded)[None]) == pytest.approx(record["psnr"], abs=1e-9)


@pytest.mark.parametrize("arch", ["mbt2018", "cheng2020-anchor-checkerboard",
                                  "elic2022-chandelier"])
def test_masked_convolutions_never_rewrite_their_weights(tiny, kodak_crops, arch):
    """CompressAI's MaskedConv2d re-assigns weight.data on every call, freeing the storage the
    pipeline's coder thread may be reading; sgafast's calls leave the weights where they are."""
    model = tiny[arch]
    masked = [m for m in model.net.modules() if isinstance(m, MaskedConv2d)]
    pointers = [m.weight.data_ptr() for m in masked]
    (res,) = refine_batch(model, kodak_crops[:1, :, :H, :W], ["a"], CFG)
    bitstream.decode(model, bitstream.encode(model, res.latents, res.geometry))
    assert masked and [m.weight.data_ptr() for m in masked] == pointers


def test_a_masked_convolution_still_masks():
    conv = MaskedConv2d(3, 4, kernel_size=5, padding=2)
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        conv.weight.normal_()  # nonzero where the mask is zero too
        expected = torch.nn.functional.conv2d(x, conv.weight * conv.mask, conv.bias, padding=2)
        families.base.without_weight_rewrites(conv)
        assert torch.equal(conv(x), expected)


@pytest.mark.slow
def test_a_compiled_raster_step_gives_the_eager_result(tiny, kodak_crops):
    """Raster AR models compile by default (their masked convolutions no longer write)."""
    model = tiny["mbt2018"]
    assert RefineConfig(iters=500).compiles(model.family, 10**9, torch.device("cpu"))
    x = kodak_crops[:1, :, :H, :W]
    eager, compiled = (refine_batch(model, x, ["a"], RefineConfig(iters=6, track_every=3,
                                                                  compile=flag))[0]
                       for flag in (False, True))
    torch.testing.assert_close(compiled.relaxed_loss, eager.relaxed_loss, rtol=1e-4, atol=0)
    assert compiled.true_loss[-1][1] == pytest.approx(eager.true_loss[-1][1], rel=1e-4)
