"""`sgafast decode`: a bad file or output path is refused in one line, before the model loads."""

import pytest
import torch
from PIL import Image

from sgafast import bitstream, models
from sgafast.cli import main
from sgafast.images import Geometry


@pytest.fixture(scope="module")
def good_bin(tmp_path_factory, default_model, kodak_crops):
    """A real 40x70 ``.bin`` of the default model."""
    with torch.no_grad():
        geometry = Geometry(40, 70)
        latents = default_model.family.analyse(geometry.pad(kodak_crops[:1, :, :40, :70]))
    path = tmp_path_factory.mktemp("bins") / "good.bin"
    path.write_bytes(bitstream.encode(default_model, latents, geometry))
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the model is loaded: these refusals must come before that slow step."""
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(models, "load", load)


def _refused(argv, capsys) -> str:
    """Run ``sgafast`` expecting a usage error; its one-line message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sgafast: error: ") and err.count("\n") == 1, err
    return err


def test_empty_file_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    (tmp_path / "empty.bin").write_bytes(b"")
    err = _refused(["decode", str(tmp_path / "empty.bin"), "-o", str(tmp_path / "x.png")], capsys)
    assert "empty.bin" in err and "too short" in err
    assert not (tmp_path / "x.png").exists()


def test_damaged_file_is_refused_before_the_model_loads(tmp_path, good_bin, capsys, no_model):
    data = bytearray(good_bin.read_bytes())
    data[12] ^= 1  # the image height
    (tmp_path / "bad.bin").write_bytes(bytes(data))
    err = _refused(["decode", str(tmp_path / "bad.bin"), "-o", str(tmp_path / "x.png")], capsys)
    assert "bad.bin" in err and "corrupt" in err
    assert not (tmp_path / "x.png").exists()


def test_missing_file_is_refused_before_the_model_loads(tmp_path, capsys, no_model):
    err = _refused(["decode", str(tmp_path / "nope.bin"), "-o", str(tmp_path / "x.png")], capsys)
    assert "nope.bin" in err and "cannot read" in err


@pytest.mark.parametrize("name", ["out", "out.png"])
def test_output_onto_a_folder_is_refused(tmp_path, good_bin, capsys, no_model, name):
    (tmp_path / name).mkdir()
    err = _refused(["decode", str(good_bin), "-o", str(tmp_path / name)], capsys)
    assert f"-o {tmp_path / name}: is a folder" in err
    assert not list((tmp_path / name).iterdir())


def test_output_under_a_file_is_refused(tmp_path, good_bin, capsys, no_model):
    (tmp_path / "notes.txt").write_text("a file")
    target = tmp_path / "notes.txt" / "sub" / "x.png"
    err = _refused(["decode", str(good_bin), "-o", str(target)], capsys)
    assert "-o " in err and f"{tmp_path / 'notes.txt'} is a file" in err
    assert (tmp_path / "notes.txt").read_text() == "a file"


@pytest.mark.parametrize("name", ["out.jpg", "out", "out.png.bin"])
def test_output_that_is_not_png_is_refused(tmp_path, good_bin, capsys, no_model, name):
    err = _refused(["decode", str(good_bin), "-o", str(tmp_path / name)], capsys)
    assert name in err and "PNG" in err and ".png" in err
    assert not list(tmp_path.iterdir())


def test_png_output_of_any_case_is_written(tmp_path, good_bin, capsys):
    assert main(["decode", str(good_bin), "-o", str(tmp_path / "new" / "OUT.PNG")]) == 0
    with Image.open(tmp_path / "new" / "OUT.PNG") as img:
        assert (img.format, img.size) == ("PNG", (70, 40))
    assert "OUT.PNG (70x40)" in capsys.readouterr().out
