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


# ---- a hidden layer and a 1-output head as one op (issue 20) ----

def _head_fusable(hidden: nn.Module, head: nn.Module) -> bool:
    # exactly two FusedLinearAct: a hidden layer, then a linear 1-output head after it
    return (type(hidden) is FusedLinearAct and type(head) is FusedLinearAct
            and head.slope is None and head.out_features == 1
            and head.in_features == hidden.out_features)


def linear_head(hidden: nn.Module, head: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``head(hidden(x))`` as one :func:`fastgan.ops.linear_act_head` when ``hidden`` is a
    FusedLinearAct and ``head`` a linear 1-output FusedLinearAct after it; else the two layers
    in turn. The modules keep their parameters, so state dicts are unchanged."""
    if not _head_fusable(hidden, head):
        return head(hidden(x))
    dt = _autocast_dtype(x)
    return ops.linear_act_head(_cast(x, dt), _cast(hidden.weight, dt), _cast(hidden.bias, dt),
                               hidden.slope, _cast(head.weight, dt), _cast(head.bias, dt))


class LinearHeadSequential(nn.Sequential):
    """nn.Sequential (same state dict keys) whose last two layers, a FusedLinearAct and a
    1-output linear FusedLinearAct head, run as one :func:`fastgan.ops.linear_act_head` (the
    backend may then run both backwards as one)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = list(self)
        if len(mods) < 2:
            return super().forward(x)
        for m in mods[:-2]:
            x = m(x)
        return linear_head(mods[-2], mods[-1], x)
