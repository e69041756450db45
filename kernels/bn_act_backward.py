"""bn_act's backward kernels (see bn_act.py's module doc): the activation mask recomputed from
x and the saved mean/rstd, one reduce pass and one dX pass, fused into a single kernel when one
program per channel block reduces all rows (``split == 1``, also for grouped batch norm)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import acc_torch, acc_type, is_dense, next_pow2, prepare3, sweep_blocks
from .launch import cached

Tensor = torch.Tensor

@triton.jit
def _bwd_chunk_sums(x_ptr, g_ptr, oc, mc, mean, rstd, gamma, beta, a_lo, a_hi, B, sA, sC, sB,
                    slope, ACT: tl.constexpr, ACC: tl.constexpr, BLOCK_A: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr):
    """sum(dY'), sum(dY' * xhat) over rows [a_lo, a_hi), dY' = dY * act'(gamma*xhat + beta)."""
    s1 = tl.full((BLOCK_A, BLOCK_C, BLOCK_B), 0.0, ACC)
    s2 = tl.full((BLOCK_A, BLOCK_C, BLOCK_B), 0.0, ACC)
    for a0 in range(a_lo, a_hi, BLOCK_A):
        oa = a0 + tl.arange(0, BLOCK_A)
        for b0 in range(0, B, BLOCK_B):
            ob = b0 + tl.arange(0, BLOCK_B)
            m = (oa[:, None, None] < a_hi) & mc[None, :, None] & (ob[None, None, :] < B)
            off = oa[:, None, None] * sA + oc[None, :, None] * sC + ob[None, None, :] * sB
            xh = (tl.load(x_ptr + off, mask=m, other=0.0).to(ACC) - mean[None, :, None]) \
                * rstd[None, :, None]
            g = tl.load(g_ptr + off, mask=m, other=0.0).to(ACC)
            if ACT:
                pre = xh * gamma[None, :, None] + beta[None, :, None]
                g = tl.where(pre > 0, g, g * slope)
            g = tl.where(m, g, 0.0)
            s1 += g
            s2 += g * xh
    return tl.sum(tl.sum(s1, axis=2), axis=0), tl.sum(tl.sum(s2, axis=2), axis=0)


@triton.jit
def _dx_chunk(x_ptr, g_ptr, dx_ptr, oc, mc, mean, rstd, gamma, beta, c1, c2, a_lo, a_hi, B,
              sA, sC, sB, slope, ACT: tl.constexpr, ACC: tl.constexpr, BLOCK_A: tl.constexpr,
              BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr):
    """dX = gamma*rstd*(dY' - c1 - xhat*c2) (c1 = mean(dY'), c2 = mean(dY'*xhat); 0 in eval)."""
    k = gamma * rstd
    for a0 in range(a_lo, a_hi, BLOCK_A):
        oa = a0 + tl.arange(0, BLOCK_A)
        for b0 in range(0, B, BLOCK_B):
            ob = b0 + tl.arange(0, BLOCK_B)
            m = (oa[:, None, None] < a_hi) & mc[None, :, None] & (ob[None, None, :] < B)
            off = oa[:, None, None] * sA + oc[None, :, None] * sC + ob[None, None, :] * sB
            xh = (tl.load(x_ptr + off, mask=m, other=0.0).to(ACC) - mean[None, :, None]) \
                * rstd[None, :, None]
            g = tl.load(g_ptr + off, mask=m, other=0.0).to(ACC)
            if ACT:
                pre = xh * gamma[None, :, None] + beta[None, :, None]
                g = tl.where(pre > 0, g, g * slope)
            dx = k[None, :, None] * (g - c1[None, :, None] - xh * c2[None, :, None])
            tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=m)


