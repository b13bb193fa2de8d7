"""Training (or fine-tuning) a small base model of any supported architecture on random crops.

The recipe of docs/method.md §7: Adam 3e-4 dropping to 1e-4 for the last 20 % of steps, gradient
clipping at 1.0, and CompressAI's aux loss with its own Adam at 1e-3 so the entropy bottleneck's
medians are learned. The training state is saved next to the model file every few hundred steps,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch
from tqdm import tqdm

from . import families, models
from .errors import SgafastError
from .images import list_images, read_image
from .io import atomic_torch_save
from .metrics import MS_SSIM_MIN_SIDE
from .progress import on_terminal, say

DB_LABELS = {"mse": "psnr", "ms-ssim": "ms-ssim-db"}  # the quality shown while training


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one training run."""

    lmbda: float = 0.0067
    distortion: str = "mse"  # what lambda weighs: 255^2 * MSE, or 1 - MS-SSIM (ms-ssim)
    arch: str = "mbt2018-mean"
    n: int = 64
    m: int = 96
    groups: tuple[int, ...] | None = None  # ELIC's channel groups (None: CompressAI's default)
    crop: int = 128
    batch_size: int = 8
    steps: int = 15000
    lr: float = 3e-4
    lr_final: float = 1e-4
    aux_lr: float = 1e-3
    clip: float = 1.0
    save_every: int = 500
    seed: int = 0
    init: str | None = None  # a model whose weights start the matching layers (a fine-tune)


def state_path(model_path: str | os.PathLike) -> Path:
    """Where the resumable training state of ``model_path`` lives."""
    return Path(f"{model_path}.train-state")


class CropSampler:
    """Random crops with random flips from images held in memory as uint8."""

    def __init__(self, folder: str | os.PathLike, crop: int, generator: torch.Generator):
        paths = list_images(folder)
        if not paths:
            raise SgafastError(f"{folder}: no images found (looked for png/jpg/... files)")
        self.images = []
        for p in paths:
            x = read_image(p)
            if min(x.shape[-2:]) >= crop:
                self.images.append(x.mul(255).round().to(torch.uint8))
        if not self.images:
            raise SgafastError(f"{folder}: no image is at least {crop}x{crop} pixels")
        self.crop, self.generator = crop, generator

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.generator))

    def batch(self, size: int) -> torch.Tensor:
        crops = []
        for _ in range(size):
            x = self.images[self._randint(len(self.images))]
            top = self._randint(x.shape[1] - self.crop + 1)
            left = self._randint(x.shape[2] - self.crop + 1)
            x = x[:, top:top + self.crop, left:left + self.crop]
            if self._randint(2):
                x = x.flip(-1)
            crops.append(x)
        return torch.stack(crops).float().div_(255)


def _optimizers(net: torch.nn.Module, cfg: TrainConfig):
    main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    return torch.optim.Adam(main, lr=cfg.lr), torch.optim.Adam(aux, lr=cfg.aux_lr)


def rd_loss(net: torch.nn.Module, x: torch.Tensor, lmbda: float,
            distortion: str = "mse") -> tuple[torch.Tensor, dict]:
    """CompressAI's training loss (its ``RateDistortionLoss``) of the noisy latents:
    lambda * 255^2 * MSE + bpp, or lambda * (1 - MS-SSIM) + bpp; and the quality in dB."""
    from compressai.losses import RateDistortionLoss

    out = RateDistortionLoss(lmbda, metric=distortion)(net(x), x)
    error = out["mse_loss"] if distortion == "mse" else 1 - out["ms_ssim_loss"]
    db = -10 * math.log10(max(error.detach().item(), 1e-10))
    return out["loss"], {"bpp": out["bpp_loss"].detach().item(), "db": db}


