"""linear_act: ``y = act(x @ W.T + b)`` as one Triton matmul with bias and activation fused.

Forward: one tiled matmul (:mod:`.matmul`) with the bias add and the activation
(ReLU/LeakyReLU/tanh/sigmoid) in its epilogue. Backward: ``dX = (dY * act'(y)) @ W`` and
``dW = (dY * act'(y)).T @ x`` in one launch (:func:`.matmul.mm_grad_pair`: the first programs
compute dX tiles, the rest dW tiles), the activation mask applied to the dY tiles as they are
loaded (no separate elementwise pass); ``db`` is the row sum of the masked dY tiles, reduced
inside the dW problem (by the programs of its first output column block). A backward that needs
only one of dX and dW (+ db) launches that one problem alone.
Only ``x``, ``W`` and ``y`` are saved: ``y > 0`` iff the pre-activation is > 0 (ReLU and
LeakyReLU with slope > 0), which is all the mask needs; tanh' = 1 - y², sigmoid' = y(1 - y).

Small batches: the tensor-core tile needs 64 rows per warpgroup, so when the batch is smaller
than 64 the launcher computes the transposed product (``y.T = W @ x.T``) instead, putting the
features on the 64-row side; the kernel is the same, the strides are swapped. In the backward
each of the two problems makes that choice (:func:`_swap`) for itself.

Tiny output width (M <= 4, the final 1-logit layer): the matrix-vector kernels of :mod:`.gemv`
(one launch for the whole backward).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .bias_act import act_grad_torch, act_torch
from .gemv import SMALL_M, gemv_backward, gemv_forward
# mm_kernel, MM_CONFIGS and _INTERP_CONFIG also for the tests (tile cache, config list)
from .matmul import MM_CONFIGS, _INTERP_CONFIG, Problem, mm, mm_grad, mm_grad_pair  # noqa: F401
from .matmul import mm_kernel  # noqa: F401

Tensor = torch.Tensor


def _swap(p_nat: int, q_nat: int) -> bool:
    """Compute the transposed product when the natural 64-row side is the small one."""
    return p_nat < 64 and q_nat > p_nat


def linear_act_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                       code: int, s: float, bn: Optional[tuple] = None,
                       out: Optional[Tensor] = None) -> Tensor:
    """y[N, M] = act(x[N, K] @ weight[M, K].T + bias[M]) (act: the code of
    fastgan/ops/activation.py with its slope s), then with ``bn`` = (mean, var, w, b, eps), all
    [M] (w, b filled in by the caller), an inference-mode batch norm in the same epilogue.
    ``out``: an [N, M] tensor of x's dtype (any strides) the epilogue writes y into.
    Inputs may be non-contiguous."""
    N, K = x.shape
    M = weight.shape[0]
    if bn is not None and (K == 0 or M <= SMALL_M):   # rare shapes: the two ops in sequence
        y = linear_act_forward(x, weight, bias, code, s)
        m, v, w, b = (t.to(y.dtype) if y.dtype == torch.float64 else t for t in bn[:4])
        return torch.nn.functional.batch_norm(y, m, v, w, b, False, 0.0, bn[4])
    y = torch.empty((N, M), device=x.device, dtype=x.dtype) if out is None else out
    act = code
    if N == 0 or M == 0:
        return y
    if K == 0:
        y.zero_()
        if bias is not None:
            y += bias.to(y.dtype)
        return y.copy_(act_torch(y, act, s))
    if M <= SMALL_M:
        return gemv_forward(x, weight, bias, y, act, s)
    if _swap(N, M):   # y.T[M, N] = W[M, K] @ x.T[K, N]
        mm(weight, x, y, M, N, K, (weight.stride(0), weight.stride(1)), (x.stride(1), x.stride(0)),
           (y.stride(1), y.stride(0)), bias=bias, act=act, slope=s,
           bias_mode=2 if bias is not None else 0, dtype=x.dtype, bn=bn, bn_mode=2 if bn else 0)
    else:             # y[N, M] = x[N, K] @ W.T[K, M]
        mm(x, weight, y, N, M, K, (x.stride(0), x.stride(1)), (weight.stride(1), weight.stride(0)),
           (y.stride(0), y.stride(1)), bias=bias, act=act, slope=s,
           bias_mode=1 if bias is not None else 0, dtype=x.dtype, bn=bn, bn_mode=1 if bn else 0)
    return y


def _t(st: Tuple[int, int]) -> Tuple[int, int]:
    return st[1], st[0]


def _dx_problem(grad: Tensor, weight: Tensor, y: Tensor, dx: Tensor,
                f: Optional[Tensor] = None) -> Problem:
    """dX; ``f``: an [N, M] view (zero strides) of a head's weight, dY's factor (sf)."""
    N, K = dx.shape
    M = weight.shape[0]
    sg, sy, sw, sd = grad.stride(), y.stride(), weight.stride(), dx.stride()
    sf = f.stride() if f is not None else (0, 0)
    if _swap(N, K):  # dX.T[K, N] = W.T[K, M] @ dY'.T[M, N]
        return Problem(weight, grad, dx, K, N, M, _t(sw), _t(sg), _t(sd), _t(sy), 2, _t(sf))
    # dX[N, K] = dY'[N, M] @ W[M, K]
    return Problem(grad, weight, dx, N, K, M, sg, sw, sd, sy, 1, sf)


def _dw_problem(grad: Tensor, x: Tensor, y: Tensor, dw: Tensor,
                f: Optional[Tensor] = None) -> Problem:
    """dW, with db from dY's operand (the B operand when swapped, else A); ``f`` as
    :func:`_dx_problem`'s."""
    N, K = x.shape
    M = dw.shape[0]
    sg, sy, sx, sd = grad.stride(), y.stride(), x.stride(), dw.stride()
    sf = f.stride() if f is not None else (0, 0)
    if _swap(M, K):  # dW.T[K, M] = x.T[K, N] @ dY'[N, M]
        return Problem(x, grad, dw, K, M, N, _t(sx), sg, _t(sd), sy, 2, sf)
    # dW[M, K] = dY'.T[M, N] @ x[N, K]
    return Problem(grad, x, dw, M, K, N, _t(sg), sx, sd, _t(sy), 1, _t(sf))


