"""bn_act for the cuda backend: ``fastgan::bn_stats`` (batch statistics, running stats updated in
place) + ``fastgan::bn_act`` (normalize, affine, activation), backward ``fastgan::bn_act_backward``
(two passes); their fakes and autograd formulas, the registry entry and its CPU size policy."""
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


# bn_act (apply): y = act((x - mean) * invstd * w + b). With training=True, mean/invstd are x's
# batch statistics (from bn_stats on x.detach()) and the backward includes their gradient terms,
# exactly as F.batch_norm's; with training=False they are constants (running statistics).
def _bn_act_setup(ctx, inputs, output):
    x, weight, bias, mean, invstd, slope, training = inputs
    ctx.slope, ctx.training = slope, training
    ctx.w_dtype = weight.dtype if weight is not None else None
    ctx.b_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, weight, bias, mean, invstd)


def _bn_act_bwd(ctx, gy):
    x, weight, bias, mean, invstd = ctx.saved_tensors
    dx, dw, db = _ops.bn_act_backward(gy, x, weight, bias, mean, invstd, ctx.slope, ctx.training)
    need = ctx.needs_input_grad
    return ((dx if need[0] else None),
            (dw.to(ctx.w_dtype) if need[1] and weight is not None else None),
            (db.to(ctx.b_dtype) if need[2] and bias is not None else None),
            None, None, None, None)


torch.library.register_autograd("fastgan::bn_act", _bn_act_bwd, setup_context=_bn_act_setup)


def _bn_act_backward_setup(ctx, inputs, output):
    pass


def _bn_act_backward_bwd(ctx, *grads):
    raise NotImplementedError(
        "fastgan: double backward through bn_act is not implemented in the cuda backend "
        "(use the reference backend for gradient penalties through batch norm)")


torch.library.register_autograd("fastgan::bn_act_backward", _bn_act_backward_bwd,
                                setup_context=_bn_act_backward_setup)


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
