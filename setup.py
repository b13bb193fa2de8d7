"""Packaging: the ``sgafast`` package with the top-level kernels/ folder mapped to sgafast.kernels."""

from setuptools import setup

setup(
    name="sgafast",
    version="0.1.0",
    description="Fast, faithful test-time latent refinement (SGA/SGA+) for CompressAI codecs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["sgafast", "sgafast.families", "sgafast.kernels", "sgafast.ops"],
    package_dir={"sgafast": "sgafast", "sgafast.kernels": "kernels"},
    package_data={"sgafast": ["data/models/*.pt", "data/models/*.md", "data/images/*.png"]},
    install_requires=[
        "torch>=2.4",
        "triton>=3.0",
        "compressai==1.2.8",
        "numpy",
        "pytorch-msssim",
        "bjontegaard",
        "tqdm",
        "matplotlib",
        "Pillow",
    ],
    extras_require={"test": ["pytest", "pytest-benchmark"]},
    entry_points={"console_scripts": ["sgafast=sgafast.cli:main"]},
)
