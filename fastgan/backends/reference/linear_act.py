"""linear_act, reference: ``act(x @ weight.T + bias)``."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from fastgan.ops.activation import act
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               slope: Optional[float]) -> torch.Tensor:
    return act(F.linear(x, weight, bias), slope)


register("linear_act", "reference", ALL_DEVICES, linear_act)
