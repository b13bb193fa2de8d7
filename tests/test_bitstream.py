"""The .bin format: untrusted input is validated before anything is allocated from it."""

import struct
import zlib

import pytest
import torch
from compressai.models import MeanScaleHyperprior

from sgafast import bitstream, models
from sgafast.errors import SgafastError
from sgafast.models import BaseModel
from sgafast.refine import RefineConfig, refine_batch


@pytest.fixture(scope="module")
def good_bin(default_model, kodak_crops):
    x = kodak_crops[:1, :, :40, :70]
    (res,) = refine_batch(default_model, x, ["a"], RefineConfig(method="none"))
    return bitstream.encode(default_model, res.y_base, res.z_base, 40, 70)


def _with_header(data: bytes, **fields) -> bytes:
    names = ["magic", "version", "arch", "n", "m", "height", "width", "fp", "z_len", "y_len",
             "crc"]
    values = dict(zip(names, bitstream.HEADER.unpack_from(data)))
    values.update(fields)
    return bitstream.HEADER.pack(*values.values()) + data[bitstream.HEADER.size:]


def test_header_is_38_bytes_and_round_trips(good_bin, default_model):
    assert bitstream.HEADER.size == 38
    header, z_string, y_string = bitstream.parse(good_bin)
    assert (header.height, header.width, header.z_shape) == (40, 70, (1, 2))
    assert header.fingerprint == models.weights_fingerprint(default_model.net)
    assert bitstream.decode(default_model, good_bin).shape == (1, 3, 40, 70)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d[:20], "too short"),
    (lambda d: b"PNG\0" + d[4:], "not an sgafast bitstream"),
    (lambda d: _with_header(d, version=9), "version 9"),
    (lambda d: _with_header(d, arch=7), "architecture"),
    (lambda d: _with_header(d, height=1 << 20, width=1 << 20), "corrupt header"),
    (lambda d: _with_header(d, height=0), "corrupt header"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d + b"\0", "truncated"),
    (lambda d: _with_header(d, y_len=1 << 31), "truncated"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "checksum"),
])
def test_corrupt_files_are_refused(good_bin, default_model, mutate, message):
    with pytest.raises(SgafastError, match=message):
        bitstream.decode(default_model, mutate(good_bin), "x.bin")


def test_another_model_is_refused(good_bin):
    torch.manual_seed(1)
    other = MeanScaleHyperprior(64, 96).eval()
    other.update(force=True)
    with pytest.raises(SgafastError, match="another model"):
        bitstream.decode(BaseModel(other, "other", "mbt2018-mean", None), good_bin)


def test_crc_covers_the_payload(good_bin):
    header = bitstream.HEADER.unpack_from(good_bin)
    assert header[-1] == zlib.crc32(good_bin[38:])
    assert struct.unpack_from("<4s", good_bin)[0] == b"SGAF"
