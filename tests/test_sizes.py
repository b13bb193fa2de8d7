"""Datasets of many image sizes: one compiled step for all sizes, mixed-size batches, and no
silent fall-back to the eager step."""

import importlib
import json

import pytest
import torch
import torch._dynamo.utils

from conftest import BUNDLED, EQUALITY_LR
from sgafast.cli import main
from sgafast.errors import SgafastError
from sgafast.images import Canvas, Geometry, read_image, write_png
from sgafast.refine import RefineConfig, refine_batch

refine_module = importlib.import_module("sgafast.refine")  # not sgafast.refine(), the function

# nine sizes over two padded sizes: five of 256 x 256, four of 256 x 320
SIZES = [(200, 200), (210, 250), (256, 256), (230, 193), (256, 210), (250, 300), (200, 310),
         (256, 320), (193, 260)]


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Crops of a 512 x 512 mirror tiling of the bundled images at every size of SIZES."""
    folder = tmp_path_factory.mktemp("mixed")
    for i, (h, w) in enumerate(SIZES):
        image = read_image(BUNDLED[i % 2])
        wide = torch.cat([image, image.flip(-1)], -1)
        tiled = torch.cat([wide, wide.flip(-2)], -2)
        write_png(folder / f"{i:02d}_{h}x{w}.png", tiled[:, 9 * i:9 * i + h, :w])
    return folder


def test_a_canvas_pads_each_image_as_the_codec_pads_it_alone(kodak_crops):
    small, large = kodak_crops[0, :, :40, :50], kodak_crops[1, :, :64, :57]
    canvas = Canvas.of([small, large])
    assert canvas.x.shape == (2, 3, 64, 64)
    for b, image in enumerate((small, large)):
        geometry = Geometry.of(image)
        assert torch.equal(canvas.x[b:b + 1], geometry.pad(image[None]))
        assert torch.equal(canvas.image(b), image[None])
        assert int(canvas.mask[b].sum()) == canvas.num_pixels[b] == geometry.num_pixels
    with pytest.raises(SgafastError, match="share a padded size"):
        Canvas.of([small, torch.zeros(3, 65, 50)])


def test_a_mixed_size_batch_equals_the_per_image_results(default_model, kodak_crops):
    images = [kodak_crops[0, :, :40, :48], kodak_crops[1, :, :64, :56],
              kodak_crops[0, :, 3:53, :60]]
    names = ["a", "b", "c"]
    cfg = RefineConfig.for_method("linear", iters=12, track_every=4, compile=False,
                                  lr=EQUALITY_LR)
    batched = refine_batch(default_model, images, names, cfg)
    for image, name, res in zip(images, names, batched):
        (alone,) = refine_batch(default_model, image[None], [name], cfg)
        assert res.geometry == alone.geometry == Geometry.of(image)
        torch.testing.assert_close(res.latents, alone.latents, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(res.true_loss[-1][1], alone.true_loss[-1][1], rtol=1e-5,
                                   atol=0)


def _records(out):
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def _padded(record: dict) -> tuple[int, int]:
    height, width = record["name"][3:-4].split("x")
    return Geometry(int(height), int(width)).padded_size


@pytest.mark.slow
def test_nine_sizes_refine_compiled_in_one_batch_and_one_graph_per_padded_size(
        mixed_folder, tmp_path, capsys):
    """From an empty dynamo cache: the images of a padded size share one batch and one compiled
    graph (dynamo's count of unique graphs counts compilations); no image runs eagerly."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = tmp_path / "out"
    assert main(["refine", str(mixed_folder), "-o", str(out), "--compile", "--iters", "2",
                 "--batch-size", "5", "--track-every", "0", "--quiet"]) == 0
    records = _records(out)
    padded = {_padded(r) for r in records}
    assert len(records) == len(SIZES) and len(padded) == 2
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == len(padded)
    assert all(r["history"]["compiled"] for r in records)
    for size in padded:  # a batch's time is shared out equally over its images: one batch
        assert len({r["history"]["warmup_seconds"] for r in records if _padded(r) == size}) == 1
    err = capsys.readouterr().err
    assert f"({len(SIZES)} compiled, 0 eager)" in err and "running eagerly" not in err


def test_a_failed_compilation_says_so_once_and_runs_the_eager_step(mixed_folder, tmp_path,
                                                                   capsys, monkeypatch):
    def broken(graph, example_inputs):
        raise RuntimeError("the compiler broke")

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **options: compile_(fn, backend=broken))
    monkeypatch.setattr(refine_module, "_EAGER_NOTES", set())
    torch._dynamo.reset()
    three = tmp_path / "three"
    three.mkdir()
    for path in sorted(mixed_folder.glob("*.png"))[:3]:
        (three / path.name).write_bytes(path.read_bytes())
    options = ["--iters", "2", "--track-every", "0", "--quiet"]
    assert main(["refine", str(three), "-o", str(tmp_path / "c"), "--compile", *options]) == 0
    err = capsys.readouterr().err
    assert err.count("running eagerly") == 1 and "the compiler broke" in err
    assert "(0 compiled, 3 eager)" in err
    monkeypatch.undo()
    torch._dynamo.reset()
    assert main(["refine", str(three), "-o", str(tmp_path / "e"), "--no-compile", *options]) == 0
    for fell_back, eager in zip(_records(tmp_path / "c"), _records(tmp_path / "e")):
        assert fell_back["history"]["compiled"] is False
        assert fell_back["bin_sha256"] == eager["bin_sha256"]