def linear_act_backward(grad: Tensor, x: Tensor, weight: Tensor, y: Optional[Tensor],
                        code: int, s: float, need_dx: bool, need_dw: bool, need_db: bool
                        ) -> Tuple[Tensor, Tensor, Tensor]:
    """(dX, dW, db); a gradient not asked for comes back as an empty tensor."""
    N, K = x.shape
    M = weight.shape[0]
    act = code
    if not act:
        y = grad  # never read without an activation; a placeholder pointer
    dx = torch.empty((N, K), device=x.device, dtype=x.dtype) if need_dx else grad.new_empty(0)
    dw = torch.empty((M, K), device=x.device, dtype=weight.dtype) if need_dw else grad.new_empty(0)
    db = torch.empty((M,), device=x.device, dtype=weight.dtype) if need_db else grad.new_empty(0)
    if N == 0 or K == 0 or M == 0:
        for t in (dx, dw, db):
            t.zero_()
        if need_db and N > 0 and K == 0:
            g = act_grad_torch(grad, y, act, s)
            db.copy_(g.sum(0))
        return dx, dw, db
    if M <= SMALL_M:
        gemv_backward(grad, x, weight, y, act, s, dx, dw, db, need_dx, need_dw, need_db)
        return dx, dw, db
    db_out = db if need_db else None
    pw = None
    if need_dw or need_db:   # db alone still runs the dW problem (into a scratch dW)
        dw_out = dw if need_dw else torch.empty((M, K), device=x.device, dtype=weight.dtype)
        pw = _dw_problem(grad, x, y, dw_out)
    if need_dx and pw is not None:
        mm_grad_pair(_dx_problem(grad, weight, y, dx), pw, y, db_out, act, s, x.dtype)
    elif need_dx:
        mm_grad(_dx_problem(grad, weight, y, dx), y, None, act, s, x.dtype)
    elif pw is not None:
        mm_grad(pw, y, db_out, act, s, x.dtype)
    return dx, dw, db
