"""The ``.bin`` file: a 38-byte header and CompressAI's entropy-coded strings for one image.

Layout (little-endian)::

    offset size  field
    0      4     magic b"SGAF"
    4      1     format version (1)
    5      1     architecture (1 = mbt2018-mean, 2 = bmshj2018-hyperprior)
    6      2     N (hyper-latent channels)          8   2  M (latent channels)
    10     4     image height                       14  4  image width
    18     8     model fingerprint (first 8 bytes of SHA-256 of the weights)
    26     4     z string length                    30  4  y string length
    34     4     CRC-32 of everything after the header
    38     ...   z string, then y string

The latent shapes follow from the image size, so they are not stored. A file is untrusted
input: every field is checked against the file's length and the model before anything is
allocated from it; the decoder is the unchanged ``model.decompress``.
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
VERSION = 1
HEADER = struct.Struct("<4sBBHHIIQIII")
ARCH_CODES = {"mbt2018-mean": 1, "bmshj2018-hyperprior": 2}
MAX_PIXELS = 1 << 28  # 16384 x 16384: larger headers are rejected as corrupt


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
    return HEADER.pack(MAGIC, VERSION, ARCH_CODES[h.architecture], h.n, h.m, h.height, h.width,
                       h.fingerprint, len(z_strings[0]), len(y_strings[0]),
                       zlib.crc32(payload)) + payload


def parse(data: bytes, source: str = "bitstream") -> tuple[Header, bytes, bytes]:
    """Validate a ``.bin`` and split it into (header, z string, y string)."""
    if len(data) < HEADER.size:
        raise SgafastError(f"{source}: {len(data)} bytes is too short for an sgafast bitstream")
    magic, version, arch, n, m, height, width, fp, z_len, y_len, crc = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SgafastError(f"{source}: not an sgafast bitstream (bad magic {magic!r})")
    if version != VERSION:
        raise SgafastError(f"{source}: bitstream version {version} is not supported "
                           f"(this sgafast reads version {VERSION})")
    names = {code: name for name, code in ARCH_CODES.items()}
    if arch not in names:
        raise SgafastError(f"{source}: unknown architecture code {arch}")
    if not (1 <= height and 1 <= width and height * width <= MAX_PIXELS and n and m):
        raise SgafastError(f"{source}: corrupt header (image {height}x{width}, N={n}, M={m})")
    if HEADER.size + z_len + y_len != len(data):
        raise SgafastError(f"{source}: truncated or corrupt (header announces "
                           f"{HEADER.size + z_len + y_len} bytes, file has {len(data)})")
    payload = data[HEADER.size:]
    if zlib.crc32(payload) != crc:
        raise SgafastError(f"{source}: corrupt (checksum mismatch)")
    header = Header(names[arch], n, m, height, width, fp)
    return header, payload[:z_len], payload[z_len:]


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
    padded_h, padded_w = x_hat.shape[-2:]
    top, left = (padded_h - header.height) // 2, (padded_w - header.width) // 2
    return x_hat[..., top:top + header.height, left:left + header.width]
