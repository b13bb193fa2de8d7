"""Base codecs: save and load the CompressAI models that sgafast refines.

A model is named by ``default`` (or another bundled name), by a checkpoint path (an sgafast
model file, or a plain CompressAI state dict whose architecture is inferred from its keys and
shapes), or by a CompressAI zoo name ``ARCH:QUALITY[:METRIC]``. The architectures are those of
``sgafast.families``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path

import torch

from . import families
from .errors import SgafastError
from .io import atomic_torch_save

MODEL_FORMAT = "sgafast-model"
MODEL_FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "models"
ALIASES = {"default": "q3"}  # the default is the ladder point at lambda = 0.0067

# Buffers that update(force=True) rebuilds from the weights: never stored, never fingerprinted.
DERIVED_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")
# CompressAI's MSE-trained zoo: lambda per quality 1..8 (docs/method.md §7).
ZOO_LAMBDAS = (0.0018, 0.0035, 0.0067, 0.0130, 0.0250, 0.0483, 0.0932, 0.18)
# and its MS-SSIM-trained zoo, lambda weighing 1 - MS-SSIM (CompressAI's docs, zoo: training)
ZOO_MS_SSIM_LAMBDAS = (2.40, 4.58, 8.73, 16.64, 31.73, 60.50, 115.37, 220.00)
ZOO_METRICS = ("mse", "ms-ssim")


@dataclasses.dataclass
class BaseModel:
    """A loaded codec with what refinement needs to know about it."""

    net: torch.nn.Module
    name: str
    architecture: str
    lmbda: float | None
    distortion: str = "mse"  # what its training lambda weighs (sgafast.codec.DISTORTIONS)

    @functools.cached_property
    def family(self) -> families.Family:
        """The model seen as latents to refine (sgafast.families)."""
        return families.family_of(self.net)

    @functools.cached_property
    def fingerprint(self) -> int:
        """64-bit identity of the weights, written into every bitstream."""
        return weights_fingerprint(self.net)

    def describe(self) -> dict:
        return {"name": self.name, "architecture": self.architecture,
                **families.dims_of(self.net), "lmbda": self.lmbda,
                "distortion": self.distortion}


def as_model(model, lmbda: float | None = None) -> BaseModel:
    """A :class:`BaseModel` as given, or a plain CompressAI net of a supported architecture seen
    as one (its mode and its parameters are left as they are)."""
    if isinstance(model, BaseModel):
        return model
    return BaseModel(model, type(model).__name__, families.architecture_of(model), lmbda)


def check_coder_ready(net: torch.nn.Module) -> None:
    """Refuse a net whose entropy coders have no CDF tables yet: its ``update()`` was not called."""
    from compressai.entropy_models import EntropyModel

    for name, module in net.named_modules():
        if isinstance(module, EntropyModel) and module._quantized_cdf.numel() == 0:
            raise SgafastError(f"the net's entropy model {name or type(module).__name__} has no "
                               "CDF tables: call net.update(force=True) before refining it, as "
                               "CompressAI requires before compress()")


def weights_fingerprint(net: torch.nn.Module) -> int:
    """First 8 bytes of SHA-256 over the weights (derived buffers such as CDF tables excluded)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        if not name.endswith(DERIVED_BUFFERS):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little")


def save(path: str | os.PathLike, net: torch.nn.Module, *, lmbda: float, distortion: str = "mse",
         dtype=torch.float16, extra: dict | None = None) -> None:
    """Write a model file: its training lambda and the distortion it weighs, parameters in
    ``dtype``, buffers as they are (CDF tables dropped, they are rebuilt on load). Buffers stay
    fp32: CompressAI's bounds (a 1e-9 likelihood bound, GDN's 1.5e-11 pedestal) underflow to 0
    in fp16, and a zero likelihood bound makes the rate infinite on rare latents."""
    parameters = {name for name, _ in net.named_parameters()}
    state = {
        k: (v.to(dtype) if k in parameters else v)
        for k, v in net.state_dict().items()
        if not k.endswith(DERIVED_BUFFERS)
    }
    payload = {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION,
               "architecture": families.architecture_of(net), **families.dims_of(net),
               "lmbda": float(lmbda), "distortion": distortion,
               "state_dict": state, **(extra or {})}
    atomic_torch_save(payload, path)


