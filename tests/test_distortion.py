"""MS-SSIM as the distortion: CompressAI's loss, each image's own pixels, defaults, records, BD."""

import json

import bjontegaard as bd
import pytest
import torch
from PIL import Image
from pytorch_msssim import ms_ssim

from sgafast import codec, evaluate, models, pipeline, step, train
from sgafast.errors import SgafastError
from sgafast.images import Canvas
from sgafast.refine import (RefineConfig, Refinement, distortion_of, lmbda_of, refine,
                            refine_batch)

MS_SSIM = dict(distortion="ms-ssim", lmbda=8.73)
FAST = dict(iters=120, tau_rate=2e-2, track_every=40)


@pytest.fixture(scope="module")
def crop192():
    """A real 192x192 Kodak crop (MS-SSIM's five scales need sides of 161 or more)."""
    from conftest import BUNDLED
    from sgafast.images import read_image

    return read_image(BUNDLED[0])[None, :, 32:224, 32:224]


def test_relaxed_loss_is_compressais_ms_ssim_loss(default_model, crop192):
    cfg = RefineConfig(iters=10, backend="torch", **MS_SSIM)
    run = Refinement(default_model, crop192, ["a"], cfg)
    p, t = run.problem, torch.tensor(3)
    with torch.no_grad():
        loss = p.relaxed_loss(run.latents, t)
        tau = p.schedule.temperature(t, p.iters, method=p.rounding.method, tau_max=p.tau_max,
                                     rate=p.tau_rate)
        y_soft, bits = p.family.relaxed(run.latents, step.SoftRounder(p, tau, t),
                                        p.hyper_transforms)
        x_hat = p.family.synthesis(y_soft)
    expected = 8.73 * (1 - ms_ssim(x_hat, crop192, data_range=1.0, size_average=False)) \
        + bits / crop192[0, 0].numel()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=0)


def test_ms_ssim_of_a_padded_image_takes_its_own_pixels_only(crop192):
    images = [crop192[0, :, :170, :180], crop192[0, :, 5:192, 2:163]]  # one 192x192 canvas
    canvas = Canvas.of(images)
    x_hat = (canvas.x + 0.05 * torch.randn_like(canvas.x)).clamp(0, 1)
    garbage = torch.where(canvas.mask.bool(), x_hat, torch.rand_like(x_hat))
    got = codec.distortion("ms-ssim", garbage, canvas.x, canvas.mask, canvas.num_pixels,
                           canvas.geometries)
    for b, g in enumerate(canvas.geometries):
        alone = ms_ssim(g.unpad(x_hat[b:b + 1]), images[b][None], data_range=1.0)
        torch.testing.assert_close(got[b], alone, rtol=1e-6, atol=1e-6)


def test_refinement_lowers_the_true_ms_ssim_rd_loss(default_model, crop192):
    (res,) = refine_batch(default_model, crop192, ["a"], RefineConfig(**MS_SSIM, **FAST))
    canvas = Canvas.of(crop192)
    with torch.no_grad():
        base, _ = codec.hard_rd(default_model.family, canvas, res.base, 8.73, "ms-ssim")
        refined, terms = codec.hard_rd(default_model.family, canvas, res.latents, 8.73,
                                       "ms-ssim")
    assert float(refined[0]) < float(base[0])
    assert res.true_loss[-1][1] == pytest.approx(float(refined[0]), rel=1e-5)
    assert set(terms) == {"ms_ssim", "bits"}


def test_images_too_small_for_five_scales_are_refused(default_model, crop192, tmp_path):
    with pytest.raises(SgafastError, match="160x192 image is too small .* at least 161 pixels"):
        refine(default_model, crop192[..., :160], iters=2, **MS_SSIM)
    Image.new("RGB", (200, 150)).save(tmp_path / "small.png")
    report = pipeline.refine_files([tmp_path / "small.png"], tmp_path / "out", default_model,
                                   RefineConfig(iters=2, **MS_SSIM), progress=False)
    assert not report.records
    assert "200x150 image is too small" in report.failures[0].reason


