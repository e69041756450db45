"""linear_act_head, reference: ``linear_act(linear_act(x, weight, bias, slope), head_weight,
head_bias)``, the active backend's linear_act twice (the fusion is all a backend's form adds)."""
from __future__ import annotations

from typing import Optional, Union

import torch

from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def linear_act_head(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    slope: Union[None, float, str], head_weight: torch.Tensor,
                    head_bias: Optional[torch.Tensor]) -> torch.Tensor:
    from fastgan import ops
    return ops.linear_act(ops.linear_act(x, weight, bias, slope), head_weight, head_bias, None)


register("linear_act_head", "reference", ALL_DEVICES, linear_act_head)