def example_groups(m: int) -> list[int]:
    """ELIC's channel groups in the proportions 1, 1, 2, 4, 4 (8,8,16,32,32 for 96), summing
    to ``m``."""
    unit = max(1, m // 12)
    head = [unit, unit, 2 * unit, 4 * unit]
    return head + [m - sum(head)] if m > sum(head) else [m]


def check_groups(cfg: TrainConfig) -> None:
    """Refuse channel groups that cannot build ``cfg.arch``, saying what to pass instead."""
    if cfg.arch not in families.ChannelGroups.architectures:
        if cfg.groups:
            raise SgafastError(f"--groups: only ELIC (elic2022-*) has channel groups, not "
                               f"{cfg.arch}")
        return
    example = ",".join(map(str, example_groups(cfg.m)))
    if cfg.groups is None and cfg.m <= 128:
        raise SgafastError(f"{cfg.arch} with --M {cfg.m}: CompressAI's default channel groups "
                           f"(16,16,32,64,M-128) need M > 128; give --groups, channel counts "
                           f"summing to {cfg.m}, e.g. --groups {example}")
    if cfg.groups and sum(cfg.groups) != cfg.m:
        raise SgafastError(f"--groups {','.join(map(str, cfg.groups))} sums to "
                           f"{sum(cfg.groups)}, not --M {cfg.m}; e.g. --groups {example}")


def check_crop(cfg: TrainConfig) -> None:
    """Refuse crops too small for MS-SSIM's five scales when it is the distortion."""
    if cfg.distortion == "ms-ssim" and cfg.crop < MS_SSIM_MIN_SIDE:
        raise SgafastError(f"--crop {cfg.crop}: MS-SSIM's five scales need crops of at least "
                           f"{MS_SSIM_MIN_SIDE} pixels; give --crop 192 or more")


def initial_network(cfg: TrainConfig) -> torch.nn.Module:
    """A fresh network of ``cfg.arch``; with ``cfg.init``, every layer whose name and shape
    match starts from that model (all of them for the same architecture and sizes)."""
    check_groups(cfg)
    dims = {"N": cfg.n, "M": cfg.m}
    if cfg.groups:
        dims["groups"] = list(cfg.groups)
    net = families.build(cfg.arch, dims)
    if cfg.init:
        own = net.state_dict()
        source = models.load(cfg.init).net.state_dict()
        shared = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
        if not shared:
            raise SgafastError(f"--init {cfg.init}: no layer of it fits a {cfg.arch} with {dims}")
        torch.nn.Module.load_state_dict(net, shared, strict=False)
    return net


def train(image_dir: str | os.PathLike, output: str | os.PathLike, cfg: TrainConfig,
          resume: bool = False) -> int:
    """Train a model and write it to ``output`` (fp16 parameters, model format of models.py);
    the number of steps skipped because their loss or gradient was not finite."""
    check_crop(cfg)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    net = initial_network(cfg).train()
    opt, aux_opt = _optimizers(net, cfg)
    start = 0
    resume_file = state_path(output)
    if resume:
        if not resume_file.is_file():
            raise SgafastError(f"--resume: no training state at {resume_file}")
        state = torch.load(resume_file, map_location="cpu", weights_only=True)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
    sampler = CropSampler(image_dir, cfg.crop, generator)

    def checkpoint(step: int) -> None:
        atomic_torch_save({"net": net.state_dict(), "opt": opt.state_dict(),
                           "aux_opt": aux_opt.state_dict(), "generator": generator.get_state(),
                           "torch_rng": torch.get_rng_state(), "step": step,
                           "config": dataclasses.asdict(cfg)}, resume_file)
        models.save(output, net, lmbda=cfg.lmbda, distortion=cfg.distortion, extra={
            "training": {"steps": step, "crop": cfg.crop, "batch_size": cfg.batch_size,
            "data": str(image_dir), "init": cfg.init}})

    drop_at = math.floor(0.8 * cfg.steps)
    skipped = 0  # steps whose loss or gradient was not finite
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="train",
               dynamic_ncols=True, disable=not on_terminal())
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cfg.lr if step < drop_at else cfg.lr_final
        x = sampler.batch(cfg.batch_size)
        opt.zero_grad()
        loss, parts = rd_loss(net, x, cfg.lmbda, cfg.distortion)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        if torch.isfinite(loss) and torch.isfinite(norm):
            opt.step()
        else:  # seen when a fine-tune started from a model whose likelihood bound was 0
            skipped += 1
        aux_opt.zero_grad()
        net.aux_loss().backward()
        aux_opt.step()
        shown = {"loss": f"{loss.item():.3f}", "bpp": f"{parts['bpp']:.3f}",
                 DB_LABELS[cfg.distortion]: f"{parts['db']:.2f}",
                 "skipped": skipped}
        bar.set_postfix(shown)
        if (step + 1) % cfg.save_every == 0:
            checkpoint(step + 1)
            if bar.disable:  # a log: a line per save instead of a bar
                say(f"train [{step + 1}/{cfg.steps}] " + ", ".join(
                    f"{k} {v}" for k, v in shown.items()) + f"; saved {output}")
    checkpoint(cfg.steps)
    return skipped
