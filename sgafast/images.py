"""Reading images into tensors and padding them to the codec's stride, with clear errors."""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.transforms.functional import pil_to_tensor

from .errors import SgafastError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
STRIDE = 64  # the hyper-latents' total downsampling: images are padded to a multiple of it
LATENT_STRIDE = 16  # y's downsampling
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
EXIF_ORIENTATION, TIFF_BITS_PER_SAMPLE, TIFF_SAMPLE_FORMAT = 0x0112, 258, 339


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An RGB image as a (3, H, W) float tensor in [0, 1]; SgafastError naming the file if bad."""
    return read_image_with_notes(path)[0]


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: EXIF orientations 5-8 turn the image a quarter."""
    width, height = img.size
    return (height, width) if img.getexif().get(EXIF_ORIENTATION) in (5, 6, 7, 8) else (width,
                                                                                      height)


def read_image_with_notes(path: str | os.PathLike) -> tuple[torch.Tensor, dict]:
    """``read_image`` and what was done to the file's samples to get there.

    The notes have a key only when it applies: ``mode`` (PIL's mode, when not RGB), ``scaled``
    (the bit depth integer samples were divided by), ``exif_orientation`` (the EXIF value that
    was undone), ``alpha`` ("dropped") and ``clipped`` (samples outside the range were set to
    its ends).
    """
    try:
        with warnings.catch_warnings():
            # PIL only warns up to twice its pixel limit: both sides of it fail the same way
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                x, notes = _to_tensor(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SgafastError(f"{path}: refused as a possible decompression bomb ({exc}); "
                           f"downscale it or cut it into tiles of at most "
                           f"{Image.MAX_IMAGE_PIXELS} pixels") from exc
    except (OSError, UnidentifiedImageError, ValueError, EOFError) as exc:
        raise SgafastError(f"{path}: cannot read the image ({exc})") from exc
    if min(x.shape[-2:]) < 1:
        raise SgafastError(f"{path}: the image is empty")
    return x, notes


def _to_tensor(img: Image.Image) -> tuple[torch.Tensor, dict]:
    """Upright RGB samples of an opened image in [0, 1], with notes (see read_image_with_notes)."""
    notes = {} if img.mode == "RGB" else {"mode": img.mode}
    # read before exif_transpose, whose copy has no TIFF tags
    full_scale = _integer_full_scale(img, notes) if img.mode == "I" else None
    if img.has_transparency_data:
        notes["alpha"] = "dropped"
    orientation = img.getexif().get(EXIF_ORIENTATION)
    if orientation in range(2, 9):
        notes["exif_orientation"] = orientation
        img = ImageOps.exif_transpose(img)
    if img.mode in SIXTEEN_BIT_MODES:
        notes["scaled"] = "16-bit"
        return _gray(np.asarray(img, dtype=np.float64) / 0xFFFF, notes), notes
    if full_scale is not None:
        return _gray(np.asarray(img, dtype=np.float64) / full_scale, notes), notes
    if img.mode == "F":
        return _gray(np.asarray(img, dtype=np.float64), notes), notes
    # every 8-bit mode (L, P, LA, RGBA, CMYK, YCbCr, ...): PIL's conversion is exact for RGB
    return pil_to_tensor(img.convert("RGB")).float().div_(255), notes


def _integer_full_scale(img: Image.Image, notes: dict) -> int:
    """The largest sample value of a 32-bit integer image: from its TIFF tags, else 16-bit."""
    tags = getattr(img, "tag_v2", {})
    depth = tags.get(TIFF_BITS_PER_SAMPLE, (None,))
    depth = depth[0] if isinstance(depth, tuple) else depth
    if not isinstance(depth, int) or not 1 <= depth <= 32:
        notes["scaled"] = "16-bit (bit depth unknown, assumed)"
        return 0xFFFF
    signed = tags.get(TIFF_SAMPLE_FORMAT, (1,)) in (2, (2,))
    notes["scaled"] = f"{depth}-bit signed" if signed else f"{depth}-bit"
    return 2 ** (depth - signed) - 1


def _gray(samples: np.ndarray, notes: dict) -> torch.Tensor:
    """A 2-D array of values meant to lie in [0, 1] as 3 equal channels, clipped with a note."""
    if not ((samples >= 0) & (samples <= 1)).all():  # NaN fails both tests: it is clipped too
        notes["clipped"] = True
        samples = np.clip(np.nan_to_num(samples, nan=0.0), 0, 1)
    gray = torch.from_numpy(samples.astype(np.float32))
    return gray.expand(3, *gray.shape).contiguous()


def write_png(path: str | os.PathLike, x: torch.Tensor) -> None:
    """Write a (3, H, W) tensor in [0, 1] as an 8-bit PNG, atomically."""
    import io

    from .io import atomic_write_bytes

    arr = x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files below ``folder``, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """An image's size and how it is padded to the models' stride (and cropped back)."""

    height: int
    width: int

    @classmethod
    def of(cls, x: torch.Tensor) -> Geometry:
        return cls(*x.shape[-2:])

    @functools.cached_property
    def _paddings(self):
        return compute_padding(self.height, self.width, min_div=STRIDE)

    @property
    def num_pixels(self) -> int:
        return self.height * self.width

    @property
    def padded_size(self) -> tuple[int, int]:
        return -(-self.height // STRIDE) * STRIDE, -(-self.width // STRIDE) * STRIDE

    @property
    def latent_size(self) -> tuple[int, int]:
        """The (h, w) of y."""
        return tuple(side // LATENT_STRIDE for side in self.padded_size)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """A (B, 3, H, W) batch padded with zeros to a multiple of the stride."""
        return F.pad(x, self._paddings[0], mode="constant", value=0)

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """A padded batch cropped back to the image area."""
        return F.pad(x, self._paddings[1])


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window of a (..., H, W) tensor (smaller sides kept)."""
    h, w = x.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return x[..., top:top + size, left:left + size]


@dataclasses.dataclass(frozen=True)
class Canvas:
    """Images that share a padded size, each padded onto it as the codec pads it alone (zeros
    around the image, centred): what the transforms see. The distortion counts each image's own
    pixels (``mask``, ``num_pixels``), so no shape in the loss depends on an image's exact size."""

    x: torch.Tensor  # (B, 3, H, W) at the padded size
    geometries: tuple[Geometry, ...]

    @classmethod
    def of(cls, images) -> Canvas:
        """From a (B, 3, H, W) batch of one size, or a list of (3, H, W) or (1, 3, H, W) images
        of sizes that share a padded size."""
        if isinstance(images, torch.Tensor):
            batch = images if images.dim() == 4 else images[None]
            geometry = Geometry.of(batch)
            return cls(geometry.pad(batch), (geometry,) * batch.shape[0])
        batch = [image if image.dim() == 4 else image[None] for image in images]
        geometries = tuple(Geometry.of(image) for image in batch)
        if len({g.padded_size for g in geometries}) > 1:
            raise SgafastError("images of one batch must share a padded size (a multiple of "
                               f"{STRIDE}); got {sorted({g.padded_size for g in geometries})}")
        return cls(torch.cat([g.pad(image) for g, image in zip(geometries, batch)]), geometries)

    @functools.cached_property
    def mask(self) -> torch.Tensor:
        """(B, 1, H, W): 1 on each image's own pixels, 0 on its padding."""
        ones = self.x.new_ones(1, 1, 1, 1)
        return torch.cat([g.pad(ones.expand(1, 1, g.height, g.width)) for g in self.geometries])

    @functools.cached_property
    def num_pixels(self) -> torch.Tensor:
        """(B,) float32: each image's own pixel count."""
        return torch.tensor([g.num_pixels for g in self.geometries], dtype=torch.float32,
                            device=self.x.device)

    def image(self, b: int) -> torch.Tensor:
        """Image b as it was given, (1, 3, h, w)."""
        return self.geometries[b].unpad(self.x[b:b + 1])

    def to(self, device) -> Canvas:
        return Canvas(self.x.to(device), self.geometries)
