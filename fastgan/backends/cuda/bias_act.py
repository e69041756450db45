"""bias_act for the cuda backend: ``fastgan::bias_act`` (and its backward op) with fake
implementations, the registry entry and its CPU size policy (autograd formulas: C++)."""
from __future__ import annotations

from typing import Optional, Union

import torch

from fastgan.backends.reference import bias_act as _reference
from fastgan.ops.activation import IDENTITY, act_code
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _ops


@torch.library.register_fake("fastgan::bias_act")
def _bias_act_fake(x, bias, code, slope, dim):
    return torch.empty_like(x)


@torch.library.register_fake("fastgan::bias_act_backward")
def _bias_act_backward_fake(grad, y, code, slope, dim, need_db):
    return torch.empty_like(y), y.new_empty((y.shape[dim] if need_db else 0,))


# The autograd formulas of both ops are C++ (csrc/autograd/bias_act.cpp): an eager call runs no
# Python beyond this wrapper.


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor], slope: Union[None, float, str],
             dim: int = 1) -> torch.Tensor:
    code, s = act_code(slope)
    if bias is None and code == IDENTITY:
        return x  # identity, as the reference
    return _ops.bias_act(x, bias, code, s, int(dim))


bias_act_cpu = _cpu_pick("bias_act", bias_act, _reference, lambda x, *a, **k: x.numel())

register("bias_act", "cuda", ("cpu",), bias_act_cpu)
if "cuda" in DEVICE_TYPES:
    register("bias_act", "cuda", ("cuda",), bias_act)
