"""linear_act for the cuda backend: ``fastgan::linear_act`` (torch matmul with the fused bias +
activation epilogue) with its fake, its autograd formula (the fused mask + bias-gradient
kernel, then two matmuls), the registry entry and its CPU size policy."""
from __future__ import annotations

from typing import Optional, Union

import torch

from fastgan.backends.reference import linear_act as _reference
from fastgan.ops.activation import IDENTITY, act_code
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _ops


@torch.library.register_fake("fastgan::linear_act")
def _linear_act_fake(x, weight, bias, code, slope, bn_mean=None, bn_var=None, bn_weight=None,
                     bn_bias=None, bn_eps=0.0):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


# linear_act: y = act(x @ W.T + b); matmuls for dX and dW, the fused kernel for act'(y) + db.
def _linear_act_setup(ctx, inputs, output):
    x, weight, bias, code, slope = inputs[:5]  # the bn_* (inference only) never need grad
    ctx.code, ctx.slope = code, slope
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, weight, output if code != IDENTITY else None)


def _linear_act_bwd(ctx, gy):
    x, weight, y = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    m, k = weight.shape
    gy2 = gy.reshape(-1, m)
    db = None
    if ctx.code == IDENTITY:
        gz = gy2
        if need_b:
            db = gz.sum(0)
    else:
        gz, db = _ops.bias_act_backward(gy2, y.reshape(-1, m), ctx.code, ctx.slope, 1, bool(need_b))
    dx = (gz @ weight).reshape(x.shape) if need_x else None
    dw = gz.t() @ x.reshape(-1, k) if need_w else None
    db = db.to(ctx.bias_dtype) if (need_b and db is not None) else None
    return (dx, dw, db) + (None,) * 7


torch.library.register_autograd("fastgan::linear_act", _linear_act_bwd, setup_context=_linear_act_setup)


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               slope: Union[None, float, str], bn_eval=None) -> torch.Tensor:
    if bn_eval is None:
        return _ops.linear_act(x, weight, bias, *act_code(slope))
    return _ops.linear_act(x, weight, bias, *act_code(slope), *bn_eval)


linear_act_cpu = _cpu_pick("linear_act", linear_act, _reference,
                           lambda x, w, *a, **k: (x.numel() // max(1, x.shape[-1])) * w.shape[0])

register("linear_act", "cuda", ("cpu",), linear_act_cpu)
if "cuda" in DEVICE_TYPES:
    register("linear_act", "cuda", ("cuda",), linear_act)
