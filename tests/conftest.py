"""Shared fixtures; on a machine without CUDA, Triton kernels run in its CPU interpreter."""

import os

import torch

if not torch.cuda.is_available():
    # must be set before any @triton.jit function runs
    os.environ.setdefault("TRITON_INTERPRET", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

BUNDLED_IMAGES = Path(__file__).resolve().parents[1] / "sgafast" / "data" / "images"
BUNDLED = sorted(BUNDLED_IMAGES.glob("*.png"))  # the two bundled 256² Kodak crops
# the learning rate of the tests that compare two refinements that differ in float rounding only
# (a batch against its images alone, the kernels against the reference): Adam turns a
# convolution's last-bit noise in a near-zero gradient into up to one step, so a small
# step keeps that below their tolerance, while a broken batch or kernel moves every latent
EQUALITY_LR = 5e-3


@pytest.fixture(scope="session")
def default_model():
    import sgafast

    return sgafast.load_model("default")


@pytest.fixture(scope="session")
def kodak_crops():
    """Two real 64x64 Kodak crops (from the bundled images), as a (2, 3, 64, 64) batch."""
    from sgafast.images import read_image

    return torch.stack([read_image(p)[:, 96:160, 96:160] for p in BUNDLED])
