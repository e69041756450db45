"""bn_act for the cuda backend: ``fastgan::bn_stats`` (batch statistics, running stats updated in
place) + ``fastgan::bn_act`` (normalize, affine, activation), backward ``fastgan::bn_act_backward``
(two passes); their fakes, the registry entry and its CPU size policy (autograd formulas: C++)."""
from __future__ import annotations

from typing import Optional

import torch

from fastgan.backends.reference import bn_act as _reference
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _acc_dtype, _ops, _slope


@torch.library.register_fake("fastgan::bn_stats")
def _bn_stats_fake(x, running_mean, running_var, training, momentum, eps):
    acc = _acc_dtype(x.dtype)
    c = x.shape[1]
    return x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc)


@torch.library.register_fake("fastgan::bn_act")
def _bn_act_fake(x, weight, bias, mean, invstd, slope, training):
    return torch.empty_like(x)


@torch.library.register_fake("fastgan::bn_act_backward")
def _bn_act_backward_fake(grad, x, weight, bias, mean, invstd, slope, training):
    acc = _acc_dtype(x.dtype)
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc)


# The autograd formula of bn_act (apply) is C++ (csrc/autograd/bn_act.cpp); bn_stats runs on
# x.detach() and is not differentiated.


def bn_act(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
           running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
           training: bool, momentum: float, eps: float, slope: Optional[float]) -> torch.Tensor:
    if momentum is None:  # F.batch_norm's cumulative moving average: not in the kernels
        return _reference(x, weight, bias, running_mean, running_var, training, momentum, eps,
                          slope)
    mean, invstd = _ops.bn_stats(x.detach(), running_mean, running_var, bool(training),
                                 float(momentum), float(eps))
    return _ops.bn_act(x, weight, bias, mean, invstd, _slope(slope), bool(training))


bn_act_cpu = _cpu_pick("bn_act", bn_act, _reference, lambda x, *a, **k: x.numel())

register("bn_act", "cuda", ("cpu",), bn_act_cpu)
if "cuda" in DEVICE_TYPES:
    register("bn_act", "cuda", ("cuda",), bn_act)
