"""linear_act_head: ``logits = act(x @ W.T + b) @ w.T + c`` for a 1-output head ``w`` [1, M]
(a discriminator's last hidden layer and its logit), with the backward in one launch.

Forward: the hidden layer's tiled matmul (:func:`.linear_act.linear_act_forward`, activation in
the epilogue), then the head's matrix-vector kernel (:mod:`.gemv`); the hidden output ``h`` is
kept for the backward. Backward: the hidden layer's dY is the rank-1 ``g w`` (g = dL/dlogits,
[N]), so it is never written: the matmul's dY operand reads g through a zero stride and
multiplies in w and act'(h) as its tiles are loaded (:func:`.matmul._head_dy`); dX, dW + db and
the head's ``dw = g.T @ h``, ``dc = sum g`` come from one grid (:func:`.matmul.mm_grad_pair`; the
head's from the programs that reduce db). Where that does not apply (a head of more than one
output, empty shapes) the two layers' backwards run in turn.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .linear_act import (_dw_problem, _dx_problem, linear_act_backward, linear_act_forward,
                         mm_grad, mm_grad_pair)

Tensor = torch.Tensor


def linear_act_head_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], code: int,
                            s: float, head_weight: Tensor, head_bias: Optional[Tensor]
                            ) -> Tuple[Tensor, Tensor]:
    """(logits [N, H], h [N, M]) for x [N, K], weight [M, K], head_weight [H, M]."""
    h = linear_act_forward(x, weight, bias, code, s)
    return linear_act_forward(h, head_weight, head_bias, 0, 0.0), h


def linear_act_head_backward(grad: Tensor, x: Tensor, weight: Tensor, h: Tensor, code: int,
                             s: float, head_weight: Tensor, need: Tuple[bool, ...]
                             ) -> Tuple[Tensor, ...]:
    """(dX, dW, db, dw, dc) for ``need`` = which of them are wanted (the others empty)."""
    need_dx, need_dw, need_db, need_hw, need_hb = need
    N, K = x.shape
    M, H = weight.shape[0], head_weight.shape[0]
    empty = lambda: grad.new_empty(0)  # noqa: E731  (one each: custom op outputs never alias)
    if H != 1 or N == 0 or K == 0 or M == 0:   # the two layers' backwards in turn
        dh, hw, hb = linear_act_backward(grad, h, head_weight, None, 0, 0.0,
                                         need_dx or need_dw or need_db, need_hw, need_hb)
        if not (need_dx or need_dw or need_db):
            return empty(), empty(), empty(), hw, hb
        dx, dw, db = linear_act_backward(dh, x, weight, h, code, s, need_dx, need_dw, need_db)
        return dx, dw, db, hw, hb
    dev, dt = x.device, x.dtype
    dx = torch.empty((N, K), device=dev, dtype=dt) if need_dx else empty()
    dw = torch.empty((M, K), device=dev, dtype=weight.dtype) if need_dw else empty()
    db = torch.empty((M,), device=dev, dtype=weight.dtype) if need_db else empty()
    hw = torch.empty((1, M), device=dev, dtype=head_weight.dtype) if need_hw else empty()
    hb = torch.empty((1,), device=dev, dtype=head_weight.dtype) if need_hb else empty()
    g = grad.expand(N, M)                   # dY = g w, never stored
    f = head_weight.expand(N, M)
    # the head's gradients from the dW problem (scratch for the one not asked for)
    head = (head_weight, None, None)
    if need_hw or need_hb:
        head = (head_weight,
                hw if need_hw else torch.empty((1, M), device=dev, dtype=head_weight.dtype),
                hb if need_hb else torch.empty((1,), device=dev, dtype=head_weight.dtype))
    pw = None
    if need_dw or need_db or head[1] is not None:   # scratch dW when only db or the head's
        dw_out = dw if need_dw else torch.empty((M, K), device=dev, dtype=weight.dtype)
        pw = _dw_problem(g, x, h, dw_out, f)
    db_out = db if need_db else None
    if need_dx and pw is not None:
        mm_grad_pair(_dx_problem(g, weight, h, dx, f), pw, h, db_out, code, s, dt, head=head)
    elif need_dx:
        mm_grad(_dx_problem(g, weight, h, dx, f), h, None, code, s, dt, head=head)
    elif pw is not None:
        mm_grad(pw, h, db_out, code, s, dt, head=head)
    return dx, dw, db, hw, hb
