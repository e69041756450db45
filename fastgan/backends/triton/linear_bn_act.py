"""linear_bn_act for the triton backend: when the batch fits one tile
(fastgan.kernels.linear_bn_act.fits), one matmul kernel with the training-mode batch norm in
its epilogue and one backward launch (dX, dW, db, dgamma, dbeta); otherwise, and in
eval mode or with tanh/sigmoid, today's ops (this backend's linear_act then bn_act)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from fastgan.kernels._common import acc_torch, check_float
from fastgan.kernels.linear_bn_act import fits, linear_bn_act_backward, linear_bn_act_forward
from fastgan.ops.activation import act_code
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op
from .bn_act import bn_act as _bn_act
from .linear_act import linear_act as _linear_act

Tensor = torch.Tensor


@torch.library.custom_op("fastgan_triton::linear_bn_act_forward",
                         mutates_args=("running_mean", "running_var"))
def linear_bn_act_forward_op(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                             gamma: Optional[Tensor], beta: Optional[Tensor],
                             running_mean: Optional[Tensor], running_var: Optional[Tensor],
                             pre: int, slope_pre: float, post: int, slope_post: float,
                             momentum: float, eps: float, unbiased: bool
                             ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    y, h, mean, invstd = linear_bn_act_forward(x, weight, bias, gamma, beta, running_mean,
                                               running_var, pre, slope_pre, post, slope_post,
                                               momentum, eps, unbiased)
    return y, h, mean, invstd


@linear_bn_act_forward_op.register_fake
def _(x, weight, bias, gamma, beta, running_mean, running_var, pre, slope_pre, post,
      slope_post, momentum, eps, unbiased):
    n, m, acc = x.shape[0], weight.shape[0], acc_torch(x.dtype)
    return (x.new_empty((n, m)), x.new_empty((n, m)), x.new_empty((m,), dtype=acc),
            x.new_empty((m,), dtype=acc))


@torch.library.custom_op("fastgan_triton::linear_bn_act_backward", mutates_args=())
def linear_bn_act_backward_op(grad: Tensor, x: Tensor, weight: Tensor, h: Tensor,
                              gamma: Optional[Tensor], beta: Optional[Tensor], mean: Tensor,
                              invstd: Tensor, pre: int, slope_pre: float, post: int,
                              slope_post: float, need_dx: bool, need_dw: bool
                              ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return linear_bn_act_backward(grad, x, weight, h, gamma, beta, mean, invstd, pre, slope_pre,
                                  post, slope_post, need_dx, need_dw)


@linear_bn_act_backward_op.register_fake
def _(grad, x, weight, h, gamma, beta, mean, invstd, pre, slope_pre, post, slope_post,
      need_dx, need_dw):
    m = h.shape[1]
    return (x.new_empty(x.shape) if need_dx else grad.new_empty(0),
            weight.new_empty(weight.shape) if need_dw else grad.new_empty(0),
            mean.new_empty((m,)), mean.new_empty((m,)), mean.new_empty((m,)))


class _LinearBNAct(torch.autograd.Function):
    """Autograd wiring (the forward op mutates the running statistics, so torch.library takes
    no autograd formula for it)."""

    @staticmethod
    def forward(x, weight, bias, gamma, beta, running_mean, running_var, pre, slope_pre, post,
                slope_post, momentum, eps, unbiased):
        fwd = linear_bn_act_forward_op if use_custom_op() else linear_bn_act_forward
        return fwd(x, weight, bias, gamma, beta, running_mean, running_var, pre, slope_pre,
                   post, slope_post, momentum, eps, unbiased)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, gamma, beta, _, _, pre, slope_pre, post, slope_post = inputs[:11]
        y, h, mean, invstd = output
        ctx.args = (pre, slope_pre, post, slope_post)
        ctx.has = (bias is not None, gamma is not None, beta is not None)
        ctx.mark_non_differentiable(h, mean, invstd)
        ctx.set_materialize_grads(False)   # no zero-filled gradients for h, mean, invstd
        ctx.save_for_backward(x, weight, h, gamma, beta, mean, invstd)

    @staticmethod
    def backward(ctx, grad_y, *_):
        x, weight, h, gamma, beta, mean, invstd = ctx.saved_tensors
        need = ctx.needs_input_grad
        if grad_y is None or not any(need[:5]):
            return (None,) * 14
        bwd = linear_bn_act_backward_op if use_custom_op() else linear_bn_act_backward
        dx, dw, db, dg, dbeta = bwd(grad_y, x, weight, h, gamma, beta, mean, invstd, *ctx.args,
                                    need[0], need[1])
        has_b, has_g, has_beta = ctx.has
        return (dx if need[0] else None, dw if need[1] else None,
                db.to(weight.dtype) if has_b and need[2] else None,
                dg.to(gamma.dtype) if has_g and need[3] else None,
                dbeta.to(beta.dtype) if has_beta and need[4] else None) + (None,) * 9


def _stat(t: Optional[Tensor], acc: torch.dtype) -> Optional[Tensor]:
    return t if t is None or (t.dtype == acc and t.is_contiguous()) else t.to(acc).contiguous()


def linear_bn_act(x: Tensor, weight: Tensor, bias: Optional[Tensor], bn_weight: Optional[Tensor],
                  bn_bias: Optional[Tensor], running_mean: Optional[Tensor],
                  running_var: Optional[Tensor], training: bool, momentum: float, eps: float,
                  slope_pre=None, slope_post=None, unbiased_running_var: bool = True) -> Tensor:
    """Registry entry: bn_act(linear_act(x, weight, bias, slope_pre), ...) (see module doc)."""
    check_float("linear_bn_act", x)
    plain = not isinstance(slope_pre, str) and not isinstance(slope_post, str)
    if not (training and plain and momentum is not None and x.dim() == 2 and fits(x.shape[0])
            and x.dtype == weight.dtype and (running_mean is None) == (running_var is None)):
        h = _linear_act(x, weight, bias, slope_pre)
        return _bn_act(h, bn_weight, bn_bias, running_mean, running_var, training, momentum, eps,
                       slope_post, unbiased_running_var)
    acc = acc_torch(x.dtype)
    rm, rv = _stat(running_mean, acc), _stat(running_var, acc)
    pre, sp = act_code(slope_pre)
    post, sq = act_code(slope_post)
    y, _, _, _ = _LinearBNAct.apply(x, weight, bias, bn_weight, bn_bias, rm, rv, pre, sp, post,
                                    sq, float(momentum), float(eps), bool(unbiased_running_var))
    for work, orig in ((rm, running_mean), (rv, running_var)):
        if work is not orig:
            orig.copy_(work)
    return y


register("linear_bn_act", "triton", DEVICE_TYPES, linear_bn_act)