def test_by_default_the_cpu_compiles_a_step_when_the_work_that_shares_it_pays():
    family = type("Family", (), {"compiles": True})()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    threshold = refine_module.CPU_COMPILE_FROM_WORK
    assert RefineConfig(iters=100).compiles(family, threshold, cpu)
    assert not RefineConfig(iters=5000).compiles(family, threshold - 1, cpu)
    assert RefineConfig(iters=5000, compile=False).compiles(family, threshold, cpu) is False
    assert RefineConfig(iters=1, compile=True).compiles(family, 0, cpu) is True
    # on CUDA (not measured yet) the length of the run decides
    assert RefineConfig(iters=refine_module.COMPILE_FROM_ITERS).compiles(family, 0, cuda)
    assert not RefineConfig(iters=refine_module.COMPILE_FROM_ITERS - 1).compiles(
        family, 10 * threshold, cuda)
    family.compiles = False
    assert not RefineConfig(iters=5000).compiles(family, threshold, cpu)


@pytest.mark.slow
def test_the_default_compiles_the_steps_that_enough_images_share(mixed_folder, tmp_path,
                                                                monkeypatch, capsys):
    """At batch 2, 256 x 256 gives batches of 2, 2 and 1 and 256 x 320 two of 2. With the
    threshold above one batch's work but below that of two batches sharing a step, the batches
    of 2 compile (one graph per padded size) and the batch of 1 runs eagerly, which is not a
    fall-back (nothing is said)."""
    iters = 2
    one_batch = 2 * 256 * 320 * iters  # the larger of the batches of 2
    monkeypatch.setattr(refine_module, "CPU_COMPILE_FROM_WORK", one_batch + 1)
    assert 2 * (2 * 256 * 256 * iters) > one_batch + 1
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    out = tmp_path / "out"
    assert main(["refine", str(mixed_folder), "-o", str(out), "--iters", str(iters),
                 "--batch-size", "2", "--track-every", "0", "--quiet"]) == 0
    records = _records(out)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert sum(r["history"]["compiled"] for r in records) == 8
    err = capsys.readouterr().err
    assert "(8 compiled, 1 eager)" in err and "running eagerly" not in err


@pytest.mark.slow
def test_the_cpu_keeps_its_own_number_of_compiled_steps(default_model, kodak_crops,
                                                         monkeypatch, capsys):
    """The driver's limit, not dynamo's default of 8, decides when a new shape runs eagerly:
    set to 1, the second padded size falls back (said with the limit), which dynamo's own
    default would have compiled."""
    assert refine_module.compiled_steps_limit(torch.device("cpu")) > 8
    assert torch._dynamo.config.recompile_limit >= 2
    monkeypatch.setattr(refine_module, "CPU_COMPILED_STEPS", 1)
    monkeypatch.setattr(refine_module, "_EAGER_NOTES", set())
    torch._dynamo.reset()
    cfg = RefineConfig.for_method("ssl", iters=2, track_every=0, compile=True)
    (first,) = refine_batch(default_model, kodak_crops[:1, :, :64, :64], ["a"], cfg)
    wide = torch.cat(list(kodak_crops), -1)[None]  # 64 x 128: another padded size
    (second,) = refine_batch(default_model, wide, ["b"], cfg)
    assert first.compiled and not second.compiled
    err = capsys.readouterr().err
    assert err.count("running eagerly") == 1 and "limit of 1 compiled steps" in err
    torch._dynamo.reset()
