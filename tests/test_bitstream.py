"""The .bin format: untrusted input is validated before anything is allocated from it."""

import contextlib
import faulthandler
import random
import signal
import struct
import zlib

import pytest
import torch
from compressai.models import MeanScaleHyperprior

from sgafast import bitstream, models
from sgafast.errors import SgafastError
from sgafast.images import Geometry
from sgafast.models import BaseModel

FIELDS = ["magic", "version", "arch", "n", "m", "height", "width", "fp", "z_len", "y_len", "crc"]
OFFSETS = {"arch": 5, "z_len": 26}


@pytest.fixture(scope="module")
def good_bin(default_model, kodak_crops):
    """The base codec's file of a real 40x70 crop (the encoder's own latents, not refined)."""
    with torch.no_grad():
        geometry = Geometry(40, 70)
        latents = default_model.family.analyse(geometry.pad(kodak_crops[:1, :, :40, :70]))
    return bitstream.encode(default_model, latents, geometry)


def _crc(data: bytes) -> int:
    """The format's CRC, computed here from its definition: bytes 0-33, then bytes 38 on."""
    return zlib.crc32(data[:34] + data[38:])


def _with_header(data: bytes, **fields) -> bytes:
    """``data`` with header fields rewritten and the CRC left as it was (a damaged file)."""
    values = dict(zip(FIELDS, bitstream.HEADER.unpack_from(data)))
    values.update(fields)
    return bitstream.HEADER.pack(*values.values()) + data[bitstream.HEADER.size:]


def _with_valid_header(data: bytes, **fields) -> bytes:
    """``data`` with header fields rewritten and a correct CRC (a crafted file)."""
    changed = _with_header(data, **fields)
    return _with_header(changed, crc=_crc(changed))


def _move_split(data: bytes, shift: int) -> bytes:
    """``data`` with the z/y string boundary moved by ``shift`` bytes and a correct CRC."""
    z_len, y_len = struct.unpack_from("<II", data, OFFSETS["z_len"])
    return _with_valid_header(data, z_len=z_len + shift, y_len=y_len - shift)


def _flip(data: bytes, *bits: int) -> bytes:
    out = bytearray(data)
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_header_is_38_bytes_and_round_trips(good_bin, default_model):
    assert bitstream.HEADER.size == 38
    assert bitstream.HEADER.unpack_from(good_bin)[1] == 2
    header, z_string, y_string = bitstream.parse(good_bin)
    assert (header.height, header.width, header.geometry.padded_size) == (40, 70, (64, 128))
    assert 38 + len(z_string) + len(y_string) == len(good_bin)
    assert header.fingerprint == models.weights_fingerprint(default_model.net)
    assert bitstream.decode(default_model, good_bin).shape == (1, 3, 40, 70)


def test_crc_covers_the_header_and_the_payload(good_bin):
    assert bitstream.HEADER.unpack_from(good_bin)[-1] == _crc(good_bin)
    assert struct.unpack_from("<4s", good_bin)[0] == b"SGAF"


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d[:20], "too short"),
    (lambda d: b"PNG\0" + d[4:], "not an sgafast bitstream"),
    (lambda d: _with_valid_header(d, version=9), "version 9"),
    (lambda d: _with_header(d, version=1), "version 1"),
    (lambda d: _with_valid_header(d, arch=77), "unknown architecture"),
    (lambda d: _with_valid_header(d, arch=3), "hyper-latent string of 24 bytes for a model without"),
    (lambda d: _with_valid_header(d, height=1 << 20, width=1 << 20), "invalid header"),
    (lambda d: _with_valid_header(d, height=0), "invalid header"),
    (lambda d: _with_valid_header(d, m=0), "invalid header"),
    (lambda d: _move_split(d, 1), "4-byte"),
    (lambda d: d[:-3], "truncated"),
    (lambda d: d + b"\0", "truncated"),
    (lambda d: _with_header(d, y_len=1 << 31), "truncated"),
    (lambda d: d[:-1] + bytes([d[-1] ^ 0xFF]), "checksum"),
    # header fields changed without the CRC: damage, whatever the new value means
    (lambda d: _with_header(d, height=41), "checksum"),
    (lambda d: _with_header(d, width=71), "checksum"),
    (lambda d: _with_header(d, width=1 << 14), "checksum"),
    (lambda d: _with_header(d, arch=2), "checksum"),
    (lambda d: _with_header(d, arch=7), "checksum"),
    (lambda d: _with_header(d, fp=1), "checksum"),
])
def test_corrupt_files_are_refused(good_bin, default_model, mutate, message):
    with pytest.raises(SgafastError, match=message):
        bitstream.decode(default_model, mutate(good_bin), "x.bin")


