"""``Refining``: a CompressAI model whose ``compress()`` refines each image's latents first."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .errors import SgafastError
from .images import STRIDE, Geometry
from .models import BaseModel, as_model
from .ops.rounding import Rounding
from .refine import RefineConfig, lmbda_of, refine

# the keywords RefineConfig.with_options takes: the run's fields and the rounding's
OPTIONS = frozenset(f.name for config in (RefineConfig, Rounding)
                    for f in dataclasses.fields(config)) - {"rounding"}
# nn.Module's registries, shared with the wrapped net rather than holding it as a child
SHARED = ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules")


class Refining(nn.Module):
    """``net`` whose ``compress(x)`` refines the latents of every image of ``x``, then codes them
    with ``net``'s own ``compress()``, whose output it returns: ``net.decompress()`` reads it.

    ``net``: a CompressAI model of a supported architecture (``sgafast.families``; call its
    ``update()`` before compressing, as CompressAI requires) or a loaded
    :class:`~sgafast.models.BaseModel` (whose training λ is then the default ``lmbda``).
    ``options`` are ``sgafast.refine``'s (``method``, ``iters``, ``lmbda``, ``lr``, ``seed``,
    ``backend``, ``compile``, ``precision``, the rounding's ``classes``, ``a``, ...) over
    ``cfg``, checked here; ``track_every`` defaults to 0, since no history is kept.

    Seeds: image b of the batch given to ``compress`` draws the noise of identity ``str(b)``
    under ``seed``, as ``sgafast.refine(net, x, seed=seed)`` does, so the same batch gives the
    same strings in every call. Refinement runs with gradients whatever the caller's mode
    (``torch.no_grad()``, ``torch.inference_mode()``) and leaves ``net`` as it was.

    Everything else is ``net``'s: the wrapper shares its parameters, buffers, submodules and
    mode, so ``state_dict()`` has ``net``'s keys (a checkpoint loads into either), ``.to()``
    moves ``net``, and ``decompress``, ``forward``, ``update``, ``g_a``, ... are ``net``'s.
    """

    def __init__(self, net: nn.Module | BaseModel, cfg: RefineConfig | None = None, **options):
        super().__init__()
        model = as_model(net)  # a supported architecture, or SgafastError
        self.__dict__.update(model=model, net=model.net, config=_config(model, cfg, options))
        self.__dict__.update({name: getattr(model.net, name) for name in SHARED})
        del self.training  # read from net through __getattr__, so the two never disagree

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)  # the shared parameters, buffers and submodules
        except AttributeError:
            if "net" not in self.__dict__:
                raise
            return getattr(self.__dict__["net"], name)

    def extra_repr(self) -> str:
        return f"{self.model.architecture}, {self.config}"

    def forward(self, *args, **kwargs):
        return self.net(*args, **kwargs)

    def train(self, mode: bool = True) -> Refining:
        self.net.train(mode)
        return self

    def state_dict(self, *args, **kwargs):
        return self.net.state_dict(*args, **kwargs)

    def load_state_dict(self, *args, **kwargs):
        return self.net.load_state_dict(*args, **kwargs)

    def compress(self, x: torch.Tensor) -> dict:
        """What ``net.compress(x)`` returns, for the refined latents of the (B, 3, H, W) batch
        ``x`` in [0, 1], H and W multiples of 64 (as CompressAI's ``eval_model`` pads them; the
        loss counts every pixel of ``x``, padding included)."""
        if x.dim() != 4 or Geometry.of(x).padded_size != tuple(x.shape[-2:]):
            raise SgafastError(f"compress takes a (B, 3, H, W) batch with H and W multiples of "
                               f"{STRIDE} (pad it as CompressAI's eval_model does), got a "
                               f"{tuple(x.shape)} tensor")
        with torch.inference_mode(False), torch.enable_grad():
            results = refine(self.model, x, self.config)
        for b, result in enumerate(results):
            if not result.codable:
                raise SgafastError(f"image {b} of the batch: {result.divergence_message()}")
        latents = tuple(torch.cat(parts) for parts in zip(*(r.latents for r in results)))
        with torch.no_grad():
            return self.model.family.coder_output(latents)


def _config(model: BaseModel, cfg: RefineConfig | None, options: dict) -> RefineConfig:
    """The run's config from ``options`` over ``cfg``, checked as far as it can be without an
    image: names, values, the backend, a λ."""
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise SgafastError(f"unknown option {', '.join(unknown)}; the options are "
                           f"{', '.join(sorted(OPTIONS))}")
    try:
        cfg = (cfg or RefineConfig(track_every=0)).with_options(**options)
    except TypeError as exc:  # a value of the wrong type
        raise SgafastError(f"bad option value ({exc})") from exc
    lmbda_of(model, cfg)
    return cfg
