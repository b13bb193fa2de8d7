"""Arguments of the fused ops' wrappers: tensors broadcast to the data's shape, contiguous."""

import torch

from ..errors import SgafastError


def broadcast_like(t: torch.Tensor, v: torch.Tensor, name: str) -> torch.Tensor:
    """t broadcast to v's shape and made contiguous (materialised once); autograd's expand
    backward is sum_to_size, which reduces its gradient back to t's own shape."""
    try:
        return t.expand(v.shape).contiguous()
    except RuntimeError as err:
        raise SgafastError(f"{name} of shape {tuple(t.shape)} does not broadcast to v's shape "
                           f"{tuple(v.shape)}") from err
