"""Reading images: every PIL mode with its real range, upright, and clear refusals."""

import numpy as np
import pytest
import torch
from PIL import Image

from sgafast.errors import SgafastError
from sgafast.images import read_image, read_image_with_notes


def _gray_expected(values, full_scale=1.0) -> torch.Tensor:
    """The (3, H, W) tensor a 2-D array of samples should read as: value / full scale."""
    gray = torch.tensor(values, dtype=torch.float64) / full_scale
    return gray.float().expand(3, *gray.shape)


def _read(path):
    x, notes = read_image_with_notes(path)
    assert torch.equal(read_image(path), x)
    assert x.dtype == torch.float32 and x.shape[0] == 3
    return x, notes


def test_plain_rgb_is_read_as_bytes_over_255_without_notes(tmp_path):
    pixels = np.array([[[0, 128, 255], [1, 2, 3]]], dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "rgb.png")
    x, notes = _read(tmp_path / "rgb.png")
    assert notes == {}
    assert torch.equal(x, torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1) / 255)


def test_16_bit_gray_png_uses_the_full_16_bit_range(tmp_path):
    values = [[0, 1, 255, 256], [257, 32768, 65534, 65535]]
    Image.fromarray(np.array(values, dtype=np.uint16)).save(tmp_path / "g16.png")
    x, notes = _read(tmp_path / "g16.png")
    assert notes == {"mode": "I;16", "scaled": "16-bit"}
    assert torch.equal(x, _gray_expected(values, 65535))
    assert x[0, 1, 1] == pytest.approx(0.5, abs=1e-4)  # mid-gray, not white


def test_32_bit_integer_tiff_uses_its_tagged_depth(tmp_path):
    values = [[0, 1 << 20, (1 << 31) - 1]]
    Image.fromarray(np.array(values, dtype=np.int32)).save(tmp_path / "i32.tif")
    x, notes = _read(tmp_path / "i32.tif")
    assert notes == {"mode": "I", "scaled": "32-bit signed"}
    assert torch.equal(x, _gray_expected(values, (1 << 31) - 1))


def test_float_tiff_in_range_is_read_as_is(tmp_path):
    values = [[0.0, 0.25, 0.5], [0.75, 1.0, 0.1]]
    Image.fromarray(np.array(values, dtype=np.float32)).save(tmp_path / "f.tif")
    x, notes = _read(tmp_path / "f.tif")
    assert notes == {"mode": "F"}
    assert torch.equal(x, torch.tensor(values, dtype=torch.float32).expand(3, 2, 3))


def test_float_tiff_out_of_range_is_clipped_with_a_note(tmp_path):
    values = [[-0.5, 0.3, 1.5, float("nan")]]
    Image.fromarray(np.array(values, dtype=np.float32)).save(tmp_path / "f.tif")
    x, notes = _read(tmp_path / "f.tif")
    assert notes == {"mode": "F", "clipped": True}
    expected = torch.tensor([[0.0, 0.3, 1.0, 0.0]], dtype=torch.float32).expand(3, 1, 4)
    assert torch.equal(x, expected)


def test_rgba_drops_alpha_and_keeps_the_colour(tmp_path):
    pixels = np.array([[[10, 20, 30, 0], [200, 100, 50, 128], [1, 2, 3, 255]]], dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(tmp_path / "rgba.png")
    x, notes = _read(tmp_path / "rgba.png")
    assert notes == {"mode": "RGBA", "alpha": "dropped"}
    expected = torch.tensor(pixels[..., :3], dtype=torch.float32).permute(2, 0, 1) / 255
    assert torch.equal(x, expected)


def test_palette_png_reads_the_palette_colours(tmp_path):
    img = Image.new("P", (3, 1))
    img.putpalette([255, 0, 0, 0, 128, 0, 7, 8, 9] + [0] * (3 * 253))
    img.putdata([2, 0, 1])
    img.save(tmp_path / "p.png")
    x, notes = _read(tmp_path / "p.png")
    assert notes == {"mode": "P"}
    expected = torch.tensor([[[7, 8, 9], [255, 0, 0], [0, 128, 0]]], dtype=torch.float32)
    assert torch.equal(x, expected.permute(2, 0, 1) / 255)


def test_8_bit_gray_is_replicated(tmp_path):
    values = [[0, 17, 255]]
    Image.fromarray(np.array(values, dtype=np.uint8), "L").save(tmp_path / "l.png")
    x, notes = _read(tmp_path / "l.png")
    assert notes == {"mode": "L"}
    assert torch.equal(x, _gray_expected(values, 255))


def test_exif_orientation_6_is_turned_upright(tmp_path):
    """Orientation 6: the stored rows are shown rotated 90 degrees clockwise."""
    stored = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40  # 3 wide, 2 tall as stored
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored, "L").convert("RGB").save(tmp_path / "photo.png", exif=exif)
    x, notes = _read(tmp_path / "photo.png")
    assert notes == {"exif_orientation": 6}
    # shown 2 wide, 3 tall; the stored bottom-left pixel is now top-left
    upright = [[120, 0], [160, 40], [200, 80]]
    assert x.shape == (3, 3, 2)
    assert torch.equal(x, _gray_expected(upright, 255))


def test_truncated_file_is_refused_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
    with pytest.raises(SgafastError, match="cut.png: cannot read"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("side", [12, 16])  # PIL warns above the limit, raises above twice it
def test_decompression_bomb_is_refused_naming_the_file(tmp_path, monkeypatch, side):
    Image.new("RGB", (side, side)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(SgafastError, match="huge.png: refused as a possible decompression bomb"
                                           ".*downscale"):
        read_image(tmp_path / "huge.png")


def test_cmyk_is_read_as_its_rgb_colours(tmp_path):
    """No ink is white, full cyan is (0, 255, 255), full black is black (PIL's naive CMYK)."""
    inks = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255]]], dtype=np.uint8)
    Image.fromarray(inks, "CMYK").save(tmp_path / "cmyk.tif")
    x, notes = _read(tmp_path / "cmyk.tif")
    want = torch.tensor([[[255, 255, 255], [0, 255, 255], [0, 0, 0]]], dtype=torch.float32)
    assert torch.equal(x, want.permute(2, 0, 1) / 255)
    assert notes.get("mode") == "CMYK"
