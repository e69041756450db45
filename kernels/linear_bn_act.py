"""linear_bn_act: ``y = act_post(batch_norm_train(act_pre(x @ W.T + b)))`` when the batch fits one
tile: each program owns BLOCK_Q output columns and *every* row (BLOCK_P >= N), so the matmul's
epilogue sees whole columns and computes the batch statistics, updates the running statistics,
normalizes and applies act_post in the same kernel (:func:`_fwd_kernel`). ``h`` (after act_pre,
rounded to the tensor dtype) is stored for the backward.

Backward: one kernel over whole columns (:func:`_bwd_kernel`) turns dL/dy into dL/dz (act_post'
read off the recomputed BN output, BN's two column reductions, act_pre' read off h) together with
db, dgamma and dbeta (column sums); dX and dW are linear_act's Triton matmuls on dL/dz.

Larger batches (N > MAX_ROWS) are the caller's fallback (linear_act then bn_act).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_torch, acc_type, next_pow2
from .bias_act import act_fwd, act_grad
from .linear_act import linear_act_backward

Tensor = torch.Tensor

MAX_ROWS = 256   # rows one tile holds: fp32 accumulator BLOCK_P x BLOCK_Q in registers


def _blocks(N: int, M: int, K: int) -> Tuple[int, int, int, int]:
    """(BLOCK_P, BLOCK_Q, BLOCK_K, num_warps) for all N rows in one tile."""
    bp = max(16, next_pow2(N))
    if config.INTERPRET:   # few programs: the interpreter's cost is per program and op
        return bp, max(16, min(256, next_pow2(M))), max(16, min(256, next_pow2(K))), 4
    bq = 64 if bp <= 64 else 32
    bk = 64 if bp <= 128 else 32
    return bp, bq, bk, 4 if bp * bq <= 4096 else 8


@triton.jit
def _fwd_kernel(x_ptr, w_ptr, bias_ptr, g_ptr, b_ptr, h_ptr, y_ptr, mean_ptr, invstd_ptr,
                rm_ptr, rv_ptr, N, M, K, s_xn, s_xk, s_wm, s_wk,
                slope_pre, slope_post, momentum, eps, var_div,
                PRE: tl.constexpr, POST: tl.constexpr, HAS_BIAS: tl.constexpr,
                HAS_G: tl.constexpr, HAS_B: tl.constexpr, RUNNING: tl.constexpr,
                PREC: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr):
    pid = tl.program_id(0)
    offs_p = tl.arange(0, BLOCK_P)
    offs_q = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_k = tl.arange(0, BLOCK_K)
    mp = offs_p < N
    mq = offs_q < M
    acc = tl.full((BLOCK_P, BLOCK_Q), 0.0, ACC)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mk = kk < K
        a = tl.load(x_ptr + offs_p[:, None] * s_xn + kk[None, :] * s_xk,
                    mask=mp[:, None] & mk[None, :], other=0.0)
        b = tl.load(w_ptr + offs_q[None, :] * s_wm + kk[:, None] * s_wk,
                    mask=mk[:, None] & mq[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_q, mask=mq, other=0.0).to(ACC)[None, :]
    m2d = mp[:, None] & mq[None, :]
    offs = offs_p[:, None] * M + offs_q[None, :]
    h = act_fwd(acc, slope_pre, PRE).to(h_ptr.dtype.element_ty)
    tl.store(h_ptr + offs, h, mask=m2d)
    hv = tl.where(m2d, h.to(ACC), 0.0)   # the statistics are those of the stored (rounded) h
    n = N.to(ACC)
    mean = tl.sum(hv, axis=0) / n
    d = tl.where(m2d, hv - mean[None, :], 0.0)
    m2 = tl.sum(d * d, axis=0)
    invstd = 1.0 / tl.sqrt(m2 / n + eps)
    tl.store(mean_ptr + offs_q, mean, mask=mq)
    tl.store(invstd_ptr + offs_q, invstd, mask=mq)
    if RUNNING:
        rm = tl.load(rm_ptr + offs_q, mask=mq, other=0.0)
        rv = tl.load(rv_ptr + offs_q, mask=mq, other=0.0)
        tl.store(rm_ptr + offs_q, (1.0 - momentum) * rm + momentum * mean, mask=mq)
        tl.store(rv_ptr + offs_q, (1.0 - momentum) * rv + momentum * (m2 / var_div), mask=mq)
    scale = invstd
    if HAS_G:
        scale = tl.load(g_ptr + offs_q, mask=mq, other=1.0).to(ACC) * invstd
    u = d * scale[None, :]
    if HAS_B:
        u += tl.load(b_ptr + offs_q, mask=mq, other=0.0).to(ACC)[None, :]
    tl.store(y_ptr + offs, act_fwd(u, slope_post, POST).to(y_ptr.dtype.element_ty), mask=m2d)


@triton.jit
def _bwd_kernel(gy_ptr, h_ptr, g_ptr, b_ptr, mean_ptr, invstd_ptr, gz_ptr, db_ptr, dg_ptr,
                dbeta_ptr, N, M, s_gn, s_gm, slope_pre, slope_post,
                PRE: tl.constexpr, POST: tl.constexpr, HAS_G: tl.constexpr, HAS_B: tl.constexpr,
                ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr):
    pid = tl.program_id(0)
    offs_p = tl.arange(0, BLOCK_P)
    offs_q = pid * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mp = offs_p < N
    mq = offs_q < M
    m2d = mp[:, None] & mq[None, :]
    offs = offs_p[:, None] * M + offs_q[None, :]
    hv = tl.load(h_ptr + offs, mask=m2d, other=0.0).to(ACC)
    gy = tl.load(gy_ptr + offs_p[:, None] * s_gn + offs_q[None, :] * s_gm, mask=m2d,
                 other=0.0).to(ACC)
    mean = tl.load(mean_ptr + offs_q, mask=mq, other=0.0)
    invstd = tl.load(invstd_ptr + offs_q, mask=mq, other=0.0)
    scale = invstd
    if HAS_G:
        scale = tl.load(g_ptr + offs_q, mask=mq, other=1.0).to(ACC) * invstd
    xc = tl.where(m2d, hv - mean[None, :], 0.0)
    u = xc * scale[None, :]   # the forward's arithmetic: act_post's mask is the forward's
    if HAS_B:
        u += tl.load(b_ptr + offs_q, mask=mq, other=0.0).to(ACC)[None, :]
    gu = tl.where(m2d, act_grad(gy, u, slope_post, POST), 0.0)
    sg = tl.sum(gu, axis=0)
    sgx = tl.sum(gu * xc, axis=0)
    n = N.to(ACC)
    k2 = sgx * invstd * invstd / n
    gh = scale[None, :] * (gu - (sg / n)[None, :] - xc * k2[None, :])
    gz = act_grad(gh, hv, slope_pre, PRE).to(gz_ptr.dtype.element_ty)
    tl.store(gz_ptr + offs, gz, mask=m2d)
    tl.store(db_ptr + offs_q, tl.sum(tl.where(m2d, gz.to(ACC), 0.0), axis=0), mask=mq)
    tl.store(dg_ptr + offs_q, sgx * invstd, mask=mq)
    tl.store(dbeta_ptr + offs_q, sg, mask=mq)


def fits(N: int) -> bool:
    """Whether every row of a column fits one tile (the fused kernels' condition)."""
    return 1 < N <= MAX_ROWS


def linear_bn_act_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor],
                          gamma: Optional[Tensor], beta: Optional[Tensor],
                          running_mean: Optional[Tensor], running_var: Optional[Tensor],
                          pre: int, slope_pre: float, post: int, slope_post: float,
                          momentum: float, eps: float, unbiased: bool
                          ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, h, mean, invstd) for x [N, K] with fits(N); running_mean / running_var (both or
    neither) contiguous in the accumulation dtype, updated in place."""
    N, K = x.shape
    M = weight.shape[0]
    acc = acc_torch(x.dtype)
    h = torch.empty((N, M), device=x.device, dtype=x.dtype)
    y = torch.empty_like(h)
    mean = torch.empty((M,), device=x.device, dtype=acc)
    invstd = torch.empty_like(mean)
    if M == 0:
        return y, h, mean, invstd
    if K == 0:   # degenerate: h = act_pre(bias), the same kernel with an empty product
        x = x.new_zeros((N, 1))
        weight = weight.new_zeros((M, 1))
        K = 1
    bp, bq, bk, warps = _blocks(N, M, K)
    dummy = mean
    running = running_mean is not None
    _fwd_kernel[(triton.cdiv(M, bq),)](
        x, weight, bias if bias is not None else dummy, gamma if gamma is not None else dummy,
        beta if beta is not None else dummy, h, y, mean, invstd,
        running_mean if running else dummy, running_var if running else dummy,
        N, M, K, x.stride(0), x.stride(1), weight.stride(0), weight.stride(1),
        slope_pre, slope_post, momentum, eps, float(N - 1 if unbiased else N),
        PRE=pre, POST=post, HAS_BIAS=bias is not None, HAS_G=gamma is not None,
        HAS_B=beta is not None, RUNNING=running, PREC=config.dot_precision(x.dtype),
        UPCAST=config.dot_upcast(x.dtype), ACC=acc_type(x.dtype),
        BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=bk, num_warps=warps)
    return y, h, mean, invstd


def linear_bn_act_backward(grad: Tensor, x: Tensor, weight: Tensor, h: Tensor,
                           gamma: Optional[Tensor], beta: Optional[Tensor], mean: Tensor,
                           invstd: Tensor, pre: int, slope_pre: float, post: int,
                           slope_post: float, need_dx: bool, need_dw: bool
                           ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dX, dW, db, dgamma, dbeta): db/dgamma/dbeta in the accumulation dtype; dX / dW empty
    when not asked for."""
    N, M = h.shape
    acc = acc_torch(h.dtype)
    gz = torch.empty_like(h)
    db = torch.empty((M,), device=h.device, dtype=acc)
    dg, dbeta = torch.empty_like(db), torch.empty_like(db)
    if M > 0:
        bp, bq, _, warps = _blocks(N, M, 1)
        _bwd_kernel[(triton.cdiv(M, bq),)](
            grad, h, gamma if gamma is not None else db, beta if beta is not None else db,
            mean, invstd, gz, db, dg, dbeta, N, M, grad.stride(0), grad.stride(1),
            slope_pre, slope_post, PRE=pre, POST=post, HAS_G=gamma is not None,
            HAS_B=beta is not None, ACC=acc_type(h.dtype), BLOCK_P=bp, BLOCK_Q=bq,
            num_warps=warps)
    dx, dw, _ = linear_act_backward(gz, x, weight, None, 0, 0.0, need_dx, need_dw, False)
    return dx, dw, db, dg, dbeta
