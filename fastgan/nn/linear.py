"""FusedLinearAct: act(x @ W.T + b) as one op, laid out like nn.Linear (same state dict)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from fastgan import ops

from ._autocast import _autocast_dtype, _cast


class FusedLinearAct(nn.Linear):
    """act(x @ W.T + b) as one op. ``slope``: None identity, 0 ReLU, else LeakyReLU(slope)."""

    def __init__(self, in_features: int, out_features: int, slope: Optional[float] = None,
                 bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _autocast_dtype(x)
        return ops.linear_act(_cast(x, dt), _cast(self.weight, dt), _cast(self.bias, dt),
                              self.slope)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", slope={self.slope}"