def test_a_model_trained_for_ms_ssim_defaults_to_it(tmp_path, monkeypatch):
    from compressai.models import MeanScaleHyperprior
    from compressai.zoo import image as zoo

    assert models.zoo_training("ms-ssim", 3) == (8.73, "ms-ssim")
    assert models.zoo_training("mse", 3) == (0.0067, "mse")
    monkeypatch.setattr(zoo, "_load_model", lambda *args, **kw: MeanScaleHyperprior(8, 12))
    model = models.load("mbt2018-mean:8:ms-ssim")
    assert (lmbda_of(model, RefineConfig()), distortion_of(model, RefineConfig())) == (
        220.0, "ms-ssim")
    with pytest.raises(SgafastError, match="trained for the ms-ssim distortion"):
        lmbda_of(model, RefineConfig(distortion="mse"))
    assert lmbda_of(model, RefineConfig(distortion="mse", lmbda=0.01)) == 0.01
    models.save(tmp_path / "m.pt", model.net, lmbda=4.58, distortion="ms-ssim")
    loaded = models.load(tmp_path / "m.pt")
    assert (loaded.lmbda, loaded.distortion) == (4.58, "ms-ssim")


def test_training_with_ms_ssim_is_compressais_loss_and_recorded(tmp_path):
    with pytest.raises(SgafastError, match="--crop 64: MS-SSIM's five scales"):
        train.train(tmp_path, tmp_path / "m.pt", train.TrainConfig(crop=64, distortion="ms-ssim"))
    from conftest import BUNDLED_IMAGES

    cfg = train.TrainConfig(n=8, m=12, crop=192, batch_size=1, steps=2, lmbda=4.58,
                            distortion="ms-ssim")
    train.train(BUNDLED_IMAGES, tmp_path / "m.pt", cfg)
    assert models.load(tmp_path / "m.pt").distortion == "ms-ssim"


def test_records_say_which_distortion_their_rd_loss_holds(default_model, crop192, tmp_path):
    from sgafast.images import write_png

    write_png(tmp_path / "a.png", crop192[0])
    report = pipeline.refine_files([tmp_path / "a.png"], tmp_path / "out", default_model,
                                   RefineConfig.for_method("none", **MS_SSIM), progress=False)
    (record,) = report.records
    assert record["distortion"] == record["base"]["distortion"] == "ms-ssim"
    assert record["settings"]["distortion"] == "ms-ssim"
    assert record["rd_loss"] == pytest.approx(
        8.73 * (1 - float(ms_ssim(*_float_reconstruction(default_model, crop192),
                                  data_range=1.0))) + record["bpp_likelihood"], rel=1e-5)
    saved = json.loads((tmp_path / "out" / "a.json").read_text())
    assert saved["distortion"] == "ms-ssim"


def _float_reconstruction(model, x):
    with torch.no_grad():
        y_hat, _ = model.family.hard(model.family.analyse(x))
        return model.family.synthesis(y_hat), x


def test_bd_tables_of_ms_ssim_runs_are_in_ms_ssim_db():
    def curve(bpp, msssim):
        return {"results": {"bpp": bpp, "ms-ssim-rgb": msssim, "psnr-rgb": [30.0] * len(bpp)},
                "bpp-likelihood": bpp, "rd-loss": [1.0] * len(bpp)}

    anchor = curve([0.2, 0.4, 0.6, 0.8], [0.90, 0.94, 0.96, 0.97])
    test = curve([0.18, 0.36, 0.55, 0.75], [0.905, 0.945, 0.962, 0.972])
    (row,) = evaluate.bd_table({"none": anchor, "ssl": test}, distortion="ms-ssim")
    db = [[evaluate.ms_ssim_db(v) for v in c["results"]["ms-ssim-rgb"]] for c in (anchor, test)]
    args = (anchor["results"]["bpp"], db[0], test["results"]["bpp"], db[1])
    assert evaluate.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert row["bd_rate_bpp"] == pytest.approx(bd.bd_rate(*args, method="akima", min_overlap=0))
    assert row["bd_msssim_db_bpp"] == pytest.approx(
        bd.bd_psnr(*args, method="akima", min_overlap=0))
    assert "BD-MS-SSIM (bitstream)" in evaluate.bd_markdown([row], distortion="ms-ssim")
    records = {label: {"q": [{"distortion": "ms-ssim"}]} for label in ("none", "ssl")}
    assert evaluate.run_distortion(records) == "ms-ssim"
    records["none"]["q"].append({"distortion": "mse"})
    assert evaluate.run_distortion(records) == "mse"


def test_mse_loss_keeps_the_papers_arithmetic():
    """lambda * 255^2 * MSE + bpp in this order: the paper schedule's bitstreams stay as before."""
    mse, bits = torch.rand(64, dtype=torch.float32) * 1e-2, torch.rand(64) * 1e5
    expected = 0.0067 * 255**2 * mse + bits / 65536
    assert torch.equal(codec.rd_loss(mse, bits, 0.0067, 65536), expected)
