"""Base codecs: build, save and load the hyperprior models that sgafast refines.

A model is named by ``default`` (or another bundled name), by a checkpoint path, or by a
CompressAI zoo name ``ARCH:QUALITY``. Only the two hyperprior architectures whose latents are
coded in parallel are supported; anything else is refused with a message saying why.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import torch
from compressai.models import MeanScaleHyperprior, ScaleHyperprior

from .errors import SgafastError
from .io import atomic_torch_save

MODEL_FORMAT = "sgafast-model"
MODEL_FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "models"
ALIASES = {"default": "q3"}  # the default is the ladder point at lambda = 0.0067

ARCHITECTURES = {
    "mbt2018-mean": MeanScaleHyperprior,
    "bmshj2018-hyperprior": ScaleHyperprior,
}
# Buffers that update(force=True) rebuilds from the weights: never stored, never fingerprinted.
DERIVED_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
# CompressAI's MSE-trained zoo: lambda per quality 1..8 (SPEC section 7).
ZOO_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.18)
UNSUPPORTED_HINT = (
    "sgafast refines hyperprior models whose latents are coded in parallel "
    "(mbt2018-mean, bmshj2018-hyperprior); autoregressive context models (mbt2018, "
    "cheng2020-*) need a raster-order evaluation that is not implemented"
)


@dataclasses.dataclass
class BaseModel:
    """A loaded codec with what refinement needs to know about it."""

    net: torch.nn.Module
    name: str
    architecture: str
    lmbda: float | None

    @property
    def has_means(self) -> bool:
        return isinstance(self.net, MeanScaleHyperprior)

    @functools.cached_property
    def fingerprint(self) -> int:
        """64-bit identity of the weights, written into every bitstream."""
        return weights_fingerprint(self.net)

    def describe(self) -> dict:
        n, m = latent_channels(self.net)
        return {"name": self.name, "architecture": self.architecture, "N": n, "M": m,
                "lmbda": self.lmbda}


def weights_fingerprint(net: torch.nn.Module) -> int:
    """First 8 bytes of SHA-256 over the weights (derived buffers such as CDF tables excluded)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        if not name.endswith(DERIVED_BUFFERS):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little")


def latent_channels(net: torch.nn.Module) -> tuple[int, int]:
    """(N, M) of a hyperprior: hyper-latent channels and latent channels."""
    return net.entropy_bottleneck.channels, net.g_a[-1].out_channels


def architecture_of(net: torch.nn.Module) -> str:
    """The zoo name of a supported network, or a clear refusal for anything else."""
    for name, cls in ARCHITECTURES.items():
        if type(net) is cls:
            return name
    raise SgafastError(f"{type(net).__name__} is not supported: {UNSUPPORTED_HINT}")


def build(architecture: str, n: int, m: int) -> torch.nn.Module:
    """A freshly initialised network of a supported architecture."""
    if architecture not in ARCHITECTURES:
        raise SgafastError(f"unknown architecture {architecture!r}: {UNSUPPORTED_HINT}")
    return ARCHITECTURES[architecture](n, m)


def save(path: str | os.PathLike, net: torch.nn.Module, *, lmbda: float, dtype=torch.float16,
         extra: dict | None = None) -> None:
    """Write a model file: parameters in ``dtype``, buffers as they are (CDF tables dropped,
    they are rebuilt on load). Buffers stay fp32: CompressAI's bounds (a 1e-9 likelihood bound,
    GDN's 1.5e-11 pedestal) underflow to 0 in fp16, and a zero likelihood bound makes the rate
    infinite on rare latents."""
    n, m = latent_channels(net)
    parameters = {name for name, _ in net.named_parameters()}
    state = {
        k: (v.to(dtype) if k in parameters else v)
        for k, v in net.state_dict().items()
        if not k.endswith(DERIVED_BUFFERS)
    }
    payload = {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION,
               "architecture": architecture_of(net), "N": n, "M": m, "lmbda": float(lmbda),
               "state_dict": state, **(extra or {})}
    atomic_torch_save(payload, path)


