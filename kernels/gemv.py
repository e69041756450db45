"""linear_act's tiny-output-width path (M <= ``SMALL_M``, the final 1-logit layer): no tensor
cores, memory bound, so a matrix-vector kernel rather than the tiled matmul of :mod:`.matmul`.

Forward: ``y = act(x @ W.T + b)``, each program a block of rows reduced over K. Backward: one
fused kernel that reads x and dY once and writes dX together with dW and db (batches up to one
row block, the variants' batches: one launch in all; larger batches: per-row-block dW/db partials
summed by a small deterministic reduction, :func:`._common.sum_dim0`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_torch, acc_type, next_pow2, sum_dim0
from .bias_act import act_fwd, act_grad
from .launch import cached

Tensor = torch.Tensor

SMALL_M = 4


@cached
@triton.jit
def _gemv_fwd_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, N, M, K,
                     s_xn, s_xk, s_wm, s_wk, s_yn, s_ym, slope,
                     ACT: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """y[n, m] = act(sum_k x[n, k] w[m, k] + b[m]) for a tiny M (<= BLOCK_M <= 4)."""
    pid = tl.program_id(0)
    offs_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = tl.arange(0, BLOCK_K)
    mn = offs_n < N
    mm = offs_m < M
    acc = tl.full((BLOCK_N, BLOCK_M, BLOCK_K), 0.0, ACC)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mk = kk < K
        xv = tl.load(x_ptr + offs_n[:, None] * s_xn + kk[None, :] * s_xk,
                     mask=mn[:, None] & mk[None, :], other=0.0).to(ACC)
        wv = tl.load(w_ptr + offs_m[:, None] * s_wm + kk[None, :] * s_wk,
                     mask=mm[:, None] & mk[None, :], other=0.0).to(ACC)
        acc += xv[:, None, :] * wv[None, :, :]
    out = tl.sum(acc, axis=2)
    if HAS_BIAS:
        out += tl.load(bias_ptr + offs_m, mask=mm, other=0.0).to(ACC)[None, :]
    out = act_fwd(out, slope, ACT)
    tl.store(y_ptr + offs_n[:, None] * s_yn + offs_m[None, :] * s_ym,
             out.to(y_ptr.dtype.element_ty), mask=mn[:, None] & mm[None, :])


@cached
@triton.jit
def _gemv_bwd_kernel(g_ptr, y_ptr, x_ptr, w_ptr, dx_ptr, pdw_ptr, pdb_ptr,
                     N, M, K,
                     s_gn, s_gm, s_yn, s_ym, s_xn, s_xk, s_wm, s_wk, s_dxn, s_dxk,
                     s_pw, s_pb, slope,
                     ACT: tl.constexpr, NEED_DX: tl.constexpr, NEED_DW: tl.constexpr,
                     NEED_DB: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr):
    """Backward of the tiny-M linear in one pass over x and dY.

    Program (n-block i, k-block j): g' = dY[i] * act'(y[i]); dX[i, j] = g' @ W[:, j];
    pdw[i, :, j] = g'.T @ x[i, j] (partial dW of this row block); pdb[i, :] = sum_n g' (j == 0).
    """
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mn = offs_n < N
    mm = offs_m < M
    mk = offs_k < K
    mnm = mn[:, None] & mm[None, :]
    g = tl.load(g_ptr + offs_n[:, None] * s_gn + offs_m[None, :] * s_gm, mask=mnm,
                other=0.0).to(ACC)
    if ACT != 0:
        yv = tl.load(y_ptr + offs_n[:, None] * s_yn + offs_m[None, :] * s_ym, mask=mnm, other=0.0)
        g = act_grad(g, yv, slope, ACT)
    if NEED_DX:
        wv = tl.load(w_ptr + offs_m[:, None] * s_wm + offs_k[None, :] * s_wk,
                     mask=mm[:, None] & mk[None, :], other=0.0).to(ACC)
        dx = tl.sum(g[:, :, None] * wv[None, :, :], axis=1)
        tl.store(dx_ptr + offs_n[:, None] * s_dxn + offs_k[None, :] * s_dxk,
                 dx.to(dx_ptr.dtype.element_ty), mask=mn[:, None] & mk[None, :])
    if NEED_DW:
        xv = tl.load(x_ptr + offs_n[:, None] * s_xn + offs_k[None, :] * s_xk,
                     mask=mn[:, None] & mk[None, :], other=0.0).to(ACC)
        pw = tl.sum(g[:, :, None] * xv[:, None, :], axis=0)
        tl.store(pdw_ptr + pid_n * s_pw + offs_m[:, None] * K + offs_k[None, :],
                 pw.to(pdw_ptr.dtype.element_ty), mask=mm[:, None] & mk[None, :])
    if NEED_DB:
        if pid_k == 0:
            tl.store(pdb_ptr + pid_n * s_pb + offs_m,
                     tl.sum(g, axis=0).to(pdb_ptr.dtype.element_ty), mask=mm)


def _gemv_blocks(N: int, M: int, K: int) -> Tuple[int, int, int]:
    bm = next_pow2(M)
    bn = 16 if config.INTERPRET else max(1, min(16, next_pow2(triton.cdiv(N, 256))))
    bk = max(16, min(1024, 4096 // (bn * bm), next_pow2(K)))
    return bn, bm, bk


def gemv_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], y: Tensor, act: int,
                 s: float) -> Tensor:
    """y[:] = act(x @ weight.T + bias) for weight [M <= SMALL_M, K], N, K > 0."""
    N, K = x.shape
    M = weight.shape[0]
    bn, bm, bk = _gemv_blocks(N, M, K)
    _gemv_fwd_kernel[(triton.cdiv(N, bn),)](
        x, weight, bias if bias is not None else y, y, N, M, K,
        x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
        s, ACT=act, HAS_BIAS=bias is not None, ACC=acc_type(x.dtype),
        BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk)
    return y


def gemv_backward(grad: Tensor, x: Tensor, weight: Tensor, y: Tensor, act: int, s: float,
                  dx: Tensor, dw: Tensor, db: Tensor, need_dx: bool, need_dw: bool,
                  need_db: bool) -> None:
    """Writes the asked-for dX [N, K], dW [M, K], db [M] of the tiny-M linear (N, K > 0);
    ``y`` is read only with an activation."""
    N, K = x.shape
    M = weight.shape[0]
    acc_dt = acc_torch(x.dtype)
    _, bm, _ = _gemv_blocks(N, M, K)
    bn = 16 if config.INTERPRET else max(1, min(64, next_pow2(N)))
    bk = max(16, min(256, 4096 // (bn * bm), next_pow2(K)))
    S = triton.cdiv(N, bn)
    # one row block (the variants' batches): the kernel writes dW and db themselves
    pdw, pdb = dw, db
    if S > 1 and need_dw:
        pdw = torch.empty((S, M * K), device=x.device, dtype=acc_dt)
    if S > 1 and need_db:
        pdb = torch.empty((S, M), device=x.device, dtype=acc_dt)
    _gemv_bwd_kernel[(S, triton.cdiv(K, bk))](
        grad, y, x, weight, dx if need_dx else grad, pdw if need_dw else grad,
        pdb if need_db else grad, N, M, K,
        grad.stride(0), grad.stride(1), y.stride(0), y.stride(1), x.stride(0), x.stride(1),
        weight.stride(0), weight.stride(1),
        dx.stride(0) if need_dx else 0, dx.stride(1) if need_dx else 0,
        M * K, M, s, ACT=act, NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db,
        ACC=acc_type(x.dtype), BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk)
    if need_dw and S > 1:
        sum_dim0(pdw, dw)
    if need_db and S > 1:
        sum_dim0(pdb, db)
