"""bn_act, reference: ``act(batch_norm(x))``, running statistics updated in place."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from fastgan.ops.activation import act
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def check_groups(x: torch.Tensor, groups: int) -> int:
    """``groups`` as an int, checked: >= 1 and dividing x's batch dimension."""
    groups = int(groups)
    if groups < 1 or x.dim() < 1 or x.shape[0] % groups:
        raise ValueError(f"bn_act: groups={groups} must be >= 1 and divide the batch dimension "
                         f"of x (shape {tuple(x.shape)})")
    return groups


def per_group(one, x: torch.Tensor, groups: int, *args) -> torch.Tensor:
    """``groups`` successive calls of ``one(chunk, *args)`` on x's equal contiguous batch
    chunks (chunk 0 first: the running statistics update in that order), outputs concatenated."""
    return torch.cat([one(c, *args) for c in x.chunk(groups, 0)], 0)


def _bn_act(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
            unbiased_running_var):
    if training and not unbiased_running_var and running_var is not None:
        # F.batch_norm would update running_var with the unbiased variance: the running
        # statistics are blended here instead, with the biased one (Keras).
        y = F.batch_norm(x, None, None, weight, bias, True, momentum, eps)
        with torch.no_grad():
            red = [d for d in range(x.dim()) if d != 1]
            var, mean = torch.var_mean(x.detach().to(running_var.dtype), red, unbiased=False)
            stats = [running_var] if running_mean is None else [running_mean, running_var]
            torch._foreach_lerp_(stats, [var] if running_mean is None else [mean, var],
                                 momentum)
        return act(y, slope)
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return act(y, slope)


def bn_act(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
           running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
           training: bool, momentum: float, eps: float, slope: Optional[float],
           unbiased_running_var: bool = True, groups: int = 1) -> torch.Tensor:
    if check_groups(x, groups) > 1 and training:
        return per_group(_bn_act, x, groups, weight, bias, running_mean, running_var, training,
                         momentum, eps, slope, unbiased_running_var)
    return _bn_act(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
                   unbiased_running_var)


register("bn_act", "reference", ALL_DEVICES, bn_act)
