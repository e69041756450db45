"""The activation every fused op ends with (part of the op contract)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def act(y: torch.Tensor, slope: Optional[float]) -> torch.Tensor:
    """The activation every fused op ends with: none (slope None), ReLU (0) or LeakyReLU."""
    if slope is None:
        return y
    if slope == 0.0:
        return F.relu(y)
    return F.leaky_relu(y, slope)
