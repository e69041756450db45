"""FusedLinearAct: act(x @ W.T + b) as one op, laid out like nn.Linear (same state dict)."""
from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn

from fastgan import ops

from ._autocast import _autocast_dtype, _cast


class FusedLinearAct(nn.Linear):
    """act(x @ W.T + b) as one op. ``slope``: None identity, 0 ReLU, a float > 0
    LeakyReLU(slope), "tanh" or "sigmoid" (fastgan.ops.act)."""

    def __init__(self, in_features: int, out_features: int, slope: Union[None, float, str] = None,
                 bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pre_activation(x, self.slope)

    def pre_activation(self, x: torch.Tensor, slope: Union[None, float, str] = None,
                       bn_eval=None) -> torch.Tensor:
        """The same op with another activation (default none): for a caller that applies its
        own, e.g. one writing into a given buffer (``torch.tanh(..., out=)``). ``bn_eval``:
        ops.linear_act's inference-mode batch norm after the activation (no grad)."""
        dt = _autocast_dtype(x)
        return ops.linear_act(_cast(x, dt), _cast(self.weight, dt), _cast(self.bias, dt), slope,
                              bn_eval)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", slope={self.slope!r}"
