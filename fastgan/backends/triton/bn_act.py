"""bn_act for the triton backend: custom ops, autograd and the registry entry."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from fastgan.kernels._common import acc_torch, check_float
from fastgan.backends.reference.bn_act import check_groups, per_group
from fastgan.kernels.bn_act import bn_act_backward, bn_act_forward, groups_in_one_kernel
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op

Tensor = torch.Tensor


@torch.library.custom_op("fastgan_triton::bn_act_forward",
                         mutates_args=("running_mean", "running_var"))
def bn_act_forward_op(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                      running_mean: Optional[Tensor], running_var: Optional[Tensor],
                      training: bool, momentum: float, eps: float, slope: Optional[float],
                      unbiased_running_var: bool = True, groups: int = 1
                      ) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd); mutates the running stats (so autograd is wired by :class:`_BNAct`)."""
    return bn_act_forward(x, weight, bias, running_mean, running_var, training, momentum, eps,
                          slope, unbiased_running_var, groups)


@bn_act_forward_op.register_fake
def _(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
      unbiased_running_var=True, groups=1):
    C = groups * x.shape[1]
    acc_dt = acc_torch(x.dtype)
    return torch.empty_like(x), x.new_empty((C,), dtype=acc_dt), x.new_empty((C,), dtype=acc_dt)


@torch.library.custom_op("fastgan_triton::bn_act_backward", mutates_args=())
def bn_act_backward_op(grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                       mean: Tensor, rstd: Tensor, training: bool, slope: Optional[float],
                       need_dx: bool, need_dw: bool, need_db: bool, groups: int = 1
                       ) -> Tuple[Tensor, Tensor, Tensor]:
    return bn_act_backward(grad, x, weight, bias, mean, rstd, training, slope, need_dx, need_dw,
                           need_db, groups)


@bn_act_backward_op.register_fake
def _(grad, x, weight, bias, mean, rstd, training, slope, need_dx, need_dw, need_db, groups=1):
    C = x.shape[1]
    return (torch.empty_like(x) if need_dx else grad.new_empty(0),
            weight.new_empty((C,)) if need_dw else grad.new_empty(0),
            bias.new_empty((C,)) if need_db else grad.new_empty(0))


class _BNAct(torch.autograd.Function):
    """Autograd wiring. torch.library refuses autograd formulas on ops that mutate inputs (the
    running stats), so the two custom ops are joined by an autograd.Function, which
    torch.compile traces through."""

    @staticmethod
    def forward(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
                unbiased_running_var, groups):
        fwd = bn_act_forward_op if use_custom_op() else bn_act_forward
        return fwd(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
                   unbiased_running_var, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, running_mean, running_var, training, momentum, eps, slope, _, groups = \
            inputs
        y, mean, rstd = output
        ctx.training, ctx.slope, ctx.groups = training, slope, groups
        ctx.mark_non_differentiable(mean, rstd)
        ctx.set_materialize_grads(False)   # no zero-filled gradients for mean and rstd
        ctx.save_for_backward(x, weight, bias, mean, rstd)

    @staticmethod
    def backward(ctx, grad_y, grad_mean, grad_rstd):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        need_dw = weight is not None and ctx.needs_input_grad[1]
        need_db = bias is not None and ctx.needs_input_grad[2]
        if grad_y is None or not (need_dx or need_dw or need_db):
            return (None,) * 11
        bwd = bn_act_backward_op if use_custom_op() else bn_act_backward
        dx, dw, db = bwd(grad_y, x, weight, bias, mean, rstd, ctx.training, ctx.slope, need_dx,
                         need_dw, need_db, ctx.groups)
        return (dx if need_dx else None, dw if need_dw else None, db if need_db else None,
                None, None, None, None, None, None, None, None)


def bn_act(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
           running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool = True,
           momentum: float = 0.1, eps: float = 1e-5, slope: Optional[float] = None,
           unbiased_running_var: bool = True, groups: int = 1) -> Tensor:
    """Registry entry: act(batch_norm(x)), running stats updated in place (see module doc);
    ``groups`` > 1: one launch each way where the kernels can (groups_in_one_kernel), else the
    op once per batch chunk (reference.bn_act.per_group)."""
    check_float("bn_act", x)
    if x.dim() < 2:
        raise ValueError(f"bn_act: expected [N, C] or [N, C, ...] input, got {tuple(x.shape)}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("bn_act: running_mean and running_var must be given when training=False")
    groups = check_groups(x, groups) if training else 1
    if groups > 1 and not groups_in_one_kernel(x, groups):
        return per_group(bn_act, x, groups, weight, bias, running_mean, running_var, True,
                         momentum, eps, slope, unbiased_running_var)
    if training:
        count = x.numel() // (x.shape[1] * groups) if x.shape[1] else 0
        if count <= 1:
            raise ValueError("Expected more than 1 value per channel when training, got input "
                             f"size {list(x.shape)}")
    if momentum is None:
        raise ValueError("bn_act: momentum=None (cumulative average) is not supported")
    y, _, _ = _BNAct.apply(x, weight, bias, running_mean, running_var, bool(training),
                           float(momentum), float(eps), None if slope is None else float(slope),
                           bool(unbiased_running_var), groups)
    return y


register("bn_act", "triton", DEVICE_TYPES, bn_act)
