"""bias_act for the cuda backend: ``fastgan::bias_act`` (and its backward op) with fake
implementations, autograd formulas, the registry entry and its CPU size policy."""
from __future__ import annotations

from typing import Optional, Union

import torch

from fastgan.backends.reference import bias_act as _reference
from fastgan.ops.activation import IDENTITY, SIGMOID, TANH, act_code
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _ops


@torch.library.register_fake("fastgan::bias_act")
def _bias_act_fake(x, bias, code, slope, dim):
    return torch.empty_like(x)


@torch.library.register_fake("fastgan::bias_act_backward")
def _bias_act_backward_fake(grad, y, code, slope, dim, need_db):
    return torch.empty_like(y), y.new_empty((y.shape[dim] if need_db else 0,))


def _sum_except(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.sum(dim=[d for d in range(t.dim()) if d != dim])


# bias_act: y = act(x + b). act'(z) is read off y (the mask from its sign: slope >= 0).
def _bias_act_setup(ctx, inputs, output):
    x, bias, code, slope, dim = inputs
    ctx.code, ctx.slope = code, slope
    ctx.dim = dim % x.dim() if x.dim() > 0 else 0
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(output if code != IDENTITY else None)


def _bias_act_bwd(ctx, gy):
    (y,) = ctx.saved_tensors
    need_x, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx = db = None
    if ctx.code == IDENTITY:
        gx = gy
        if need_b:
            db = _sum_except(gy, ctx.dim)
    else:
        gx, db = _ops.bias_act_backward(gy, y, ctx.code, ctx.slope, ctx.dim, bool(need_b))
    if db is not None and need_b:
        db = db.to(ctx.bias_dtype)
    else:
        db = None
    return (gx if need_x else None), db, None, None, None


torch.library.register_autograd("fastgan::bias_act", _bias_act_bwd, setup_context=_bias_act_setup)


# bias_act_backward: (gx, db) = (g * act'(y), sum(g * act'(y))): linear in g. Registered so
# that double backward (gradient penalties) goes through linear_act/bias_act. The leaky mask is
# constant a.e. in y; tanh's act'(y) = 1 - y^2 and sigmoid's y(1 - y) are not, so their
# gradient in y (-2y, 1 - 2y, times g) is formed here too (torch ops: a rare path).
def _bias_act_backward_setup(ctx, inputs, output):
    grad, y, code, slope, dim, need_db = inputs
    ctx.code, ctx.slope = code, slope
    ctx.dim, ctx.need_db = dim % y.dim() if y.dim() > 0 else 0, need_db
    ctx.save_for_backward(y, grad if code in (TANH, SIGMOID) else None)


def _bias_act_backward_bwd(ctx, g_gx, g_db):
    y, grad = ctx.saved_tensors
    need_g, need_y = ctx.needs_input_grad[0], ctx.needs_input_grad[1] and grad is not None
    if not (need_g or need_y):
        return None, None, None, None, None, None
    total = g_gx if g_gx is not None else torch.zeros_like(y)
    if ctx.need_db and g_db is not None and g_db.numel() > 0:
        shape = [1] * y.dim()
        shape[ctx.dim] = -1
        total = total + g_db.view(shape)
    gg = _ops.bias_act_backward(total, y, ctx.code, ctx.slope, ctx.dim, False)[0] if need_g else None
    gyy = None
    if need_y:
        gyy = total * grad * (-2.0 * y if ctx.code == TANH else 1.0 - 2.0 * y)
    return gg, gyy, None, None, None, None


torch.library.register_autograd("fastgan::bias_act_backward", _bias_act_backward_bwd,
                                setup_context=_bias_act_backward_setup)


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor], slope: Union[None, float, str],
             dim: int = 1) -> torch.Tensor:
    code, s = act_code(slope)
    if bias is None and code == IDENTITY:
        return x  # identity, as the reference
    return _ops.bias_act(x, bias, code, s, int(dim))


bias_act_cpu = _cpu_pick("bias_act", bias_act, _reference, lambda x, *a, **k: x.numel())

register("bias_act", "cuda", ("cpu",), bias_act_cpu)
if "cuda" in DEVICE_TYPES:
    register("bias_act", "cuda", ("cuda",), bias_act)
