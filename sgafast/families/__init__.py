"""Every CompressAI image codec family sgafast refines, by CompressAI's registry name.

``family_of(net)`` gives a model's :class:`~sgafast.families.base.Family`; ``build`` makes a
fresh network from sizes; ``infer`` names the architectures a plain state dict fits.
"""

from __future__ import annotations

from torch import nn

from ..errors import SgafastError
from .base import Family
from .google import Factorized, Hyperprior, Raster
from .sensetime import ChannelGroups, Checkerboard

FAMILIES = (Factorized, Hyperprior, Raster, Checkerboard, ChannelGroups)
ARCHITECTURES = {name: family for family in FAMILIES for name in family.architectures}


def _unknown(what: str) -> SgafastError:
    return SgafastError(f"{what}; sgafast refines these CompressAI architectures: "
                        f"{', '.join(ARCHITECTURES)}")


def architecture_of(net: nn.Module) -> str:
    """The registry name of a supported network (its exact class), or a clear refusal."""
    for name, family in ARCHITECTURES.items():
        if type(net) is family.architectures[name]:
            return name
    raise _unknown(f"{type(net).__name__} is not a supported model")


def family_of(net: nn.Module) -> Family:
    return ARCHITECTURES[architecture_of(net)](net)


def dims_of(net: nn.Module) -> dict:
    return ARCHITECTURES[architecture_of(net)].dims(net)


def build(architecture: str, dims: dict) -> nn.Module:
    """A freshly initialised network of a supported architecture and sizes."""
    if architecture not in ARCHITECTURES:
        raise _unknown(f"unknown architecture {architecture!r}")
    try:
        return ARCHITECTURES[architecture].build(architecture, dims)
    except (AssertionError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise SgafastError(f"{architecture} cannot be built with {dims} ({exc or type(exc)})"
                           ) from exc


def infer(state: dict) -> list[tuple[str, dict]]:
    """Every (architecture, dims) a plain CompressAI state dict's keys and shapes fit."""
    return [candidate for family in FAMILIES for candidate in family.infer(state)]
