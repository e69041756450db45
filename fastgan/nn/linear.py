"""FusedLinearAct: act(x @ W.T + b) as one op, laid out like nn.Linear (same state dict)."""
from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn

from fastgan import ops

from ._autocast import _autocast_dtype, _cast


_OWN = object()   # forward's default: the layer's own activation


class FusedLinearAct(nn.Linear):
    """act(x @ W.T + b) as one op. ``slope``: None identity, 0 ReLU, a float > 0
    LeakyReLU(slope), "tanh" or "sigmoid" (fastgan.ops.act)."""

    def __init__(self, in_features: int, out_features: int, slope: Union[None, float, str] = None,
                 bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.slope = slope

    def forward(self, x: torch.Tensor, slope: Union[None, float, str, object] = _OWN,
                bn_eval=None, out=None) -> torch.Tensor:
        """``slope``: another activation than the layer's (see pre_activation); ``bn_eval``:
        ops.linear_act's inference-mode batch norm after the activation; ``out``: a buffer the
        result is written into (both without grad)."""
        dt = _autocast_dtype(x)
        return ops.linear_act(_cast(x, dt), _cast(self.weight, dt), _cast(self.bias, dt),
                              self.slope if slope is _OWN else slope, bn_eval, out)

    def pre_activation(self, x: torch.Tensor, slope: Union[None, float, str] = None,
                       bn_eval=None) -> torch.Tensor:
        """The same op with another activation (default none): for a caller that applies its
        own, e.g. one writing into a given buffer (``torch.tanh(..., out=)``). A module call,
        so forward hooks (the roofline's counter) see it."""
        return self(x, slope=slope, bn_eval=bn_eval)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", slope={self.slope!r}"