def _read_checkpoint(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        # never pass on torch's advice to turn weights_only off: that would run the file's code
        raise SgafastError(f"{path}: not a model checkpoint sgafast can read (a PyTorch file "
                           f"of tensors is expected; {type(exc).__name__})") from exc
    if not isinstance(payload, dict):
        raise SgafastError(f"{path}: a checkpoint must hold a dict, found {type(payload).__name__}")
    return payload


def _load_file(path: Path, arch: str | None = None) -> BaseModel:
    payload = _read_checkpoint(path)
    if payload.get("format") == MODEL_FORMAT:
        if payload.get("version") != MODEL_FORMAT_VERSION:
            raise SgafastError(f"{path}: model format version {payload.get('version')} is not "
                               f"supported (this sgafast reads version {MODEL_FORMAT_VERSION})")
        absent = [k for k in ("architecture", "N", "M", "state_dict") if k not in payload]
        if absent:
            raise SgafastError(f"{path}: an sgafast model file without {', '.join(absent)}; "
                               "it is damaged: save it again with sgafast train")
        state, lmbda = payload["state_dict"], payload.get("lmbda")
        distortion = payload.get("distortion", "mse")
        file_arch = payload["architecture"]
        if arch is not None and arch != file_arch:
            raise SgafastError(f"{path}: a {file_arch} model, not {arch}; drop --arch or pass "
                               f"--arch {file_arch}")
        arch = file_arch
        net = families.build(arch, {k: payload[k] for k in ("N", "M", "groups") if k in payload})
    else:  # a plain CompressAI state dict, possibly wrapped as {"state_dict": ...}
        state = payload.get("state_dict", payload)
        if not isinstance(state, dict):
            raise SgafastError(f"{path}: its state_dict is a {type(state).__name__}, not a dict")
        net, arch = _net_from_plain_state(path, state, arch)
        lmbda, distortion = None, "mse"
    return BaseModel(_with_weights(net, state, path, arch), str(path), arch, lmbda, distortion)


def _with_weights(net: torch.nn.Module, state, path, arch: str) -> torch.nn.Module:
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
    return net


def _net_from_plain_state(path: Path, state: dict, arch: str | None
                          ) -> tuple[torch.nn.Module, str]:
    """The architecture and sizes a plain state dict's keys and shapes fit, as CompressAI's
    ``from_state_dict`` reads them; ``arch`` settles an ambiguous one."""
    from compressai.zoo import load_state_dict as upgrade_keys  # older key names, renamed

    try:
        state = upgrade_keys(dict(state))
    except Exception:  # an unrelated dict: the inference below says what is wrong
        pass
    candidates = families.infer(state)
    if arch is not None:
        if arch not in families.ARCHITECTURES:
            raise SgafastError(f"--arch {arch}: unknown; choose one of "
                               f"{', '.join(families.ARCHITECTURES)}")
        fitting = [c for c in candidates if c[0] == arch]
        if not fitting:
            others = ", ".join(name for name, _ in candidates) or "no supported architecture"
            raise SgafastError(f"{path}: not a state dict of {arch}: its keys and shapes fit "
                               f"{others}")
        candidates = fitting
    if not candidates:
        raise SgafastError(f"{path}: not a state dict of a supported architecture (its keys "
                           f"and shapes fit none); supported: {', '.join(families.ARCHITECTURES)}")
    if len(candidates) > 1:
        names = ", ".join(name for name, _ in candidates)
        raise SgafastError(f"{path}: its weights fit {names}; say which with --arch")
    name, dims = candidates[0]
    return families.build(name, dims), name


def _load_zoo(spec: str) -> BaseModel:
    """``ARCH:QUALITY[:METRIC]`` through CompressAI's zoo (torch hub's cache, or a download)."""
    from compressai.zoo import image as zoo

    arch, quality, *rest = spec.split(":") + [""]
    metric = rest[0] or "mse"
    if arch not in zoo.model_urls:
        raise SgafastError(f"{spec}: {arch!r} has no pretrained weights in CompressAI's zoo; "
                           f"zoo architectures: {', '.join(zoo.model_urls)}")
    if metric not in ZOO_METRICS or len(rest) > 2:
        raise SgafastError(f"{spec}: write ARCH:QUALITY or ARCH:QUALITY:METRIC with METRIC one "
                           f"of {', '.join(ZOO_METRICS)}")
    qualities = sorted(zoo.model_urls[arch][metric])
    if not quality.isdigit() or int(quality) not in qualities:
        raise SgafastError(f"{spec}: quality must be one of {', '.join(map(str, qualities))}")
    q = int(quality)
    url = zoo.model_urls[arch][metric][q]
    try:
        net = zoo._load_model(arch, metric, q, pretrained=True, progress=False)
    except Exception as exc:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
        raise SgafastError(
            f"{spec}: could not load CompressAI's pretrained weights ({exc}). They are "
            f"downloaded from {url} into torch hub's cache; on an offline machine put that "
            f"file at {cached}, or pass a checkpoint's path to --model") from exc
    return BaseModel(net, spec, arch, *zoo_training(metric, q))


def zoo_training(metric: str, quality: int) -> tuple[float, str]:
    """The lambda a CompressAI zoo model of ``metric`` and ``quality`` was trained with, and
    the distortion it weighs (255^2 * MSE, or 1 - MS-SSIM)."""
    lambdas = ZOO_LAMBDAS if metric == "mse" else ZOO_MS_SSIM_LAMBDAS
    return lambdas[quality - 1], metric


def bundled_models() -> dict[str, Path]:
    """Bundled model files by name (q2..q5, the ladder of CompressAI's qualities 2-5)."""
    return {p.stem: p for p in sorted(BUNDLED_DIR.glob("*.pt"))}


def ladder() -> list[str]:
    """Names of the bundled ladder, in ascending lambda (= ascending rate)."""
    return sorted(n for n in bundled_models() if n.startswith("q"))


def load(spec: str | os.PathLike = "default", device: str | torch.device = "cpu",
         arch: str | None = None) -> BaseModel:
    """Load a base model by bundled name, file path or ``ARCH:QUALITY[:METRIC]``, ready to
    compress; ``arch`` names the architecture of a file whose weights fit several."""
    spec_str = str(spec)
    bundled = bundled_models()
    name = ALIASES.get(spec_str, spec_str)
    if name in bundled:
        model = _load_file(bundled[name], arch)
        model.name = name
    elif Path(spec_str).is_file():
        model = _load_file(Path(spec_str), arch)
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
