"""linear_bn_act for the cuda backend: ``fastgan::linear_bn_act`` (torch matmul, then one
epilogue kernel: bias, act_pre, the batch statistics, the running-stat update, normalize,
act_post) with its fakes, the registry entry and its CPU size policy; its autograd formula (the
fused backward epilogue, then the two matmuls) is C++ (csrc/autograd/linear_bn_act.cpp).

What the kernel does not cover runs today's ops (linear_act then bn_act, each this backend's):
eval mode (with linear_act's folded inference BN when no grad is needed and nothing follows the
BN), tanh/sigmoid activations, a cumulative momentum, x not 2-D or a single row."""
from __future__ import annotations

from typing import Optional

import torch

from fastgan.backends.reference import linear_bn_act as _reference
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _acc_dtype, _ops
from .bn_act import bn_act as _bn_act
from .linear_act import linear_act as _linear_act


@torch.library.register_fake("fastgan::linear_bn_act")
def _fake(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, slope_pre,
          slope_post, momentum, eps, unbiased_running_var):
    return x.new_empty((x.shape[0], weight.shape[0]))


@torch.library.register_fake("fastgan::linear_bn_act_fwd")
def _fwd_fake(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, slope_pre,
              slope_post, momentum, eps, unbiased_running_var):
    n, m, acc = x.shape[0], weight.shape[0], _acc_dtype(x.dtype)
    return (x.new_empty((n, m)), x.new_empty((n, m)), x.new_empty((m,), dtype=acc),
            x.new_empty((m,), dtype=acc))


@torch.library.register_fake("fastgan::linear_bn_act_backward")
def _bwd_fake(grad, h, bn_weight, bn_bias, mean, invstd, slope_pre, slope_post):
    acc = _acc_dtype(h.dtype)
    m = h.shape[1]
    return (torch.empty_like(h), h.new_empty((m,), dtype=acc), h.new_empty((m,), dtype=acc),
            h.new_empty((m,), dtype=acc))


def _plain(slope) -> bool:
    return slope is None or not isinstance(slope, str)


def _needs_grad(*ts) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def linear_bn_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                  bn_weight: Optional[torch.Tensor], bn_bias: Optional[torch.Tensor],
                  running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
                  training: bool, momentum: float, eps: float, slope_pre=None, slope_post=None,
                  unbiased_running_var: bool = True) -> torch.Tensor:
    fused = (training and momentum is not None and x.dim() == 2 and x.shape[0] > 1
             and _plain(slope_pre) and _plain(slope_post))
    if fused:
        return _ops.linear_bn_act(
            x, weight, bias, bn_weight, bn_bias, running_mean, running_var,
            None if slope_pre is None else float(slope_pre),
            None if slope_post is None else float(slope_post), float(momentum), float(eps),
            bool(unbiased_running_var))
    if (not training and slope_post is None and running_mean is not None
            and running_var is not None
            and not _needs_grad(x, weight, bias, bn_weight, bn_bias)):
        # inference: the BN folded into linear_act's epilogue (one op)
        return _linear_act(x, weight, bias, slope_pre,
                           (running_mean, running_var, bn_weight, bn_bias, float(eps)))
    h = _linear_act(x, weight, bias, slope_pre)
    return _bn_act(h, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps,
                   slope_post, unbiased_running_var)


linear_bn_act_cpu = _cpu_pick("linear_bn_act", linear_bn_act, _reference,
                              lambda x, w, *a, **k: (x.numel() // max(1, x.shape[-1]))
                              * w.shape[0])

register("linear_bn_act", "cuda", ("cpu",), linear_bn_act_cpu)
if "cuda" in DEVICE_TYPES:
    register("linear_bn_act", "cuda", ("cuda",), linear_bn_act)
