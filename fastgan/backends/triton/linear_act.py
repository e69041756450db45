"""linear_act for the triton backend: custom ops, autograd and the registry entry."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from fastgan.kernels._common import check_float
from fastgan.kernels.linear_act import linear_act_backward, linear_act_forward
from fastgan.ops.activation import IDENTITY, act_code
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op

Tensor = torch.Tensor


@torch.library.custom_op("fastgan_triton::linear_act", mutates_args=())
def linear_act_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], code: int,
                  slope: float) -> Tensor:
    return linear_act_forward(x, weight, bias, code, slope)


@linear_act_op.register_fake
def _(x, weight, bias, code, slope):
    return x.new_empty((x.shape[0], weight.shape[0]))


# The inference-only variant with a batch norm after the activation (no autograd: refused above).
@torch.library.custom_op("fastgan_triton::linear_act_bn_eval", mutates_args=())
def linear_act_bn_eval_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], code: int,
                          slope: float, bn_mean: Tensor, bn_var: Tensor, bn_weight: Tensor,
                          bn_bias: Tensor, bn_eps: float) -> Tensor:
    return linear_act_forward(x, weight, bias, code, slope,
                              (bn_mean, bn_var, bn_weight, bn_bias, bn_eps))


@linear_act_bn_eval_op.register_fake
def _(x, weight, bias, code, slope, bn_mean, bn_var, bn_weight, bn_bias, bn_eps):
    return x.new_empty((x.shape[0], weight.shape[0]))


@torch.library.custom_op("fastgan_triton::linear_act_backward", mutates_args=())
def linear_act_backward_op(grad: Tensor, x: Tensor, weight: Tensor, y: Tensor, code: int,
                           slope: float, need_dx: bool, need_dw: bool,
                           need_db: bool) -> Tuple[Tensor, Tensor, Tensor]:
    return linear_act_backward(grad, x, weight, y, code, slope, need_dx, need_dw, need_db)


@linear_act_backward_op.register_fake
def _(grad, x, weight, y, code, slope, need_dx, need_dw, need_db):
    N, K = x.shape
    M = weight.shape[0]
    return (x.new_empty((N, K)) if need_dx else grad.new_empty(0),
            weight.new_empty((M, K)) if need_dw else grad.new_empty(0),
            weight.new_empty((M,)) if need_db else grad.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, weight, bias, code, slope = inputs
    ctx.code, ctx.slope = code, slope
    ctx.has_bias = bias is not None
    # y only when there is an activation (act' is read off it); never the pre-activation.
    ctx.save_for_backward(x, weight, output if code != IDENTITY else None)


def _backward_with(bwd, ctx, grad):
    x, weight, y = ctx.saved_tensors
    need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    need_db = ctx.has_bias and ctx.needs_input_grad[2]
    if y is None:
        y = grad
    dx, dw, db = bwd(grad, x, weight, y, ctx.code, ctx.slope, need_dx, need_dw, need_db)
    return (dx if need_dx else None, dw if need_dw else None, db if need_db else None, None, None)


def _backward(ctx, grad):
    return _backward_with(linear_act_backward_op, ctx, grad)


linear_act_op.register_autograd(_backward, setup_context=_setup_context)


class _LinearActFn(torch.autograd.Function):
    """The eager path (_policy.EAGER_FAST_PATH): the same launchers without the dispatcher."""

    @staticmethod
    def forward(x, weight, bias, code, slope):
        return linear_act_forward(x, weight, bias, code, slope)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, grad):
        return _backward_with(linear_act_backward, ctx, grad)


def _call(x, weight, bias, code, slope):
    if use_custom_op():
        return linear_act_op(x, weight, bias, code, slope)
    return _LinearActFn.apply(x, weight, bias, code, slope)


def _bn_call(x, weight, bias, code, slope, bn_eval):
    mean, var, w, b, eps = bn_eval
    w = w if w is not None else torch.ones_like(mean)
    b = b if b is not None else torch.zeros_like(mean)
    return linear_act_bn_eval_op(x, weight, bias, code, slope, mean, var, w, b, float(eps))


def _checked(x: Tensor, weight: Tensor, slope) -> Tuple[int, float]:
    """The activation's (code, slope) after the checks both entries make."""
    check_float("linear_act", x)
    if x.dtype != weight.dtype:
        raise TypeError(f"linear_act: x is {x.dtype} but weight is {weight.dtype}")
    return act_code(slope)


def linear_act(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
               slope: Union[None, float, str] = None, bn_eval=None) -> Tensor:
    """Registry entry: act(x @ weight.T + bias) for x of shape [..., K], then the optional
    inference-mode batch norm ``bn_eval`` = (mean, var, weight, bias, eps)."""
    code, s = _checked(x, weight, slope)
    call = _call if bn_eval is None else (lambda *a: _bn_call(*a, bn_eval))
    if x.dim() == 2:
        return call(x, weight, bias, code, s)
    lead = x.shape[:-1]
    y = call(x.reshape(-1, x.shape[-1]), weight, bias, code, s)
    return y.reshape(*lead, weight.shape[0])


register("linear_act", "triton", DEVICE_TYPES, linear_act)


def linear_act_into(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                    slope: Union[None, float, str], out: Tensor) -> Tensor:
    """Registry entry: linear_act(..., out=) (no grad; checked by fastgan.ops), the epilogue
    writing into ``out`` itself (2-D, x's dtype; otherwise, and under torch.compile, where a
    custom op's result is a new tensor, computed, then copied)."""
    code, s = _checked(x, weight, slope)
    if use_custom_op() or x.dim() != 2 or out.dtype != x.dtype:   # (autocast: bf16 into fp32)
        return out.copy_(linear_act(x, weight, bias, slope))
    linear_act_forward(x, weight, bias, code, s, out=out)
    return out


register("linear_act_into", "triton", DEVICE_TYPES, linear_act_into)
