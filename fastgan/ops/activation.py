"""The activation every fused op ends with (part of the op contract)."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

Slope = Union[None, float, str]

# The activation codes of the C++ schemas (int act, float slope); 0-2 equal csrc's ActMode.
IDENTITY, RELU, LEAKY, TANH, SIGMOID = 0, 1, 2, 3, 4
_NAMED = {"tanh": TANH, "sigmoid": SIGMOID}
ALLOWED = "None (identity), 0 (ReLU), a finite slope > 0 (LeakyReLU), 'tanh' or 'sigmoid'"


_CODES: dict = {}   # slope -> (code, slope): every fused-op call asks, for a handful of values


def act_code(slope: Slope) -> Tuple[int, float]:
    """(code, slope) for the kernels; a bad value raises a one-line ValueError."""
    try:
        return _CODES[slope]
    except (KeyError, TypeError):
        pass
    out = _act_code(slope)
    if len(_CODES) < 64:
        _CODES[slope] = out
    return out


def _act_code(slope: Slope) -> Tuple[int, float]:
    if slope is None:
        return IDENTITY, 0.0
    if isinstance(slope, str):
        if slope in _NAMED:
            return _NAMED[slope], 0.0
        raise ValueError(f"activation must be {ALLOWED}, got {slope!r}")
    try:
        s = float(slope)
    except (TypeError, ValueError):
        raise ValueError(f"activation must be {ALLOWED}, got {slope!r}") from None
    # slope >= 0: the backward reads the LeakyReLU mask off the output's sign.
    if not (s >= 0.0 and s != float("inf")):
        raise ValueError(f"activation must be {ALLOWED}, got {slope!r}")
    return (RELU if s == 0.0 else LEAKY), s


def act(y: torch.Tensor, slope: Slope) -> torch.Tensor:
    """The activation every fused op ends with: none (slope None), ReLU (0), LeakyReLU(slope),
    tanh ("tanh") or sigmoid ("sigmoid")."""
    if slope is None:
        return y
    if isinstance(slope, str):
        code, _ = act_code(slope)
        return torch.tanh(y) if code == TANH else torch.sigmoid(y)
    if slope == 0.0:
        return F.relu(y)
    return F.leaky_relu(y, slope)
