"""linear_act for the cuda backend: ``fastgan::linear_act`` (torch matmul with the fused bias +
activation epilogue) with its fake, the registry entry and its CPU size policy; its
autograd formula (the fused mask + bias-gradient kernel, then two matmuls) is C++."""
from __future__ import annotations

from typing import Optional, Union

import torch

from fastgan.backends.reference import linear_act as _reference
from fastgan.ops.activation import act_code
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _ops


@torch.library.register_fake("fastgan::linear_act")
def _linear_act_fake(x, weight, bias, code, slope, bn_mean=None, bn_var=None, bn_weight=None,
                     bn_bias=None, bn_eps=0.0):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


# Its autograd formula is C++ (csrc/autograd/linear_act.cpp): an eager call runs no Python
# beyond this wrapper.


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               slope: Union[None, float, str], bn_eval=None) -> torch.Tensor:
    if bn_eval is None:
        return _ops.linear_act(x, weight, bias, *act_code(slope))
    return _ops.linear_act(x, weight, bias, *act_code(slope), *bn_eval)


linear_act_cpu = _cpu_pick("linear_act", linear_act, _reference,
                           lambda x, w, *a, **k: (x.numel() // max(1, x.shape[-1])) * w.shape[0])

register("linear_act", "cuda", ("cpu",), linear_act_cpu)
if "cuda" in DEVICE_TYPES:
    register("linear_act", "cuda", ("cuda",), linear_act)