def test_every_header_bit_flip_is_caught(good_bin, default_model):
    """Past magic and version, a flipped header bit is corruption, never another model."""
    for bit in range(8 * bitstream.HEADER.size):
        with pytest.raises(SgafastError) as caught:
            bitstream.decode(default_model, _flip(good_bin, bit), "x.bin")
        if bit >= 8 * OFFSETS["arch"]:
            assert "corrupt" in str(caught.value), (bit, str(caught.value))


def test_another_model_is_refused(good_bin):
    torch.manual_seed(1)
    other = MeanScaleHyperprior(64, 96).eval()
    other.update(force=True)
    with pytest.raises(SgafastError, match="another model"):
        bitstream.decode(BaseModel(other, "other", "mbt2018-mean", None), good_bin)


def test_a_reconstruction_of_the_wrong_size_is_refused(good_bin, default_model, monkeypatch):
    """The padded output must be the z shape times the stride, or the crop would be garbage."""
    monkeypatch.setattr(default_model.net, "decompress",
                        lambda strings, shape: {"x_hat": torch.zeros(1, 3, 32, 64)})
    with pytest.raises(SgafastError, match="decoded a 32x64 image .* needs 64x128"):
        bitstream.decode(default_model, good_bin, "x.bin")


@contextlib.contextmanager
def _time_limit(seconds: int):
    """Raise TimeoutError in Python code running longer than ``seconds``."""
    def expire(signum, frame):
        raise TimeoutError(f"decode ran over {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _fuzz_cases(data: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    """Seeded damaged versions of a real file, and files that only look like one."""
    bits = 8 * len(data)
    valid_header = data[:bitstream.HEADER.size]
    cases = [("truncation", data[:rng.randrange(len(data))]) for _ in range(60)]
    cases += [("header flip", _flip(data, rng.randrange(8 * 38))) for _ in range(40)]
    cases += [("payload flip", _flip(data, rng.randrange(8 * 38, bits))) for _ in range(60)]
    cases += [("multi flip", _flip(data, *rng.sample(range(bits), rng.randint(2, 16))))
              for _ in range(60)]
    cases += [("random", rng.randbytes(rng.randrange(200))) for _ in range(20)]
    magic = bitstream.MAGIC + bytes([bitstream.VERSION])
    cases += [("random after magic", magic + rng.randbytes(rng.randrange(600)))
              for _ in range(30)]
    # payloads the CRC cannot tell from real ones: the decoder itself must survive them (few:
    # g_s takes ~0.3 s on the wild latents they decode to)
    cases += [("garbage payload",
               _with_header(valid_header + garbage, crc=_crc(valid_header + garbage)))
              for garbage in (rng.randbytes(len(data) - 38) for _ in range(12))]
    return cases


def test_fuzzed_files_fail_cleanly_or_decode_the_announced_size(good_bin, default_model,
                                                                 monkeypatch):
    """Every damaged file ends in SgafastError or an image of the header's size, in time."""
    real_decompress = default_model.net.decompress
    shapes = []

    def spy(strings, shape):
        shapes.append(tuple(shape))
        return real_decompress(strings, shape)

    monkeypatch.setattr(default_model.net, "decompress", spy)
    decoded = []
    # a hang in C code does not return to Python for the alarm: this dumps and exits instead
    faulthandler.dump_traceback_later(120, exit=True)
    try:
        for kind, data in _fuzz_cases(good_bin, random.Random(8)):
            try:
                with _time_limit(5):
                    x_hat = bitstream.decode(default_model, data, "fuzz.bin")
            except SgafastError:
                continue
            assert x_hat.shape == (1, 3, 40, 70), kind
            decoded.append(kind)
    finally:
        faulthandler.cancel_dump_traceback_later()
    # only the header's validated z shape is ever allocated, and garbage did reach the decoder
    assert set(shapes) == {(1, 2)}
    assert decoded.count("garbage payload") == 12
