"""bn_act for the cuda backend: ``fastgan::bn_stats`` (batch statistics, running stats updated in
place) + ``fastgan::bn_act`` (normalize, affine, activation), backward ``fastgan::bn_act_backward``
(two passes); their fakes, the registry entry and its CPU size policy (autograd formulas: C++,
csrc/autograd/bn_act.cpp).
In eval mode ``fastgan::bn_act`` alone reads the running statistics (one launch); ``groups`` > 1
runs the op once per batch chunk (reference.bn_act.per_group)."""
from __future__ import annotations

from typing import Optional

import torch

from fastgan.backends.reference import bn_act as _reference
from fastgan.backends.reference.bn_act import check_groups, per_group
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _acc_dtype, _ops, _slope


@torch.library.register_fake("fastgan::bn_stats")
def _bn_stats_fake(x, running_mean, running_var, training, momentum, eps,
                   unbiased_running_var=True):
    acc = _acc_dtype(x.dtype)
    c = x.shape[1]
    return x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc)


@torch.library.register_fake("fastgan::bn_act")
def _bn_act_fake(x, weight, bias, mean, invstd, slope, training, var_eps=None):
    return torch.empty_like(x)


@torch.library.register_fake("fastgan::bn_act_backward")
def _bn_act_backward_fake(grad, x, weight, bias, mean, invstd, slope, training):
    acc = _acc_dtype(x.dtype)
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc)


# The autograd formula of bn_act (apply) is C++ (csrc/autograd/bn_act.cpp): with training=True,
# mean/invstd are x's batch statistics (bn_stats, a fallthrough at the Autograd key: not differentiated) and the
# backward includes their gradient terms; with var_eps, ``invstd`` is the running variance and
# the backward turns it into invstd first.


def _one_launch_eval(x: torch.Tensor, rm: Optional[torch.Tensor], rv: Optional[torch.Tensor]):
    """Whether the apply kernel can read the running statistics as they are."""
    acc = _acc_dtype(x.dtype)
    return all(t is not None and t.dtype == acc and t.dim() == 1 and t.is_contiguous()
               and t.device == x.device for t in (rm, rv))


def _bn_act(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
            unbiased_running_var):
    if not training and _one_launch_eval(x, running_mean, running_var):
        return _ops.bn_act(x, weight, bias, running_mean, running_var, _slope(slope), False,
                           float(eps))
    mean, invstd = _ops.bn_stats(x, running_mean, running_var, bool(training),
                                 float(momentum), float(eps), bool(unbiased_running_var))
    return _ops.bn_act(x, weight, bias, mean, invstd, _slope(slope), bool(training))


def bn_act(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
           running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
           training: bool, momentum: float, eps: float, slope: Optional[float],
           unbiased_running_var: bool = True, groups: int = 1) -> torch.Tensor:
    if momentum is None:  # F.batch_norm's cumulative moving average: not in the kernels
        return _reference(x, weight, bias, running_mean, running_var, training, momentum, eps,
                          slope, unbiased_running_var, groups)
    if check_groups(x, groups) > 1 and training:
        return per_group(_bn_act, x, groups, weight, bias, running_mean, running_var, True,
                         momentum, eps, slope, unbiased_running_var)
    return _bn_act(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
                   unbiased_running_var)


bn_act_cpu = _cpu_pick("bn_act", bn_act, _reference, lambda x, *a, **k: x.numel())

register("bn_act", "cuda", ("cpu",), bn_act_cpu)
if "cuda" in DEVICE_TYPES:
    register("bn_act", "cuda", ("cuda",), bn_act)