def _load_file(path: Path) -> BaseModel:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        # never pass on torch's advice to turn weights_only off: that would run the file's code
        raise SgafastError(f"{path}: not a model checkpoint sgafast can read (a PyTorch file "
                           f"of tensors is expected; {type(exc).__name__})") from exc
    if not isinstance(payload, dict):
        raise SgafastError(f"{path}: a checkpoint must hold a dict, found {type(payload).__name__}")
    if payload.get("format") == MODEL_FORMAT:
        if payload.get("version") != MODEL_FORMAT_VERSION:
            raise SgafastError(f"{path}: model format version {payload.get('version')} is not "
                               f"supported (this sgafast reads version {MODEL_FORMAT_VERSION})")
        absent = [k for k in ("architecture", "N", "M", "state_dict") if k not in payload]
        if absent:
            raise SgafastError(f"{path}: an sgafast model file without {', '.join(absent)}; "
                               "it is damaged: save it again with sgafast train")
        net = build(payload["architecture"], payload["N"], payload["M"])
        state, lmbda, arch = payload["state_dict"], payload.get("lmbda"), payload["architecture"]
    else:  # a plain CompressAI state dict, possibly wrapped as {"state_dict": ...}
        state = payload.get("state_dict", payload)
        net, arch = _net_from_plain_state(path, state)
        lmbda = None
    if not isinstance(state, dict):
        raise SgafastError(f"{path}: its state_dict is a {type(state).__name__}, not a dict")
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()
             if isinstance(v, torch.Tensor) and not k.endswith(DERIVED_BUFFERS)}
    try:  # nn.Module's loader: CompressAI's insists on CDF tables, which update() rebuilds
        torch.nn.Module.load_state_dict(net, state, strict=False)
    except RuntimeError as exc:
        raise SgafastError(f"{path}: weights do not fit the {arch} architecture ({exc})") from exc
    missing = [k for k in net.state_dict() if k not in state and not k.endswith(DERIVED_BUFFERS)]
    if missing:
        raise SgafastError(f"{path}: checkpoint lacks {len(missing)} weights, e.g. {missing[0]}")
    return BaseModel(net, str(path), arch, lmbda)


def _net_from_plain_state(path: Path, state: dict) -> tuple[torch.nn.Module, str]:
    keys = set(state)
    if any(k.startswith(("context_prediction", "entropy_parameters")) for k in keys):
        raise SgafastError(f"{path}: an autoregressive model. {UNSUPPORTED_HINT}")
    try:
        n = state["g_a.0.weight"].size(0)
        m = state["g_a.6.weight"].size(0)
        hs_out = state["h_s.4.weight"].size(0)  # the last conv of h_s: (out, in, k, k)
    except KeyError as exc:
        raise SgafastError(f"{path}: not a CompressAI hyperprior state dict "
                           f"(missing {exc}). {UNSUPPORTED_HINT}") from exc
    arch = "mbt2018-mean" if hs_out == 2 * m else "bmshj2018-hyperprior"
    return build(arch, n, m), arch


def _load_zoo(spec: str) -> BaseModel:
    from compressai.zoo import models as zoo

    arch, _, quality = spec.partition(":")
    if arch not in ARCHITECTURES:
        if arch in zoo:
            raise SgafastError(f"zoo model {arch!r} is not supported: {UNSUPPORTED_HINT}")
        raise SgafastError(f"unknown zoo architecture {arch!r}; supported: "
                           f"{', '.join(ARCHITECTURES)}")
    if not quality.isdigit() or not 1 <= int(quality) <= 8:
        raise SgafastError(f"{spec}: quality must be an integer from 1 to 8")
    q = int(quality)
    try:
        net = zoo[arch](quality=q, metric="mse", pretrained=True)
    except Exception as exc:
        raise SgafastError(
            f"{spec}: could not load CompressAI's pretrained weights ({exc}). They are "
            "downloaded from the internet into torch hub's cache; on an offline machine put "
            "the file there, or pass the checkpoint's path to --model") from exc
    return BaseModel(net, spec, arch, ZOO_LAMBDAS[q - 1])


def bundled_models() -> dict[str, Path]:
    """Bundled model files by name (q2..q5, the ladder of CompressAI's qualities 2-5)."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.pt"))}


def ladder() -> list[str]:
    """Names of the bundled ladder, in ascending lambda (= ascending rate)."""
    return sorted(n for n in bundled_models() if n.startswith("q"))


def load(spec: str | os.PathLike = "default", device: str | torch.device = "cpu") -> BaseModel:
    """Load a base model by bundled name, file path or ``ARCH:QUALITY``, ready to compress."""
    spec_str = str(spec)
    bundled = bundled_models()
    name = ALIASES.get(spec_str, spec_str)
    if name in bundled:
        model = _load_file(bundled[name])
        model.name = name
    elif Path(spec_str).is_file():
        model = _load_file(Path(spec_str))
    elif ":" in spec_str:
        model = _load_zoo(spec_str)
    else:
        raise SgafastError(f"model {spec_str!r}: no such file, bundled model "
                           f"({', '.join(bundled) or 'none'}) or ARCH:QUALITY zoo name")
    model.net = model.net.to(device).eval()
    for p in model.net.parameters():
        p.requires_grad_(False)
    model.net.update(force=True)
    return model
