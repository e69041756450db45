"""bias_act: ``y = act(x + bias[c])`` along ``dim`` (the epilogue of a convolution), fused.

The tensor is walked as [A, C, B] (A = dims before ``dim``, B = dims after; for channels_last
A and B merge and C is the contiguous axis). Forward: one elementwise kernel. Backward: one
kernel that writes ``dX = dY * act'(y)`` (read off the saved output: the mask from its sign, tanh's 1 - y²,
sigmoid's y(1 - y)) and reduces
``db`` in the same pass, to per-program partials summed in a fixed order (deterministic).
Without an activation dX is dY itself and the kernel only reduces db.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import acc_torch, acc_type, is_dense, prepare3, split_for, sum_dim0, tile3
from .launch import cached

Tensor = torch.Tensor

# ACT, the activation code (fastgan/ops/activation.py): 0 identity, 1 ReLU and 2 LeakyReLU (both
# `where(v > 0, v, v * slope)`), 3 tanh, 4 sigmoid.


@triton.jit
def _expm1(x):
    """exp(x) - 1 to a few ulps near 0 (Kahan: (u - 1) * x / log(u)); tl has no expm1."""
    u = tl.exp(x)
    um1 = u - 1.0
    safe = tl.where((u == 1.0) | (um1 == -1.0), 2.0, u)
    r = um1 * x / tl.log(safe)
    r = tl.where(u == 1.0, x, r)
    return tl.where(um1 == -1.0, -1.0, r)


@triton.jit
def act_fwd(v, slope, ACT: tl.constexpr):
    """The activation of fp32/fp64 values v (identity for ACT 0)."""
    if ACT == 1 or ACT == 2:
        v = tl.where(v > 0, v, v * slope)
    if ACT == 3:  # tanh(v) = -expm1(-2|v|) / (2 + expm1(-2|v|)), sign of v; NaN stays NaN
        e = _expm1(-2.0 * tl.abs(v))
        t = -e / (2.0 + e)
        v = tl.where(v < 0, -t, t)
    if ACT == 4:
        v = 1.0 / (1.0 + tl.exp(-v))
    return v


@triton.jit
def act_grad(g, yv, slope, ACT: tl.constexpr):
    """g * act'(z) for fp32/fp64 g, read off the activation's output yv (any float dtype)."""
    if ACT == 1 or ACT == 2:
        g = tl.where(yv > 0, g, g * slope)
    if ACT == 3:
        y = yv.to(g.dtype)
        g = g * (1.0 - y * y)
    if ACT == 4:
        y = yv.to(g.dtype)
        g = g * (y * (1.0 - y))
    return g


@triton.jit
def bn_eval_tile(v, offs, m, bnm_ptr, bnv_ptr, bnw_ptr, bnb_ptr, eps, ACC: tl.constexpr,
             AXIS: tl.constexpr):
    """(v - mean) / sqrt(var + eps) * w + b along the channel axis (AXIS 0: columns, 1: rows)."""
    mean = tl.load(bnm_ptr + offs, mask=m, other=0.0).to(ACC)
    var = tl.load(bnv_ptr + offs, mask=m, other=1.0).to(ACC)
    w = tl.load(bnw_ptr + offs, mask=m, other=1.0).to(ACC)
    b = tl.load(bnb_ptr + offs, mask=m, other=0.0).to(ACC)
    scale = w / tl.sqrt(var + eps)
    # one return: with an early return in the constexpr branch Triton 3.8 compiles the other too
    if AXIS == 0:
        out = (v - mean[None, :]) * scale[None, :] + b[None, :]
    else:
        out = (v - mean[:, None]) * scale[:, None] + b[:, None]
    return out


def act_torch(z: Tensor, code: int, s: float) -> Tensor:
    """The activation by torch ops (linear_act's empty-K corner only)."""
    if code == 3:
        return torch.tanh(z)
    if code == 4:
        return torch.sigmoid(z)
    return torch.where(z > 0, z, z * s) if code else z


def act_grad_torch(g: Tensor, y: Tensor, code: int, s: float) -> Tensor:
    if code == 3:
        return g * (1 - y * y)
    if code == 4:
        return g * (y * (1 - y))
    return torch.where(y > 0, g, g * s) if code else g


@cached
@triton.jit
def _bias_act_fwd_kernel(x_ptr, b_ptr, y_ptr, A, C, B, sA, sC, sB, slope,
                         HAS_BIAS: tl.constexpr, ACT: tl.constexpr, ACC: tl.constexpr,
                         BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr):
    pid = tl.program_id(0)
    nb = (B + BLOCK_B - 1) // BLOCK_B
    nc = (C + BLOCK_C - 1) // BLOCK_C
    pid_b = pid % nb
    pid_c = (pid // nb) % nc
    pid_a = pid // (nb * nc)
    oa = pid_a * BLOCK_A + tl.arange(0, BLOCK_A)
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    ob = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)
    m = (oa[:, None, None] < A) & (oc[None, :, None] < C) & (ob[None, None, :] < B)
    off = oa[:, None, None] * sA + oc[None, :, None] * sC + ob[None, None, :] * sB
    v = tl.load(x_ptr + off, mask=m, other=0.0).to(ACC)
    if HAS_BIAS:
        v += tl.load(b_ptr + oc, mask=oc < C, other=0.0).to(ACC)[None, :, None]
    v = act_fwd(v, slope, ACT)
    tl.store(y_ptr + off, v.to(y_ptr.dtype.element_ty), mask=m)


@cached
@triton.jit
def _bias_act_bwd_kernel(g_ptr, y_ptr, dx_ptr, pdb_ptr, A, C, B, sA, sC, sB, a_per_split, slope,
                         ACT: tl.constexpr, WRITE_DX: tl.constexpr, NEED_DB: tl.constexpr,
                         ACC: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr,
                         BLOCK_B: tl.constexpr):
    """Program (c-block, split s): rows a in [s*a_per_split, (s+1)*a_per_split) of its channels.
    dX = dY * act'(y); pdb[s, c] = sum of dX over its rows (db partial)."""
    pid = tl.program_id(0)
    nc = (C + BLOCK_C - 1) // BLOCK_C
    pid_c = pid % nc
    pid_s = pid // nc
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = oc < C
    acc = tl.full((BLOCK_A, BLOCK_C, BLOCK_B), 0.0, ACC)
    a_lo = pid_s * a_per_split
    a_hi = tl.minimum(a_lo + a_per_split, A)
    for a0 in range(a_lo, a_hi, BLOCK_A):
        oa = a0 + tl.arange(0, BLOCK_A)
        for b0 in range(0, B, BLOCK_B):
            ob = b0 + tl.arange(0, BLOCK_B)
            m = (oa[:, None, None] < a_hi) & mc[None, :, None] & (ob[None, None, :] < B)
            off = oa[:, None, None] * sA + oc[None, :, None] * sC + ob[None, None, :] * sB
            g = tl.load(g_ptr + off, mask=m, other=0.0).to(ACC)
            if ACT != 0:
                yv = tl.load(y_ptr + off, mask=m, other=0.0)
                g = act_grad(g, yv, slope, ACT)
            if WRITE_DX:
                tl.store(dx_ptr + off, g.to(dx_ptr.dtype.element_ty), mask=m)
            if NEED_DB:
                acc += g
    if NEED_DB:
        db = tl.sum(tl.sum(acc, axis=2), axis=0)
        tl.store(pdb_ptr + pid_s * C + oc, db.to(pdb_ptr.dtype.element_ty), mask=mc)


def bias_act_forward(x: Tensor, bias: Optional[Tensor], code: int, slope: float, dim: int) -> Tensor:
    x, (A, C, B, sA, sC, sB) = prepare3(x, dim)
    y = torch.empty_like(x)   # same strides as x (dense)
    if x.numel() == 0:
        return y
    ba, bc, bb = tile3(A, C, B, sC)
    grid = (triton.cdiv(A, ba) * triton.cdiv(C, bc) * triton.cdiv(B, bb),)
    _bias_act_fwd_kernel[grid](x, bias if bias is not None else x, y, A, C, B, sA, sC, sB,
                               slope, HAS_BIAS=bias is not None, ACT=code,
                               ACC=acc_type(x.dtype), BLOCK_A=ba, BLOCK_C=bc, BLOCK_B=bb)
    return y


def bias_act_backward(grad: Tensor, y: Tensor, code: int, slope: float, dim: int,
                      need_dx: bool, need_db: bool) -> Tuple[Tensor, Tensor]:
    """(dX, db) — db in fp32/fp64 accumulation type (the caller casts); empty if not needed."""
    act = code != 0
    y, (A, C, B, sA, sC, sB) = prepare3(y, dim)
    if grad.stride() != y.stride() or not is_dense(grad):
        grad = torch.empty_like(y).copy_(grad)
    write_dx = need_dx and act
    dx = torch.empty_like(y) if write_dx else grad.new_empty(0)
    acc_dt = acc_torch(y.dtype)
    if y.numel() == 0:
        db = torch.zeros(C if need_db else 0, device=y.device, dtype=acc_dt)
        return (dx if write_dx else grad.new_empty(0)), db
    ba, bc, bb = tile3(A, C, B, sC)
    n_c = triton.cdiv(C, bc)
    S = split_for(n_c, triton.cdiv(A, ba), y.device, cap=1024)
    a_per = triton.cdiv(triton.cdiv(A, S), ba) * ba
    S = triton.cdiv(A, a_per)
    pdb = torch.empty((S, C), device=y.device, dtype=acc_dt) if need_db else grad.new_empty(0)
    if write_dx or need_db:
        _bias_act_bwd_kernel[(n_c * S,)](
            grad, y, dx if write_dx else grad, pdb if need_db else grad, A, C, B, sA, sC, sB,
            a_per, slope, ACT=code, WRITE_DX=write_dx,
            NEED_DB=need_db, ACC=acc_type(y.dtype), BLOCK_A=ba, BLOCK_C=bc, BLOCK_B=bb)
    if need_db and S > 1:
        db = sum_dim0(pdb, torch.empty(C, device=y.device, dtype=acc_dt))
    else:
        db = pdb.view(-1) if need_db else grad.new_empty(0)
    if need_dx and not act:
        dx = grad.clone()  # custom ops may not return an alias of an input
    return dx, db
