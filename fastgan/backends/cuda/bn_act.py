"""bn_act for the cuda backend: ``fastgan::bn_stats`` (batch statistics, running stats updated in
place) + ``fastgan::bn_act`` (normalize, affine, activation), backward ``fastgan::bn_act_backward``
(two passes); their fakes and autograd formulas, the registry entry and its CPU size policy.
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


# bn_act (apply): y = act((x - mean) * invstd * w + b). With training=True, mean/invstd are x's
# batch statistics (from bn_stats on x.detach()) and the backward includes their gradient terms,
# exactly as F.batch_norm's; with training=False they are constants (running statistics; with
# var_eps, ``invstd`` is the running variance: the backward turns it into invstd first).
def _bn_act_setup(ctx, inputs, output):
    x, weight, bias, mean, invstd, slope, training, var_eps = inputs
    ctx.slope, ctx.training, ctx.var_eps = slope, training, var_eps
    ctx.w_dtype = weight.dtype if weight is not None else None
    ctx.b_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, weight, bias, mean, invstd)


def _bn_act_bwd(ctx, gy):
    x, weight, bias, mean, invstd = ctx.saved_tensors
    if ctx.var_eps is not None:
        mean, invstd = _ops.bn_stats(x, mean, invstd, False, 0.0, ctx.var_eps)
    dx, dw, db = _ops.bn_act_backward(gy, x, weight, bias, mean, invstd, ctx.slope, ctx.training)
    need = ctx.needs_input_grad
    return ((dx if need[0] else None),
            (dw.to(ctx.w_dtype) if need[1] and weight is not None else None),
            (db.to(ctx.b_dtype) if need[2] and bias is not None else None),
            None, None, None, None, None)


torch.library.register_autograd("fastgan::bn_act", _bn_act_bwd, setup_context=_bn_act_setup)


def _bn_act_backward_setup(ctx, inputs, output):
    pass


def _bn_act_backward_bwd(ctx, *grads):
    raise NotImplementedError(
        "fastgan: double backward through bn_act is not implemented in the cuda backend "
        "(use the reference backend for gradient penalties through batch norm)")


torch.library.register_autograd("fastgan::bn_act_backward", _bn_act_backward_bwd,
                                setup_context=_bn_act_backward_setup)


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
    mean, invstd = _ops.bn_stats(x.detach(), running_mean, running_var, bool(training),
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