@triton.jit
def _load_affine(w_ptr, b_ptr, oc, mc, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    if HAS_W:
        gamma = tl.load(w_ptr + oc, mask=mc, other=0.0).to(ACC)
    else:
        gamma = tl.full((BLOCK_C,), 1.0, ACC)
    if HAS_B:
        beta = tl.load(b_ptr + oc, mask=mc, other=0.0).to(ACC)
    else:
        beta = tl.full((BLOCK_C,), 0.0, ACC)
    return gamma, beta


@cached
@triton.jit
def _bn_bwd_kernel(x_ptr, g_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, dw_ptr, db_ptr,
                   ps1_ptr, ps2_ptr, A, C, B, sA, sC, sB, a_per_split, count, slope, groups,
                   SPLIT: tl.constexpr, TRAINING: tl.constexpr, HAS_W: tl.constexpr,
                   HAS_B: tl.constexpr, ACT: tl.constexpr, NEED_DX: tl.constexpr,
                   NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr):
    """SPLIT == 1: reduce sum(dY'), sum(dY'*xhat), write dgamma/dbeta and dX in one program
    per channel block, for each of ``groups`` row chunks with its own statistics (dgamma/dbeta
    summed over the chunks, chunk 0 first). SPLIT > 1 (groups 1): write this split's partial
    sums only (dX kernel next)."""
    pid = tl.program_id(0)
    nc = (C + BLOCK_C - 1) // BLOCK_C
    pid_c = pid % nc
    pid_s = pid // nc
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = oc < C
    gamma, beta = _load_affine(w_ptr, b_ptr, oc, mc, HAS_W, HAS_B, ACC, BLOCK_C)
    if SPLIT == 1:
        dw = tl.full((BLOCK_C,), 0.0, ACC)
        db = tl.full((BLOCK_C,), 0.0, ACC)
        for g in range(0, groups):
            g_lo = g * a_per_split
            mean = tl.load(mean_ptr + g * C + oc, mask=mc, other=0.0)
            rstd = tl.load(rstd_ptr + g * C + oc, mask=mc, other=0.0)
            s1, s2 = _bwd_chunk_sums(x_ptr, g_ptr, oc, mc, mean, rstd, gamma, beta, g_lo,
                                     g_lo + a_per_split, B, sA, sC, sB, slope, ACT, ACC, BLOCK_A,
                                     BLOCK_C, BLOCK_B)
            dw += s2
            db += s1
            if NEED_DX:
                if TRAINING:
                    c1 = s1 / count
                    c2 = s2 / count
                else:
                    c1 = tl.full((BLOCK_C,), 0.0, ACC)
                    c2 = tl.full((BLOCK_C,), 0.0, ACC)
                _dx_chunk(x_ptr, g_ptr, dx_ptr, oc, mc, mean, rstd, gamma, beta, c1, c2, g_lo,
                          g_lo + a_per_split, B, sA, sC, sB, slope, ACT, ACC, BLOCK_A, BLOCK_C,
                          BLOCK_B)
        if NEED_DW:
            tl.store(dw_ptr + oc, dw.to(dw_ptr.dtype.element_ty), mask=mc)
        if NEED_DB:
            tl.store(db_ptr + oc, db.to(db_ptr.dtype.element_ty), mask=mc)
    else:
        mean = tl.load(mean_ptr + oc, mask=mc, other=0.0)
        rstd = tl.load(rstd_ptr + oc, mask=mc, other=0.0)
        a_lo = pid_s * a_per_split
        a_hi = tl.minimum(a_lo + a_per_split, A)
        s1, s2 = _bwd_chunk_sums(x_ptr, g_ptr, oc, mc, mean, rstd, gamma, beta, a_lo, a_hi, B, sA,
                                 sC, sB, slope, ACT, ACC, BLOCK_A, BLOCK_C, BLOCK_B)
        tl.store(ps1_ptr + pid_s * C + oc, s1, mask=mc)
        tl.store(ps2_ptr + pid_s * C + oc, s2, mask=mc)


@cached
@triton.jit
def _bn_bwd_dx_kernel(x_ptr, g_ptr, dx_ptr, w_ptr, b_ptr, mean_ptr, rstd_ptr, dw_ptr, db_ptr,
                      ps1_ptr, ps2_ptr, A, C, B, sA, sC, sB, a_per_split, count, slope,
                      SPLIT: tl.constexpr, TRAINING: tl.constexpr, HAS_W: tl.constexpr,
                      HAS_B: tl.constexpr, ACT: tl.constexpr, NEED_DX: tl.constexpr,
                      NEED_DW: tl.constexpr, NEED_DB: tl.constexpr, ACC: tl.constexpr,
                      BLOCK_S: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_B: tl.constexpr):
    """Combine the partials (split 0 writes dgamma/dbeta), then dX for this split's rows."""
    pid = tl.program_id(0)
    nc = (C + BLOCK_C - 1) // BLOCK_C
    pid_c = pid % nc
    pid_s = pid // nc
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = oc < C
    os_ = tl.arange(0, BLOCK_S)
    pm = (os_[:, None] < SPLIT) & mc[None, :]
    s1 = tl.sum(tl.load(ps1_ptr + os_[:, None] * C + oc[None, :], mask=pm, other=0.0), axis=0)
    s2 = tl.sum(tl.load(ps2_ptr + os_[:, None] * C + oc[None, :], mask=pm, other=0.0), axis=0)
    if pid_s == 0:
        if NEED_DW:
            tl.store(dw_ptr + oc, s2.to(dw_ptr.dtype.element_ty), mask=mc)
        if NEED_DB:
            tl.store(db_ptr + oc, s1.to(db_ptr.dtype.element_ty), mask=mc)
    if NEED_DX:
        mean = tl.load(mean_ptr + oc, mask=mc, other=0.0)
        rstd = tl.load(rstd_ptr + oc, mask=mc, other=0.0)
        gamma, beta = _load_affine(w_ptr, b_ptr, oc, mc, HAS_W, HAS_B, ACC, BLOCK_C)
        if TRAINING:
            c1 = s1 / count
            c2 = s2 / count
        else:
            c1 = tl.full((BLOCK_C,), 0.0, ACC)
            c2 = tl.full((BLOCK_C,), 0.0, ACC)
        a_lo = pid_s * a_per_split
        a_hi = tl.minimum(a_lo + a_per_split, A)
        _dx_chunk(x_ptr, g_ptr, dx_ptr, oc, mc, mean, rstd, gamma, beta, c1, c2, a_lo, a_hi, B,
                  sA, sC, sB, slope, ACT, ACC, BLOCK_A, BLOCK_C, BLOCK_B)


def bn_act_backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                    mean: Tensor, rstd: Tensor, training: bool, slope: Optional[float],
                    need_dx: bool, need_dw: bool, need_db: bool, groups: int = 1,
                    force_split: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """dx, dgamma, dbeta; ``groups`` as the forward's (mean/rstd [groups * C]); ``force_split``
    as bn_act.FORCE_SPLIT."""
    x, (A, C, B, sA, sC, sB) = prepare3(x, 1)
    if grad.stride() != x.stride() or not is_dense(grad):
        grad = torch.empty_like(x).copy_(grad)
    dx = torch.empty_like(x) if need_dx else grad.new_empty(0)
    dw = torch.empty(C, device=x.device, dtype=weight.dtype) if need_dw else grad.new_empty(0)
    db = torch.empty(C, device=x.device, dtype=bias.dtype) if need_db else grad.new_empty(0)
    if x.numel() == 0:
        return dx, dw.zero_(), db.zero_()
    Ag = A // groups
    ba, bc, bb, split, a_per = sweep_blocks(Ag, C, B, sC, x.device, x.dtype, force_split)
    if groups > 1 and (split != 1 or Ag * groups != A):
        raise ValueError("bn_act_backward: groups > 1 needs one program per channel block")
    n_c = triton.cdiv(C, bc)
    acc_dt = acc_torch(x.dtype)
    dummy = mean
    common = dict(TRAINING=training, HAS_W=weight is not None, HAS_B=bias is not None,
                  ACT=slope is not None, NEED_DX=need_dx, NEED_DW=need_dw, NEED_DB=need_db,
                  ACC=acc_type(x.dtype), BLOCK_A=ba, BLOCK_C=bc, BLOCK_B=bb)
    args = (x, grad, dx if need_dx else dummy, weight if weight is not None else dummy,
            bias if bias is not None else dummy, mean, rstd, dw if need_dw else dummy,
            db if need_db else dummy)
    s = 0.0 if slope is None else float(slope)
    if split == 1:
        _bn_bwd_kernel[(n_c,)](*args, dummy, dummy, A, C, B, sA, sC, sB, Ag, float(Ag * B), s,
                               groups, SPLIT=1, **common)
        return dx, dw, db
    ps1 = torch.empty((split, C), device=x.device, dtype=acc_dt)
    ps2 = torch.empty((split, C), device=x.device, dtype=acc_dt)
    _bn_bwd_kernel[(n_c * split,)](*args, ps1, ps2, A, C, B, sA, sC, sB, a_per, float(A * B), s,
                                   1, SPLIT=split, **common)
    _bn_bwd_dx_kernel[(n_c * split,)](*args, ps1, ps2, A, C, B, sA, sC, sB, a_per, float(A * B),
                                      s, SPLIT=split, BLOCK_S=next_pow2(split), **common)
    return dx, dw, db
