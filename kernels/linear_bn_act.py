"""linear_bn_act: ``y = act_post(batch_norm_train(act_pre(x @ W.T + b)))`` when the batch fits one
tile: each program owns BLOCK_Q output columns and *every* row (BLOCK_P >= N), so the matmul's
epilogue sees whole columns and computes the batch statistics, updates the running statistics,
normalizes and applies act_post in the same kernel (:func:`_fwd_kernel`). ``h`` (after act_pre,
rounded to the tensor dtype) is stored for the backward.

Backward: one launch (:func:`_bwd_kernel`) whose programs each compute a dX tile (a block of K,
every row) or a dW tile (a block of columns x a block of K). Both start from dL/dz of whole
columns (:func:`_grad_z`: act_post' read off the recomputed BN output, BN's two column reductions
in-tile, act_pre' read off h): a dW program for its one column block (its first-K-block programs
also write db, dgamma, dbeta), a dX program for every column block in turn, recomputed rather
than shared (no grid-wide sync inside one launch; gy and h are small enough to stay in L2).

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
from .launch import cached

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


@cached
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
def _grad_z(gy_ptr, h_ptr, g_ptr, b_ptr, mean_ptr, invstd_ptr, N, M, s_gn, s_gm, offs_q,
            slope_pre, slope_post, PRE: tl.constexpr, POST: tl.constexpr,
            HAS_G: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
            BLOCK_P: tl.constexpr):
    """(gz, dbeta, dgamma) of columns offs_q over all N rows: gz = dL/dz [BLOCK_P, Q] rounded
    to the tensor dtype (zero outside N x M); dbeta = sum gu, dgamma = sum gu * xhat, with gu =
    dL/du through act_post."""
    offs_p = tl.arange(0, BLOCK_P)
    mp = offs_p < N
    mq = offs_q < M
    m2d = mp[:, None] & mq[None, :]
    hv = tl.load(h_ptr + offs_p[:, None] * M + offs_q[None, :], mask=m2d, other=0.0).to(ACC)
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
    # padded rows would carry -scale * sg / n into the products: zero them
    gz = tl.where(m2d, act_grad(gh, hv, slope_pre, PRE), 0.0).to(h_ptr.dtype.element_ty)
    return gz, sg, sgx * invstd


@cached
@triton.jit
def _bwd_kernel(gy_ptr, h_ptr, x_ptr, w_ptr, g_ptr, b_ptr, mean_ptr, invstd_ptr,
                dx_ptr, dw_ptr, db_ptr, dg_ptr, dbeta_ptr, N, M, K,
                s_gn, s_gm, s_xn, s_xk, s_wm, s_wk, n_dx, slope_pre, slope_post,
                PRE: tl.constexpr, POST: tl.constexpr, HAS_G: tl.constexpr, HAS_B: tl.constexpr,
                NEED_DW: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                ACC: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
                BLOCK_K: tl.constexpr, BLOCK_QX: tl.constexpr, BLOCK_KX: tl.constexpr):
    """Programs [0, n_dx): dX.T[k-block, :] = sum over column blocks of W.T @ gz.T (gz
    recomputed per block). The others: (column block, k-block) of dW = gz.T @ x, and on the
    first k-block db, dgamma, dbeta of those columns."""
    pid = tl.program_id(0)
    offs_p = tl.arange(0, BLOCK_P)
    mp = offs_p < N
    if pid < n_dx:
        # the transposed product puts the K block on the 64-row side whatever N is
        offs_k = pid * BLOCK_KX + tl.arange(0, BLOCK_KX)
        mk = offs_k < K
        acc = tl.full((BLOCK_KX, BLOCK_P), 0.0, ACC)
        for q0 in range(0, M, BLOCK_QX):
            offs_q = q0 + tl.arange(0, BLOCK_QX)
            gz, _, _ = _grad_z(gy_ptr, h_ptr, g_ptr, b_ptr, mean_ptr, invstd_ptr, N, M, s_gn,
                               s_gm, offs_q, slope_pre, slope_post, PRE, POST, HAS_G, HAS_B,
                               ACC, BLOCK_P)
            wt = tl.load(w_ptr + offs_k[:, None] * s_wk + offs_q[None, :] * s_wm,
                         mask=mk[:, None] & (offs_q < M)[None, :], other=0.0)
            gzt = tl.trans(gz)
            if UPCAST:
                wt = wt.to(tl.float32)
                gzt = gzt.to(tl.float32)
            acc = tl.dot(wt, gzt, acc, input_precision=PREC, out_dtype=ACC)
        tl.store(dx_ptr + offs_p[None, :] * K + offs_k[:, None],
                 acc.to(dx_ptr.dtype.element_ty), mask=mk[:, None] & mp[None, :])
    else:
        pid_w = pid - n_dx
        num_k = tl.cdiv(K, BLOCK_K) if NEED_DW else 1
        pid_q = pid_w // num_k
        pid_k = pid_w % num_k
        offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
        mq = offs_q < M
        gz, dbeta, dgamma = _grad_z(gy_ptr, h_ptr, g_ptr, b_ptr, mean_ptr, invstd_ptr, N, M, s_gn,
                              s_gm, offs_q, slope_pre, slope_post, PRE, POST, HAS_G, HAS_B,
                              ACC, BLOCK_P)
        if pid_k == 0:
            tl.store(db_ptr + offs_q, tl.sum(gz.to(ACC), axis=0), mask=mq)
            tl.store(dg_ptr + offs_q, dgamma, mask=mq)
            tl.store(dbeta_ptr + offs_q, dbeta, mask=mq)
        if NEED_DW:
            # the column block is the 64-row side of the product
            offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
            mk = offs_k < K
            xv = tl.load(x_ptr + offs_p[:, None] * s_xn + offs_k[None, :] * s_xk,
                         mask=mp[:, None] & mk[None, :], other=0.0)
            gzt = tl.trans(gz)
            if UPCAST:
                xv = xv.to(tl.float32)
                gzt = gzt.to(tl.float32)
            dw = tl.dot(gzt, xv, input_precision=PREC, out_dtype=ACC)
            tl.store(dw_ptr + offs_q[:, None] * K + offs_k[None, :],
                     dw.to(dw_ptr.dtype.element_ty), mask=mq[:, None] & mk[None, :])


def _bwd_blocks(N: int, M: int, K: int) -> Tuple[int, int, int, int, int, int]:
    """(BLOCK_P, BLOCK_Q, BLOCK_K, BLOCK_QX, BLOCK_KX, num_warps) of the backward: dW tiles
    BLOCK_Q x BLOCK_K, dX tiles BLOCK_KX x N stepping BLOCK_QX columns; gz [BLOCK_P, Q] in
    registers."""
    bp = max(16, next_pow2(N))
    if config.INTERPRET:
        bq = max(16, min(256, next_pow2(M)))
        bk = max(16, min(256, next_pow2(K)))
        return bp, bq, bk, bq, bk, 4
    return bp, 64, 64, 64 if bp <= 64 else 32, 64, 4 if bp <= 64 else 8


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
    """(dX, dW, db, dgamma, dbeta) in one launch: db/dgamma/dbeta in the accumulation dtype;
    dX / dW empty when not asked for."""
    N, M = h.shape
    K = x.shape[1]
    acc = acc_torch(h.dtype)
    dx = torch.empty((N, K), device=x.device, dtype=x.dtype) if need_dx else grad.new_empty(0)
    dw = torch.empty((M, K), device=x.device, dtype=weight.dtype) if need_dw else grad.new_empty(0)
    db = torch.empty((M,), device=h.device, dtype=acc)
    dg, dbeta = torch.empty_like(db), torch.empty_like(db)
    if M == 0:
        if need_dx:
            dx.zero_()
        return dx, dw, db, dg, dbeta
    bp, bq, bk, bqx, bkx, warps = _bwd_blocks(N, M, K)
    n_dx = triton.cdiv(K, bkx) if need_dx else 0
    dw_on = need_dw and K > 0
    n_dw = triton.cdiv(M, bq) * (triton.cdiv(K, bk) if dw_on else 1)
    _bwd_kernel[(n_dx + n_dw,)](
        grad, h, x, weight, gamma if gamma is not None else db, beta if beta is not None else db,
        mean, invstd, dx if need_dx else db, dw if dw_on else db, db, dg, dbeta, N, M, K,
        grad.stride(0), grad.stride(1), x.stride(0), x.stride(1), weight.stride(0),
        weight.stride(1), n_dx, slope_pre, slope_post, PRE=pre, POST=post,
        HAS_G=gamma is not None, HAS_B=beta is not None, NEED_DW=dw_on,
        PREC=config.dot_precision(x.dtype), UPCAST=config.dot_upcast(x.dtype),
        ACC=acc_type(h.dtype), BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=bk, BLOCK_QX=bqx, BLOCK_KX=bkx,
        num_warps=warps)
    return dx, dw, db, dg, dbeta
