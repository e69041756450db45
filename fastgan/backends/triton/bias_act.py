"""bias_act for the triton backend: custom ops, autograd and the registry entry."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from fastgan.kernels._common import acc_torch, check_float
from fastgan.kernels.bias_act import bias_act_backward, bias_act_forward
from fastgan.ops.activation import IDENTITY, act_code
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op

Tensor = torch.Tensor


def _norm_dim(x: Tensor, dim: int) -> int:
    d = dim + x.dim() if dim < 0 else dim
    if not 0 <= d < x.dim():
        raise IndexError(f"bias_act: dim {dim} out of range for a {x.dim()}-d tensor")
    return d


@torch.library.custom_op("fastgan_triton::bias_act", mutates_args=())
def bias_act_op(x: Tensor, bias: Optional[Tensor], code: int, slope: float, dim: int) -> Tensor:
    return bias_act_forward(x, bias, code, slope, dim)


@bias_act_op.register_fake
def _(x, bias, code, slope, dim):
    return torch.empty_like(x)


@torch.library.custom_op("fastgan_triton::bias_act_backward", mutates_args=())
def bias_act_backward_op(grad: Tensor, y: Tensor, code: int, slope: float, dim: int,
                         need_dx: bool, need_db: bool) -> Tuple[Tensor, Tensor]:
    return bias_act_backward(grad, y, code, slope, dim, need_dx, need_db)


@bias_act_backward_op.register_fake
def _(grad, y, code, slope, dim, need_dx, need_db):
    acc_dt = acc_torch(y.dtype)
    return (torch.empty_like(y) if need_dx else grad.new_empty(0),
            y.new_empty((y.shape[dim],), dtype=acc_dt) if need_db else y.new_empty(0, dtype=acc_dt))


def _setup_context(ctx, inputs, output):
    x, bias, code, slope, dim = inputs
    ctx.code, ctx.slope, ctx.dim = code, slope, dim
    ctx.has_bias = bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(output if code != IDENTITY else None)


def _backward(ctx, grad):
    return _backward_with(bias_act_backward_op, ctx, grad)


def _backward_with(bwd, ctx, grad):
    (y,) = ctx.saved_tensors
    need_dx = ctx.needs_input_grad[0]
    need_db = ctx.has_bias and ctx.needs_input_grad[1]
    if not need_dx and not need_db:
        return None, None, None, None, None
    if ctx.code == IDENTITY:
        if not need_db:
            return grad, None, None, None, None
        # no activation: dX is dY itself (no copy); the kernel only reduces db
        _, db = bwd(grad, grad, IDENTITY, 0.0, ctx.dim, False, True)
        return grad if need_dx else None, db.to(ctx.bias_dtype), None, None, None
    dx, db = bwd(grad, y, ctx.code, ctx.slope, ctx.dim, need_dx, need_db)
    return (dx if need_dx else None, db.to(ctx.bias_dtype) if need_db else None, None, None, None)


bias_act_op.register_autograd(_backward, setup_context=_setup_context)


class _BiasActFn(torch.autograd.Function):
    """The eager path (_policy.EAGER_FAST_PATH): the same launchers without the dispatcher."""

    @staticmethod
    def forward(x, bias, code, slope, dim):
        return bias_act_forward(x, bias, code, slope, dim)

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, grad):
        return _backward_with(bias_act_backward, ctx, grad)


def bias_act(x: Tensor, bias: Optional[Tensor] = None, slope: Union[None, float, str] = None,
             dim: int = 1) -> Tensor:
    """Registry entry: act(x + bias along ``dim``)."""
    check_float("bias_act", x)
    dim = _norm_dim(x, dim)
    code, slope = act_code(slope)
    if bias is None and code == IDENTITY:
        return x
    if bias is not None and bias.shape != (x.shape[dim],):
        raise ValueError(f"bias_act: bias of shape {tuple(bias.shape)} for {x.shape[dim]} channels")
    if use_custom_op():
        return bias_act_op(x, bias, code, slope, dim)
    return _BiasActFn.apply(x, bias, code, slope, dim)


register("bias_act", "triton", DEVICE_TYPES, bias_act)
