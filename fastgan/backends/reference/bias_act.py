"""bias_act, reference: ``act(x + bias along dim)``."""
from __future__ import annotations

from typing import Optional

import torch

from fastgan.ops.activation import act
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor], slope: Optional[float],
             dim: int = 1) -> torch.Tensor:
    if bias is not None:
        shape = [1] * x.dim()
        shape[dim] = -1
        x = x + bias.view(shape)
    return act(x, slope)


register("bias_act", "reference", ALL_DEVICES, bias_act)
