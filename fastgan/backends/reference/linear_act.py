"""linear_act, reference: ``act(x @ weight.T + bias)``, then the optional inference-mode batch
norm ``bn_eval``."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from fastgan.ops.activation import act
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               slope: Union[None, float, str], bn_eval=None) -> torch.Tensor:
    y = act(F.linear(x, weight, bias), slope)
    if bn_eval is None:
        return y
    # the two ops in sequence: an inference-mode batch norm after (float64 needs float64 stats)
    mean, var, w, b = (t.to(y.dtype) if t is not None and y.dtype == torch.float64 else t
                       for t in bn_eval[:4])
    return F.batch_norm(y, mean, var, w, b, False, 0.0, bn_eval[4])


register("linear_act", "reference", ALL_DEVICES, linear_act)


def linear_act_into(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                    slope: Union[None, float, str], out: torch.Tensor) -> torch.Tensor:
    """linear_act(..., out=) where a backend has no fused form: the active backend's
    linear_act without the activation, then the activation written into ``out``."""
    from fastgan import ops
    pre = ops.linear_act(x, weight, bias, None)
    if slope == "tanh":
        return torch.tanh(pre, out=out)
    if slope == "sigmoid":
        return torch.sigmoid(pre, out=out)
    return out.copy_(act(pre, slope))


register("linear_act_into", "reference", ALL_DEVICES, linear_act_into)
