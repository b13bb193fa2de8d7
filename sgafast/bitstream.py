"""The ``.bin`` file: a 38-byte header and CompressAI's entropy-coded strings for one image.

Layout (little-endian)::

    offset size  field
    0      4     magic b"SGAF"
    4      1     format version (2)
    5      1     architecture (1 = mbt2018-mean, 2 = bmshj2018-hyperprior)
    6      2     N (hyper-latent channels)          8   2  M (latent channels)
    10     4     image height                       14  4  image width
    18     8     model fingerprint (first 8 bytes of SHA-256 of the weights)
    26     4     z string length                    30  4  y string length
    34     4     CRC-32 of bytes 0-33 followed by everything after the header
    38     ...   z string, then y string

Version 1 had the same layout with a CRC of the strings only, so a flipped header bit went
unnoticed; version 2 files are refused by version 1 readers and vice versa.

The latent shapes follow from the image size, so they are not stored. A file is untrusted
input: its length and checksum are verified before any field is believed (so a damaged
fingerprint reads as corrupt, not as another model's file), every field is checked against
limits and the model before anything is allocated from it, and the decoder is the unchanged
``model.decompress``, whose output must have the size the header implies. The checksum
catches damage, not forgery: CompressAI's rANS decoder does not bounds-check its strings, so a
crafted file with a valid CRC can still make it read past them.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import torch

from . import codec
from .errors import SgafastError
from .images import STRIDE

MAGIC = b"SGAF"
VERSION = 2
HEADER = struct.Struct("<4sBBHHIIQIII")
CRC_OFFSET = HEADER.size - 4  # the CRC is the header's last field
ARCH_CODES = {"mbt2018-mean": 1, "bmshj2018-hyperprior": 2}
MAX_PIXELS = 1 << 28  # 16384 x 16384: larger headers are refused
# CompressAI's rANS coder writes 32-bit words and ends every string with its 8-byte state.
RANS_WORD, RANS_MIN_BYTES = 4, 8


@dataclasses.dataclass(frozen=True)
class Header:
    architecture: str
    n: int
    m: int
    height: int
    width: int
    fingerprint: int

    @property
    def z_shape(self) -> tuple[int, int]:
        return (-(-self.height // STRIDE), -(-self.width // STRIDE))


def header_for(model, height: int, width: int) -> Header:
    from .models import latent_channels

    n, m = latent_channels(model.net)
    return Header(model.architecture, n, m, height, width, model.fingerprint)


def checksum(data: bytes) -> int:
    """CRC-32 of a whole ``.bin`` except the CRC field itself: header fields, then strings."""
    view = memoryview(data)
    return zlib.crc32(view[HEADER.size:], zlib.crc32(view[:CRC_OFFSET]))


def encode(model, y: torch.Tensor, z: torch.Tensor, height: int, width: int) -> bytes:
    """Entropy-code the hard version of refined latents (batch of one) into a ``.bin``."""
    net = model.net
    with torch.no_grad():
        eb, gc = net.entropy_bottleneck, net.gaussian_conditional
        z_strings = eb.compress(z)
        z_hat = eb.decompress(z_strings, z.shape[-2:])
        scales, means = codec.hyper_params(net, z_hat)
        y_strings = gc.compress(y, gc.build_indexes(scales), means=means)
    h = header_for(model, height, width)
    payload = z_strings[0] + y_strings[0]
    unsigned = HEADER.pack(MAGIC, VERSION, ARCH_CODES[h.architecture], h.n, h.m, h.height,
                           h.width, h.fingerprint, len(z_strings[0]), len(y_strings[0]), 0)
    data = bytearray(unsigned + payload)
    struct.pack_into("<I", data, CRC_OFFSET, checksum(data))
    return bytes(data)


def parse(data: bytes, source: str = "bitstream") -> tuple[Header, bytes, bytes]:
    """Validate a ``.bin`` and split it into (header, z string, y string).

    Integrity (length, checksum) is checked before any field is interpreted, so a flipped bit
    anywhere after the version byte is reported as corruption.
    """
    if len(data) < HEADER.size:
        raise SgafastError(f"{source}: {len(data)} bytes is too short for an sgafast bitstream")
    magic, version, arch, n, m, height, width, fp, z_len, y_len, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SgafastError(f"{source}: not an sgafast bitstream (bad magic {magic!r})")
    if version != VERSION:
        # checked before the CRC: another version may checksum differently
        raise SgafastError(f"{source}: bitstream version {version} is not supported (this "
                           f"sgafast reads version {VERSION}); the file is corrupt or was "
                           f"written by another sgafast release, re-encode it with this one")
    if HEADER.size + z_len + y_len != len(data):
        raise SgafastError(f"{source}: truncated or corrupt (header announces "
                           f"{HEADER.size + z_len + y_len} bytes, file has {len(data)})")
    if checksum(data) != crc:
        raise SgafastError(f"{source}: corrupt (checksum mismatch); the file was damaged after "
                           f"it was written, re-encode the image")
    names = {code: name for name, code in ARCH_CODES.items()}
    if arch not in names:
        raise SgafastError(f"{source}: unknown architecture code {arch}")
    _check_sizes(source, n, m, height, width, z_len, y_len)
    payload = data[HEADER.size:]
    return Header(names[arch], n, m, height, width, fp), payload[:z_len], payload[z_len:]


def _check_sizes(source: str, n: int, m: int, height: int, width: int, z_len: int,
                 y_len: int) -> None:
    """Refuse a checksummed header whose sizes no sgafast encoder writes (a crafted file)."""
    if not (1 <= height and 1 <= width and height * width <= MAX_PIXELS and n and m):
        raise SgafastError(f"{source}: invalid header (image {height}x{width}, N={n}, M={m}; "
                           f"at most {MAX_PIXELS} pixels and nonzero N, M are allowed)")
    for name, length in (("z", z_len), ("y", y_len)):
        if length < RANS_MIN_BYTES or length % RANS_WORD:
            raise SgafastError(f"{source}: invalid header ({name} string of {length} bytes; "
                               f"rANS strings are whole 4-byte words, at least 8 bytes)")


def decode(model, data: bytes, source: str = "bitstream") -> torch.Tensor:
    """Decode a ``.bin`` with the unchanged ``model.decompress``: a (1, 3, H, W) image in [0, 1]."""
    header, z_string, y_string = parse(data, source)
    expected = header_for(model, header.height, header.width)
    if (header.architecture, header.n, header.m, header.fingerprint) != (
            expected.architecture, expected.n, expected.m, expected.fingerprint):
        raise SgafastError(
            f"{source}: written with another model ({header.architecture}, N={header.n}, "
            f"M={header.m}, fingerprint {header.fingerprint:016x}) than {model.name} "
            f"({expected.architecture}, N={expected.n}, M={expected.m}, fingerprint "
            f"{expected.fingerprint:016x}); pass the model it was encoded with to --model")
    device = next(model.net.parameters()).device
    with torch.no_grad():
        out = model.net.decompress([[y_string], [z_string]], torch.Size(header.z_shape))
    x_hat = out["x_hat"].to(device)
    return _crop_to_header(x_hat, header, source)


def _crop_to_header(x_hat: torch.Tensor, header: Header, source: str) -> torch.Tensor:
    """The image area of a padded reconstruction, which must be exactly z shape x stride."""
    padded = tuple(x_hat.shape[-2:])
    expected = tuple(STRIDE * side for side in header.z_shape)
    if padded != expected:
        raise SgafastError(
            f"{source}: the model decoded a {padded[0]}x{padded[1]} image where the header's "
            f"{header.height}x{header.width} image (z {header.z_shape[0]}x{header.z_shape[1]}) "
            f"needs {expected[0]}x{expected[1]}; the model's stride is not {STRIDE}, decode "
            f"with the model the file was encoded with")
    top, left = (padded[0] - header.height) // 2, (padded[1] - header.width) // 2
    return x_hat[..., top:top + header.height, left:left + header.width]
