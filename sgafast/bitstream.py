"""The ``.bin`` file: a 38-byte header and the model's own entropy-coded strings for one image.

Layout (little-endian)::

    offset size  field
    0      4     magic b"SGAF"
    4      1     format version (2)
    5      1     architecture (ARCH_CODES: 1 = mbt2018-mean, 2 = bmshj2018-hyperprior, ...)
    6      2     N                                  8   2  M   (the model's sizes)
    10     4     image height                       14  4  image width
    18     8     model fingerprint (first 8 bytes of SHA-256 of the weights)
    26     4     hyper-latent string length (0 without a hyperprior)
    30     4     latent part length
    34     4     CRC-32 of bytes 0-33 followed by everything after the header
    38     ...   the hyper-latent (z) string, then the latent part

The latent part is y's string. Where the model's ``compress()`` writes several strings for y
(checkerboard passes, ELIC's channel groups: ``Family.strings_per_image``), the part starts
with the lengths of all but the last as 4-byte integers, then the strings in the coder's
order. Files of the two hyperprior architectures are byte-identical to those of earlier
releases of version 2.

Version 1 had the same layout with a CRC of the strings only, so a flipped header bit went
unnoticed; version 2 files are refused by version 1 readers and vice versa.

The latent shapes follow from the image size and the model, so they are not stored. A file is
untrusted input: its length and checksum are verified before any field is believed (so a
damaged fingerprint reads as corrupt, not as another model's file), every field is checked
against limits and the model before anything is allocated from it, and the decoder is the
unchanged ``model.decompress``, whose output must have the size the header implies. The
checksum catches damage, not forgery: CompressAI's rANS decoder does not bounds-check its
strings, so a crafted file with a valid CRC can still make it read past them.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import torch

from . import families
from .errors import SgafastError
from .images import Geometry
from .models import as_model

MAGIC = b"SGAF"
VERSION = 2
HEADER = struct.Struct("<4sBBHHIIQIII")
CRC_OFFSET = HEADER.size - 4  # the CRC is the header's last field
ARCH_CODES = {"mbt2018-mean": 1, "bmshj2018-hyperprior": 2, "bmshj2018-factorized": 3,
              "bmshj2018-factorized-relu": 4, "mbt2018": 5, "cheng2020-anchor": 6,
              "cheng2020-attn": 7, "cheng2020-anchor-checkerboard": 8, "elic2022-official": 9,
              "elic2022-chandelier": 10}
LENGTH = struct.Struct("<I")
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
    def geometry(self) -> Geometry:
        return Geometry(self.height, self.width)


def header_for(model, height: int, width: int) -> Header:
    dims = families.dims_of(model.net)
    return Header(model.architecture, dims["N"], dims["M"], height, width, model.fingerprint)


def checksum(data: bytes) -> int:
    """CRC-32 of a whole ``.bin`` except the CRC field itself: header fields, then strings."""
    view = memoryview(data)
    return zlib.crc32(view[HEADER.size:], zlib.crc32(view[:CRC_OFFSET]))


def encode(model, latents, geometry: Geometry) -> bytes:
    """Entropy-code the hard version of refined latents (batch of one) into a ``.bin``, with the
    model's own ``compress()``."""
    model = as_model(model)
    with torch.no_grad():
        strings = model.family.compress(latents)
    hyper = strings.pop(0) if model.family.hyper else b""
    lengths = b"".join(LENGTH.pack(len(s)) for s in strings[:-1])
    latent_part = lengths + b"".join(strings)
    h = header_for(model, geometry.height, geometry.width)
    unsigned = HEADER.pack(MAGIC, VERSION, ARCH_CODES[h.architecture], h.n, h.m, h.height,
                           h.width, h.fingerprint, len(hyper), len(latent_part), 0)
    data = bytearray(unsigned + hyper + latent_part)
    struct.pack_into("<I", data, CRC_OFFSET, checksum(data))
    return bytes(data)


