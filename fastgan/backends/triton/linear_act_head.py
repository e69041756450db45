"""linear_act_head for the triton backend: the custom ops, autograd and the registry entry."""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch

from fastgan.kernels.linear_act_head import linear_act_head_backward, linear_act_head_forward
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op
from .linear_act import _checked

Tensor = torch.Tensor


@torch.library.custom_op("fastgan_triton::linear_act_head", mutates_args=())
def linear_act_head_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], code: int,
                       slope: float, head_weight: Tensor,
                       head_bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    return linear_act_head_forward(x, weight, bias, code, slope, head_weight, head_bias)


@linear_act_head_op.register_fake
def _(x, weight, bias, code, slope, head_weight, head_bias):
    return (x.new_empty((x.shape[0], head_weight.shape[0])),
            x.new_empty((x.shape[0], weight.shape[0])))


@torch.library.custom_op("fastgan_triton::linear_act_head_backward", mutates_args=())
def linear_act_head_backward_op(grad: Tensor, x: Tensor, weight: Tensor, h: Tensor, code: int,
                                slope: float, head_weight: Tensor,
                                need: List[bool]
                                ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    return linear_act_head_backward(grad, x, weight, h, code, slope, head_weight, tuple(need))


@linear_act_head_backward_op.register_fake
def _(grad, x, weight, h, code, slope, head_weight, need):
    shapes = (x.shape, weight.shape, weight.shape[:1], head_weight.shape, head_weight.shape[:1])
    return tuple(x.new_empty(s if n else (0,)) for s, n in zip(shapes, need))


def _setup_context(ctx, inputs, output):
    x, weight, bias, code, slope, head_weight, head_bias = inputs
    ctx.code, ctx.slope = code, slope
    ctx.has_bias, ctx.has_head_bias = bias is not None, head_bias is not None
    ctx.save_for_backward(x, weight, output[1], head_weight)
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _backward_with(bwd, ctx, grad, _grad_h):
    x, weight, h, head_weight = ctx.saved_tensors
    n = ctx.needs_input_grad
    need = (n[0], n[1], ctx.has_bias and n[2], n[5], ctx.has_head_bias and n[6])
    if grad is None or not any(need):
        return (None,) * 7
    grads = bwd(grad, x, weight, h, ctx.code, ctx.slope, head_weight, list(need))
    dx, dw, db, hw, hb = (g if k else None for g, k in zip(grads, need))
    return dx, dw, db, None, None, hw, hb


def _backward(ctx, grad, grad_h):
    return _backward_with(linear_act_head_backward_op, ctx, grad, grad_h)


linear_act_head_op.register_autograd(_backward, setup_context=_setup_context)


class _LinearActHeadFn(torch.autograd.Function):
    """The eager path (_policy.EAGER_FAST_PATH): the same launchers without the dispatcher."""

    @staticmethod
    def forward(x, weight, bias, code, slope, head_weight, head_bias):
        return linear_act_head_forward(x, weight, bias, code, slope, head_weight, head_bias)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, grad, grad_h):
        return _backward_with(linear_act_head_backward, ctx, grad, grad_h)


def linear_act_head(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                    slope: Union[None, float, str], head_weight: Tensor,
                    head_bias: Optional[Tensor]) -> Tensor:
    """Registry entry: linear_act(linear_act(x, weight, bias, slope), head_weight, head_bias)
    for x of shape [..., K] (shapes checked by fastgan.ops), one launch for the backward."""
    code, s = _checked(x, weight, slope)
    if head_weight.dtype != x.dtype:
        raise TypeError(f"linear_act_head: x is {x.dtype} but head_weight is {head_weight.dtype}")
    fn = linear_act_head_op if use_custom_op() else _LinearActHeadFn.apply
    if x.dim() == 2:
        return fn(x, weight, bias, code, s, head_weight, head_bias)[0]
    y = fn(x.reshape(-1, x.shape[-1]), weight, bias, code, s, head_weight, head_bias)[0]
    return y.reshape(*x.shape[:-1], head_weight.shape[0])


register("linear_act_head", "triton", DEVICE_TYPES, linear_act_head)
