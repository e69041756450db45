"""linear_act: ``y = act(x @ W.T + b)`` as one Triton matmul with bias and activation fused.

Forward: one tiled ``tl.dot`` kernel (:func:`_mm_kernel`) with the bias add and the
activation (ReLU/LeakyReLU/tanh/sigmoid) in its epilogue. Backward: the same kernel computes
``dX = (dY * act'(y)) @ W`` and ``dW = (dY * act'(y)).T @ x``, the activation mask applied to the
dY tiles as they are loaded (no separate elementwise pass); ``db`` is the row sum of the masked
dY tiles, reduced inside the dW kernel (by the programs of the first output column block).
Only ``x``, ``W`` and ``y`` are saved: ``y > 0`` iff the pre-activation is > 0 (ReLU and
LeakyReLU with slope > 0), which is all the mask needs; tanh' = 1 - y², sigmoid' = y(1 - y).

Small batches: the tensor-core tile needs 64 rows per warpgroup, so when the batch is smaller
than 64 the launcher computes the transposed product (``y.T = W @ x.T``) instead, putting the
features on the 64-row side; the kernel is the same, the strides are swapped.

Tiny output width (M <= 4, the final 1-logit layer): a matrix-vector kernel (no tensor cores,
memory bound) for the forward, and one fused backward kernel that reads x and dY once and writes
dX together with dW and db (batches up to 64 rows: one launch in all; larger batches: per-row-
block dW/db partials summed by a small deterministic reduction).

fp32 inputs use ``fastgan.kernels.config.DOT_PRECISION`` (tf32 by default on CUDA, ieee under
the interpreter); bf16 inputs go to the tensor cores as bf16 with fp32 accumulation.
Autotuned over ``MM_CONFIGS`` keyed on the problem shape; under the interpreter never
benchmarked: ``_prune`` returns the one tile it picks for the shape.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_torch, acc_type, next_pow2, sum_dim0
from .bias_act import act_fwd, act_grad, act_grad_torch, act_torch, bn_eval_tile

Tensor = torch.Tensor

# (BLOCK_P, BLOCK_Q, BLOCK_K, num_warps, num_stages): P is the 64-row (wgmma M) side.
_MM_CONFIG_TUPLES = [
    (64, 32, 64, 4, 3),     # small batches (transposed: 32 batch columns), features up to ~1k
    (64, 64, 64, 4, 3),
    (128, 64, 32, 4, 4),
    (64, 128, 32, 4, 4),
    (128, 128, 32, 8, 3),   # large batches (mlp at 4096-8192)
]
_INTERP_CONFIG = (32, 32, 32, 4, 1)
# The interpreter's cost is per program instance and per op: products above
# config.INTERPRET_BIG_WORK multiply-adds (the variants' layers) run with tiles fitted to the
# problem up to 1024 x 1024 x 256 (the fastest cap of those tried, 256..1024 per side, on the mlp
# layers), the small test shapes with small tiles that cross blocks.
_INTERP_BIG_CONFIG = (1024, 1024, 256, 4, 1)


def _make_configs(tuples):
    return [triton.Config({"BLOCK_P": p, "BLOCK_Q": q, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for p, q, k, w, s in tuples]


MM_CONFIGS = _make_configs(_MM_CONFIG_TUPLES)
# Under the interpreter the list only needs two entries, so that the autotuner calls _prune,
# which builds the one config used.
_ACTIVE_MM_CONFIGS = (_make_configs([_INTERP_CONFIG, _INTERP_BIG_CONFIG]) if config.INTERPRET
                      else MM_CONFIGS)


def _prune(configs, named_args, **kwargs):
    """Drop configs whose tile is far larger than the problem (keeps at least one)."""
    P, Q = named_args["P"], named_args["Q"]
    if config.INTERPRET:  # one config, never benchmarked: small tiles unless the product is big
        if P * Q * named_args["K"] <= config.INTERPRET_BIG_WORK:
            return _make_configs([_INTERP_CONFIG])
        bp, bq, bk, w, s = _INTERP_BIG_CONFIG
        return _make_configs([(min(bp, max(32, next_pow2(P))), min(bq, max(32, next_pow2(Q))),
                               min(bk, max(32, next_pow2(named_args["K"]))), w, s)])
    keep = [c for c in configs
            if c.kwargs["BLOCK_P"] <= max(64, next_pow2(P))
            and c.kwargs["BLOCK_Q"] <= max(32, next_pow2(Q))]
    return keep or configs[:1]


@triton.jit
def _mm_kernel(a_ptr, b_ptr, c_ptr, y_ptr, bias_ptr, db_ptr,
               P, Q, K,
               s_ap, s_ak, s_bk, s_bq, s_cp, s_cq, s_y0, s_y1,
               slope, bnm_ptr, bnv_ptr, bnw_ptr, bnb_ptr, bn_eps,
               ACT: tl.constexpr, BIAS_MODE: tl.constexpr, GRAD: tl.constexpr, DB: tl.constexpr,
               BN: tl.constexpr,
               PREC: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr,
               BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
               GROUP_P: tl.constexpr = 8):
    """C[P, Q] = epilogue(sum_k A'[p, k] B'[k, q]).

    GRAD: 0 forward (ACT, the activation code of bias_act.act_fwd, in the epilogue); 1: A is dY,
    multiplied by act'(y) (if ACT) with y[p, k] at y_ptr + p*s_y0 + k*s_y1; 2: B is dY, y[k, q]
    at y_ptr + k*s_y0 + q*s_y1. BIAS_MODE: 0 none, 1 bias per column q, 2 per row p.
    DB: also write the sum over k of the (masked) dY operand, i.e. db, from the programs of the
    first block of the other axis. BN (forward only): an inference-mode batch norm after the
    activation, per column q (1) or per row p (2): (v - mean) / sqrt(var + eps) * w + b.
    """
    pid = tl.program_id(0)
    num_p = (P + BLOCK_P - 1) // BLOCK_P
    num_q = (Q + BLOCK_Q - 1) // BLOCK_Q
    in_group = GROUP_P * num_q
    group = pid // in_group
    first_p = group * GROUP_P
    group_size = tl.minimum(num_p - first_p, GROUP_P)
    pid_p = first_p + ((pid % in_group) % group_size)
    pid_q = (pid % in_group) // group_size

    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_k = tl.arange(0, BLOCK_K)
    mp = offs_p < P
    mq = offs_q < Q
    acc = tl.full((BLOCK_P, BLOCK_Q), 0.0, ACC)
    if DB:
        if GRAD == 1:
            dbacc = tl.full((BLOCK_P,), 0.0, ACC)
        else:
            dbacc = tl.full((BLOCK_Q,), 0.0, ACC)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mk = kk < K
        a = tl.load(a_ptr + offs_p[:, None] * s_ap + kk[None, :] * s_ak,
                    mask=mp[:, None] & mk[None, :], other=0.0)
        b = tl.load(b_ptr + kk[:, None] * s_bk + offs_q[None, :] * s_bq,
                    mask=mk[:, None] & mq[None, :], other=0.0)
        if GRAD == 1:
            if ACT != 0:
                yv = tl.load(y_ptr + offs_p[:, None] * s_y0 + kk[None, :] * s_y1,
                             mask=mp[:, None] & mk[None, :], other=0.0)
                af = act_grad(a.to(ACC), yv, slope, ACT)
                a = af.to(a_ptr.dtype.element_ty)
                if DB:
                    dbacc += tl.sum(af, axis=1)
            else:
                if DB:
                    dbacc += tl.sum(a.to(ACC), axis=1)
        if GRAD == 2:
            if ACT != 0:
                yv = tl.load(y_ptr + kk[:, None] * s_y0 + offs_q[None, :] * s_y1,
                             mask=mk[:, None] & mq[None, :], other=0.0)
                bf = act_grad(b.to(ACC), yv, slope, ACT)
                b = bf.to(b_ptr.dtype.element_ty)
                if DB:
                    dbacc += tl.sum(bf, axis=0)
            else:
                if DB:
                    dbacc += tl.sum(b.to(ACC), axis=0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PREC, out_dtype=ACC)

    if BIAS_MODE == 1:
        acc += tl.load(bias_ptr + offs_q, mask=mq, other=0.0).to(ACC)[None, :]
    if BIAS_MODE == 2:
        acc += tl.load(bias_ptr + offs_p, mask=mp, other=0.0).to(ACC)[:, None]
    if GRAD == 0:
        acc = act_fwd(acc, slope, ACT)
        if BN == 1:
            acc = bn_eval_tile(acc, offs_q, mq, bnm_ptr, bnv_ptr, bnw_ptr, bnb_ptr, bn_eps, ACC, 0)
        if BN == 2:
            acc = bn_eval_tile(acc, offs_p, mp, bnm_ptr, bnv_ptr, bnw_ptr, bnb_ptr, bn_eps, ACC, 1)
    tl.store(c_ptr + offs_p[:, None] * s_cp + offs_q[None, :] * s_cq,
             acc.to(c_ptr.dtype.element_ty), mask=mp[:, None] & mq[None, :])
    if DB:
        if GRAD == 1:
            if pid_q == 0:
                tl.store(db_ptr + offs_p, dbacc.to(db_ptr.dtype.element_ty), mask=mp)
        else:
            if pid_p == 0:
                tl.store(db_ptr + offs_q, dbacc.to(db_ptr.dtype.element_ty), mask=mq)


mm_kernel = triton.autotune(
    configs=_ACTIVE_MM_CONFIGS,
    key=["P", "Q", "K", "ACT", "BIAS_MODE", "GRAD", "DB", "BN"],
    prune_configs_by={"early_config_prune": _prune},
)(_mm_kernel)


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


SMALL_M = 4


def _swap(p_nat: int, q_nat: int) -> bool:
    """Compute the transposed product when the natural 64-row side is the small one."""
    return p_nat < 64 and q_nat > p_nat


def _mm(a, b, c, P, Q, K, sa, sb, sc, *, y=None, sy=(0, 0), bias=None, db=None, act=0,
        slope=0.0, bias_mode=0, grad=0, dtype=torch.float32, bn=None, bn_mode=0):
    grid = lambda meta: (triton.cdiv(P, meta["BLOCK_P"]) * triton.cdiv(Q, meta["BLOCK_Q"]),)
    dummy = c
    bm, bv, bw, bb, eps = bn if bn is not None else (dummy, dummy, dummy, dummy, 0.0)
    mm_kernel[grid](a, b, c, y if y is not None else dummy, bias if bias is not None else dummy,
                    db if db is not None else dummy, P, Q, K,
                    sa[0], sa[1], sb[0], sb[1], sc[0], sc[1], sy[0], sy[1], slope,
                    bm, bv, bw, bb, eps,
                    ACT=act, BIAS_MODE=bias_mode, GRAD=grad, DB=db is not None, BN=bn_mode,
                    PREC=config.dot_precision(dtype), UPCAST=config.dot_upcast(dtype),
                    ACC=acc_type(dtype))


def _gemv_blocks(N: int, M: int, K: int) -> Tuple[int, int, int]:
    bm = next_pow2(M)
    bn = 16 if config.INTERPRET else max(1, min(16, next_pow2(triton.cdiv(N, 256))))
    bk = max(16, min(1024, 4096 // (bn * bm), next_pow2(K)))
    return bn, bm, bk


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
        bn, bm, bk = _gemv_blocks(N, M, K)
        _gemv_fwd_kernel[(triton.cdiv(N, bn),)](
            x, weight, bias if bias is not None else y, y, N, M, K,
            x.stride(0), x.stride(1), weight.stride(0), weight.stride(1), y.stride(0), y.stride(1),
            s, ACT=act, HAS_BIAS=bias is not None, ACC=acc_type(x.dtype),
            BLOCK_N=bn, BLOCK_M=bm, BLOCK_K=bk)
        return y
    if _swap(N, M):   # y.T[M, N] = W[M, K] @ x.T[K, N]
        _mm(weight, x, y, M, N, K, (weight.stride(0), weight.stride(1)), (x.stride(1), x.stride(0)),
            (y.stride(1), y.stride(0)), bias=bias, act=act, slope=s,
            bias_mode=2 if bias is not None else 0, dtype=x.dtype, bn=bn, bn_mode=2 if bn else 0)
    else:             # y[N, M] = x[N, K] @ W.T[K, M]
        _mm(x, weight, y, N, M, K, (x.stride(0), x.stride(1)), (weight.stride(1), weight.stride(0)),
            (y.stride(0), y.stride(1)), bias=bias, act=act, slope=s,
            bias_mode=1 if bias is not None else 0, dtype=x.dtype, bn=bn, bn_mode=1 if bn else 0)
    return y


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
    acc_dt = acc_torch(x.dtype)
    if M <= SMALL_M:
        bn, bm, bk = _gemv_blocks(N, M, K)
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
        return dx, dw, db
    sg = (grad.stride(0), grad.stride(1))
    sy = (y.stride(0), y.stride(1))
    if need_dx:
        if _swap(N, K):  # dX.T[K, N] = W.T[K, M] @ dY'.T[M, N]
            _mm(weight, grad, dx, K, N, M, (weight.stride(1), weight.stride(0)), (sg[1], sg[0]),
                (dx.stride(1), dx.stride(0)), y=y, sy=(sy[1], sy[0]), act=act, slope=s, grad=2,
                dtype=x.dtype)
        else:            # dX[N, K] = dY'[N, M] @ W[M, K]
            _mm(grad, weight, dx, N, K, M, sg, (weight.stride(0), weight.stride(1)),
                (dx.stride(0), dx.stride(1)), y=y, sy=sy, act=act, slope=s, grad=1, dtype=x.dtype)
    if need_dw or need_db:
        db_out = db if need_db else None
        dw_out = dw if need_dw else torch.empty((M, K), device=x.device, dtype=weight.dtype)
        if _swap(M, K):  # dW.T[K, M] = x.T[K, N] @ dY'[N, M]; db from the B operand
            _mm(x, grad, dw_out, K, M, N, (x.stride(1), x.stride(0)), sg,
                (dw_out.stride(1), dw_out.stride(0)), y=y, sy=sy, db=db_out, act=act, slope=s,
                grad=2, dtype=x.dtype)
        else:            # dW[M, K] = dY'.T[M, N] @ x[N, K]; db from the A operand
            _mm(grad, x, dw_out, M, K, N, (sg[1], sg[0]), (x.stride(0), x.stride(1)),
                (dw_out.stride(0), dw_out.stride(1)), y=y, sy=(sy[1], sy[0]), db=db_out, act=act,
                slope=s, grad=1, dtype=x.dtype)
    return dx, dw, db
