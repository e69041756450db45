"""linear_bn_act, reference: literally ``linear_act`` then ``bn_act`` (an optional op: a backend
without it runs this composition)."""
from __future__ import annotations

from typing import Optional

import torch

from fastgan.ops.registry import register

from ._devices import ALL_DEVICES
from .bn_act import bn_act
from .linear_act import linear_act


def linear_bn_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  bn_weight: Optional[torch.Tensor], bn_bias: Optional[torch.Tensor],
                  running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                  training: bool, momentum: float, eps: float, slope_pre=None, slope_post=None,
                  unbiased_running_var: bool = True) -> torch.Tensor:
    h = linear_act(x, weight, bias, slope_pre)
    return bn_act(h, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps,
                  slope_post, unbiased_running_var)


register("linear_bn_act", "reference", ALL_DEVICES, linear_bn_act)
