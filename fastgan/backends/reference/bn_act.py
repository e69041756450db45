"""bn_act, reference: ``act(batch_norm(x))``, running statistics updated in place."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from fastgan.ops.activation import act
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def bn_act(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
           running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
           training: bool, momentum: float, eps: float, slope: Optional[float]) -> torch.Tensor:
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return act(y, slope)


register("bn_act", "reference", ALL_DEVICES, bn_act)