def parse(data: bytes, source: str = "bitstream") -> tuple[Header, bytes, bytes]:
    """Validate a ``.bin`` and split it into (header, hyper-latent string, latent part).

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
    _check_sizes(source, n, m, height, width, families.ARCHITECTURES[names[arch]].hyper, z_len,
                 y_len)
    payload = data[HEADER.size:]
    return Header(names[arch], n, m, height, width, fp), payload[:z_len], payload[z_len:]


def _check_sizes(source: str, n: int, m: int, height: int, width: int, hyper: bool,
                 z_len: int, y_len: int) -> None:
    """Refuse a checksummed header whose sizes no sgafast encoder writes (a crafted file)."""
    if not (1 <= height and 1 <= width and height * width <= MAX_PIXELS and n and m):
        raise SgafastError(f"{source}: invalid header (image {height}x{width}, N={n}, M={m}; "
                           f"at most {MAX_PIXELS} pixels and nonzero N, M are allowed)")
    if not hyper and z_len:
        raise SgafastError(f"{source}: invalid header (a hyper-latent string of {z_len} bytes "
                           "for a model without a hyperprior)")
    for name, length in (("z", z_len if hyper else RANS_MIN_BYTES), ("y", y_len)):
        _check_string(source, name, length)


def _check_string(source: str, name: str, length: int) -> None:
    if length < RANS_MIN_BYTES or length % RANS_WORD:
        raise SgafastError(f"{source}: invalid header ({name} string of {length} bytes; "
                           f"rANS strings are whole 4-byte words, at least 8 bytes)")


def split_latent_part(part: bytes, count: int, source: str) -> list[bytes]:
    """The ``count`` strings of a latent part (see the module doc), each checked."""
    table = LENGTH.size * (count - 1)
    if len(part) < table:
        raise SgafastError(f"{source}: invalid latent part ({len(part)} bytes for a table of "
                           f"{count - 1} lengths)")
    lengths = [LENGTH.unpack_from(part, LENGTH.size * i)[0] for i in range(count - 1)]
    lengths.append(len(part) - table - sum(lengths))
    strings, offset = [], table
    for i, length in enumerate(lengths):
        _check_string(source, f"y{i}", length)
        strings.append(part[offset:offset + length])
        offset += length
    return strings


def _checked(model, data: bytes, source: str) -> tuple[Header, list[bytes]]:
    """The header and the strings (the ``.bin``'s order) of a file checked against ``model``."""
    header, hyper, latent_part = parse(data, source)
    expected = header_for(model, header.height, header.width)
    if (header.architecture, header.n, header.m, header.fingerprint) != (
            expected.architecture, expected.n, expected.m, expected.fingerprint):
        raise SgafastError(
            f"{source}: written with another model ({header.architecture}, N={header.n}, "
            f"M={header.m}, fingerprint {header.fingerprint:016x}) than {model.name} "
            f"({expected.architecture}, N={expected.n}, M={expected.m}, fingerprint "
            f"{expected.fingerprint:016x}); pass the model it was encoded with to --model")
    family = model.family
    strings = split_latent_part(latent_part, family.strings_per_image() - family.hyper, source)
    return header, [hyper] * family.hyper + strings


def decompress_args(model, data: bytes, source: str = "bitstream"):
    """(strings, shape) of a checked ``.bin``: what CompressAI's own ``model.net.decompress``
    takes, for decoding without sgafast's decoder (its output is the padded image)."""
    model = as_model(model)
    header, strings = _checked(model, data, source)
    return model.family.decompress_args(strings, header.geometry.latent_size)


def decode(model, data: bytes, source: str = "bitstream") -> torch.Tensor:
    """Decode a ``.bin`` with the unchanged ``model.decompress``: a (1, 3, H, W) image in [0, 1]."""
    model = as_model(model)
    header, strings = _checked(model, data, source)
    geometry = header.geometry
    device = next(model.net.parameters()).device
    with torch.no_grad():
        x_hat = model.family.decompress(strings, geometry.latent_size)
    padded = tuple(x_hat.shape[-2:])
    if padded != geometry.padded_size:
        raise SgafastError(
            f"{source}: the model decoded a {padded[0]}x{padded[1]} image where the header's "
            f"{header.height}x{header.width} image needs {geometry.padded_size[0]}x"
            f"{geometry.padded_size[1]}; decode with the model the file was encoded with")
    return geometry.unpad(x_hat.to(device))
