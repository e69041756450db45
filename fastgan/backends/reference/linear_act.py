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
