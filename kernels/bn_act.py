"""bn_act: training-mode BatchNorm fused with ReLU/LeakyReLU, and its backward.

The input is walked as [A, C, B] (``fastgan.kernels._common.view3``): [N, C] inputs and
channels_last [N, C, H, W] inputs become [rows, C] (C contiguous), NCHW inputs [N, C, H*W].
Statistics are reduced per channel with a shift (the channel's first element) for accuracy,
in a fixed order (deterministic):

* forward, when one program per channel block can reduce all rows (``split == 1``): a single
  kernel computes mean/var, updates the running stats in place (the unbiased variance as
  PyTorch, or the biased one as Keras; PyTorch's momentum convention), and writes ``y = act(gamma * (x - mean) * rstd + beta)``;
* otherwise a stats kernel writes per-split partial sums and an apply kernel combines them
  (programs of split 0 write mean/rstd and the running stats) and normalises its rows.

Backward: ``dY' = dY * act'(pre)``, the mask recomputed from x and the saved mean/rstd (only x,
mean and rstd are kept; the output is not), then
``dX = gamma * rstd * (dY' - mean(dY') - xhat * mean(dY' * xhat))``, ``dgamma = sum(dY' * xhat)``,
``dbeta = sum(dY')`` — one reduce pass and one dX pass, fused into a single kernel when
``split == 1``. ``training=False`` normalises with the running stats (dX = gamma*rstd*dY').

BN-after-activation (``mlp``: linear_act then bn) is ``bn_act(..., slope=None)`` after a
``linear_act`` with the slope.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ._common import acc_torch, acc_type, is_dense, next_pow2, prepare3, sweep_blocks, view3

from .bn_act_backward import _bn_bwd_dx_kernel, _bn_bwd_kernel  # noqa: F401 (compile_check)
from .bn_act_backward import bn_act_backward as _backward
from .launch import cached

Tensor = torch.Tensor

# Tests set this to force the two-kernel (split) paths on small inputs.
FORCE_SPLIT: Optional[int] = None


@triton.jit
def _chunk_sums(x_ptr, oc, mc, shift, a_lo, a_hi, B, sA, sC, sB, ACC: tl.constexpr,
                BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr):
    """sum(x - shift), sum((x - shift)^2) over rows [a_lo, a_hi) x all of B, per channel."""
    s1 = tl.full((BLOCK_A, BLOCK_C, BLOCK_B), 0.0, ACC)
    s2 = tl.full((BLOCK_A, BLOCK_C, BLOCK_B), 0.0, ACC)
    for a0 in range(a_lo, a_hi, BLOCK_A):
        oa = a0 + tl.arange(0, BLOCK_A)
        for b0 in range(0, B, BLOCK_B):
            ob = b0 + tl.arange(0, BLOCK_B)
            m = (oa[:, None, None] < a_hi) & mc[None, :, None] & (ob[None, None, :] < B)
            off = oa[:, None, None] * sA + oc[None, :, None] * sC + ob[None, None, :] * sB
            v = tl.load(x_ptr + off, mask=m, other=0.0).to(ACC)
            d = tl.where(m, v - shift[None, :, None], 0.0)
            s1 += d
            s2 += d * d
    return tl.sum(tl.sum(s1, axis=2), axis=0), tl.sum(tl.sum(s2, axis=2), axis=0)


@triton.jit
def _finalize_stats(s1, s2, shift, count, eps, oc, mc, mean_ptr, rstd_ptr, rm_ptr, rv_ptr,
                    momentum, WRITE, HAS_RUNNING: tl.constexpr, UNBIASED: tl.constexpr):
    m1 = s1 / count
    var = tl.maximum(s2 / count - m1 * m1, 0.0)
    mean = shift + m1
    rstd = 1.0 / tl.sqrt(var + eps)
    if WRITE:
        tl.store(mean_ptr + oc, mean, mask=mc)
        tl.store(rstd_ptr + oc, rstd, mask=mc)
        if HAS_RUNNING:
            rm = tl.load(rm_ptr + oc, mask=mc, other=0.0)
            rv = tl.load(rv_ptr + oc, mask=mc, other=0.0)
            if UNBIASED:
                batch_var = var * (count / (count - 1.0))
            else:
                batch_var = var
            tl.store(rm_ptr + oc, ((1.0 - momentum) * rm.to(mean.dtype) + momentum * mean)
                     .to(rm_ptr.dtype.element_ty), mask=mc)
            tl.store(rv_ptr + oc, ((1.0 - momentum) * rv.to(var.dtype) + momentum * batch_var)
                     .to(rv_ptr.dtype.element_ty), mask=mc)
    return mean, rstd


@triton.jit
def _apply_chunk(x_ptr, y_ptr, w_ptr, b_ptr, oc, mc, mean, rstd, a_lo, a_hi, B, sA, sC, sB,
                 slope, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACT: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr,
                 BLOCK_B: tl.constexpr):
    if HAS_W:
        scale = tl.load(w_ptr + oc, mask=mc, other=0.0).to(ACC) * rstd
    else:
        scale = rstd
    if HAS_B:
        beta = tl.load(b_ptr + oc, mask=mc, other=0.0).to(ACC)
    else:
        beta = tl.full((BLOCK_C,), 0.0, ACC)
    shift = beta - mean * scale
    for a0 in range(a_lo, a_hi, BLOCK_A):
        oa = a0 + tl.arange(0, BLOCK_A)
        for b0 in range(0, B, BLOCK_B):
            ob = b0 + tl.arange(0, BLOCK_B)
            m = (oa[:, None, None] < a_hi) & mc[None, :, None] & (ob[None, None, :] < B)
            off = oa[:, None, None] * sA + oc[None, :, None] * sC + ob[None, None, :] * sB
            v = tl.load(x_ptr + off, mask=m, other=0.0).to(ACC)
            v = v * scale[None, :, None] + shift[None, :, None]
            if ACT:
                v = tl.where(v > 0, v, v * slope)
            tl.store(y_ptr + off, v.to(y_ptr.dtype.element_ty), mask=m)


@cached
@triton.jit
def _bn_fwd_kernel(x_ptr, y_ptr, w_ptr, b_ptr, rm_ptr, rv_ptr, mean_ptr, rstd_ptr, ps1_ptr, ps2_ptr,
                   A, C, B, sA, sC, sB, a_per_split, count, eps, momentum, slope, groups,
                   SPLIT: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                   HAS_RUNNING: tl.constexpr, UNBIASED: tl.constexpr, ACT: tl.constexpr,
                   ACC: tl.constexpr, BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr,
                   BLOCK_B: tl.constexpr, GROUPED: tl.constexpr = False):
    """Training forward. SPLIT == 1: stats + running update + normalise in one program per
    channel block; GROUPED: so for each of ``groups`` row chunks in turn (``a_per_split`` rows
    each; statistics at mean/rstd[g * C + c]; the running stats updated chunk 0 first, kept in
    registers between chunks). SPLIT > 1: this program only writes its partial sums (apply
    kernel next)."""
    pid = tl.program_id(0)
    nc = (C + BLOCK_C - 1) // BLOCK_C
    pid_c = pid % nc
    pid_s = pid // nc
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = oc < C
    if SPLIT == 1 and not GROUPED:
        shift = tl.load(x_ptr + oc * sC, mask=mc, other=0.0).to(ACC)   # x[0, c, 0]
        s1, s2 = _chunk_sums(x_ptr, oc, mc, shift, 0, A, B, sA, sC, sB, ACC, BLOCK_A, BLOCK_C,
                             BLOCK_B)
        mean, rstd = _finalize_stats(s1, s2, shift, count, eps, oc, mc, mean_ptr, rstd_ptr, rm_ptr,
                                     rv_ptr, momentum, True, HAS_RUNNING, UNBIASED)
        _apply_chunk(x_ptr, y_ptr, w_ptr, b_ptr, oc, mc, mean, rstd, 0, A, B, sA, sC, sB, slope,
                     HAS_W, HAS_B, ACT, ACC, BLOCK_A, BLOCK_C, BLOCK_B)
    elif SPLIT == 1:
        if HAS_RUNNING:
            rm = tl.load(rm_ptr + oc, mask=mc, other=0.0).to(ACC)
            rv = tl.load(rv_ptr + oc, mask=mc, other=0.0).to(ACC)
        for g in range(0, groups):
            g_lo = g * a_per_split
            shift = tl.load(x_ptr + g_lo * sA + oc * sC, mask=mc, other=0.0).to(ACC)
            s1, s2 = _chunk_sums(x_ptr, oc, mc, shift, g_lo, g_lo + a_per_split, B, sA, sC, sB,
                                 ACC, BLOCK_A, BLOCK_C, BLOCK_B)
            m1 = s1 / count
            var = tl.maximum(s2 / count - m1 * m1, 0.0)
            mean = shift + m1
            rstd = 1.0 / tl.sqrt(var + eps)
            tl.store(mean_ptr + g * C + oc, mean, mask=mc)
            tl.store(rstd_ptr + g * C + oc, rstd, mask=mc)
            if HAS_RUNNING:
                if UNBIASED:
                    batch_var = var * (count / (count - 1.0))
                else:
                    batch_var = var
                rm = (1.0 - momentum) * rm + momentum * mean
                rv = (1.0 - momentum) * rv + momentum * batch_var
            _apply_chunk(x_ptr, y_ptr, w_ptr, b_ptr, oc, mc, mean, rstd, g_lo,
                         g_lo + a_per_split, B, sA, sC, sB, slope, HAS_W, HAS_B, ACT, ACC,
                         BLOCK_A, BLOCK_C, BLOCK_B)
        if HAS_RUNNING:
            tl.store(rm_ptr + oc, rm.to(rm_ptr.dtype.element_ty), mask=mc)
            tl.store(rv_ptr + oc, rv.to(rv_ptr.dtype.element_ty), mask=mc)
    else:
        shift = tl.load(x_ptr + oc * sC, mask=mc, other=0.0).to(ACC)   # x[0, c, 0]
        a_lo = pid_s * a_per_split
        a_hi = tl.minimum(a_lo + a_per_split, A)
        s1, s2 = _chunk_sums(x_ptr, oc, mc, shift, a_lo, a_hi, B, sA, sC, sB, ACC, BLOCK_A,
                             BLOCK_C, BLOCK_B)
        tl.store(ps1_ptr + pid_s * C + oc, s1, mask=mc)
        tl.store(ps2_ptr + pid_s * C + oc, s2, mask=mc)


@cached
@triton.jit
def _bn_apply_kernel(x_ptr, y_ptr, w_ptr, b_ptr, rm_ptr, rv_ptr, mean_ptr, rstd_ptr, ps1_ptr,
                     ps2_ptr, A, C, B, sA, sC, sB, a_per_split, count, eps, momentum, slope,
                     SPLIT: tl.constexpr, TRAINING: tl.constexpr, HAS_W: tl.constexpr,
                     HAS_B: tl.constexpr, HAS_RUNNING: tl.constexpr, UNBIASED: tl.constexpr,
                     ACT: tl.constexpr, ACC: tl.constexpr, BLOCK_S: tl.constexpr,
                     BLOCK_A: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_B: tl.constexpr):
    """TRAINING: combine the SPLIT partials of its channels (split 0 writes mean/rstd and the
    running stats), then normalise its rows. Not TRAINING: normalise with the running stats."""
    pid = tl.program_id(0)
    nc = (C + BLOCK_C - 1) // BLOCK_C
    pid_c = pid % nc
    pid_s = pid // nc
    oc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mc = oc < C
    if TRAINING:
        shift = tl.load(x_ptr + oc * sC, mask=mc, other=0.0).to(ACC)
        os_ = tl.arange(0, BLOCK_S)
        pm = (os_[:, None] < SPLIT) & mc[None, :]
        s1 = tl.sum(tl.load(ps1_ptr + os_[:, None] * C + oc[None, :], mask=pm, other=0.0), axis=0)
        s2 = tl.sum(tl.load(ps2_ptr + os_[:, None] * C + oc[None, :], mask=pm, other=0.0), axis=0)
        mean, rstd = _finalize_stats(s1, s2, shift, count, eps, oc, mc, mean_ptr, rstd_ptr, rm_ptr,
                                     rv_ptr, momentum, pid_s == 0, HAS_RUNNING, UNBIASED)
    else:
        mean = tl.load(rm_ptr + oc, mask=mc, other=0.0).to(ACC)
        rstd = 1.0 / tl.sqrt(tl.load(rv_ptr + oc, mask=mc, other=1.0).to(ACC) + eps)
        if pid_s == 0:
            tl.store(mean_ptr + oc, mean, mask=mc)
            tl.store(rstd_ptr + oc, rstd, mask=mc)
    a_lo = pid_s * a_per_split
    a_hi = tl.minimum(a_lo + a_per_split, A)
    _apply_chunk(x_ptr, y_ptr, w_ptr, b_ptr, oc, mc, mean, rstd, a_lo, a_hi, B, sA, sC, sB, slope,
                 HAS_W, HAS_B, ACT, ACC, BLOCK_A, BLOCK_C, BLOCK_B)


def groups_in_one_kernel(x: Tensor, groups: int) -> bool:
    """Whether the training kernels can normalise x's ``groups`` batch chunks in one launch:
    x dense (its [A, C, B] rows batch-major) and one program per channel block per chunk."""
    v = view3(x, 1) if is_dense(x) else None
    if v is None or v[0] % groups:
        return False
    A, C, B, _, sC, _ = v
    return sweep_blocks(A // groups, C, B, sC, x.device, x.dtype, FORCE_SPLIT)[3] == 1


def bn_act_forward(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                   running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
                   momentum: float, eps: float, slope: Optional[float],
                   unbiased_running_var: bool = True, groups: int = 1
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """(y, mean, rstd); running stats updated in place when training and given (running_var
    with the unbiased or the biased batch variance). Eval mode is one launch. ``groups`` > 1
    (training, where :func:`groups_in_one_kernel`): each of x's equal batch chunks normalised
    with its own statistics (mean/rstd [groups * C]), the running stats updated chunk 0 first."""
    x, (A, C, B, sA, sC, sB) = prepare3(x, 1)
    y = torch.empty_like(x)
    acc_dt = acc_torch(x.dtype)
    mean = torch.empty(groups * C, device=x.device, dtype=acc_dt)
    rstd = torch.empty(groups * C, device=x.device, dtype=acc_dt)
    Ag = A // groups
    count = Ag * B
    if x.numel() == 0:
        return y, mean.zero_(), rstd.zero_()
    ba, bc, bb, split, a_per = sweep_blocks(Ag, C, B, sC, x.device, x.dtype, FORCE_SPLIT)
    if groups > 1 and (split != 1 or not training or Ag * groups != A):
        raise ValueError("bn_act_forward: groups > 1 needs training and one program per "
                         "channel block (groups_in_one_kernel)")
    n_c = triton.cdiv(C, bc)
    has_running = running_mean is not None and running_var is not None
    dummy = mean
    args = (x, y, weight if weight is not None else dummy, bias if bias is not None else dummy,
            running_mean if has_running else dummy, running_var if has_running else dummy,
            mean, rstd)
    common = dict(HAS_W=weight is not None, HAS_B=bias is not None, HAS_RUNNING=has_running,
                  UNBIASED=bool(unbiased_running_var), ACT=slope is not None, ACC=acc_type(x.dtype), BLOCK_A=ba, BLOCK_C=bc,
                  BLOCK_B=bb)
    s = 0.0 if slope is None else float(slope)
    if not training:
        _bn_apply_kernel[(n_c * split,)](*args, dummy, dummy, A, C, B, sA, sC, sB, a_per,
                                          float(count), float(eps), float(momentum), s,
                                          SPLIT=split, TRAINING=False, BLOCK_S=next_pow2(split),
                                          **common)
        return y, mean, rstd
    if split == 1:
        _bn_fwd_kernel[(n_c,)](*args, dummy, dummy, A, C, B, sA, sC, sB, Ag, float(count),
                               float(eps), float(momentum), s, groups, SPLIT=1,
                               GROUPED=groups > 1, **common)
        return y, mean, rstd
    ps1 = torch.empty((split, C), device=x.device, dtype=acc_dt)
    ps2 = torch.empty((split, C), device=x.device, dtype=acc_dt)
    _bn_fwd_kernel[(n_c * split,)](*args, ps1, ps2, A, C, B, sA, sC, sB, a_per, float(count),
                                   float(eps), float(momentum), s, 1, SPLIT=split, **common)
    _bn_apply_kernel[(n_c * split,)](*args, ps1, ps2, A, C, B, sA, sC, sB, a_per, float(count),
                                     float(eps), float(momentum), s, SPLIT=split, TRAINING=True,
                                     BLOCK_S=next_pow2(split), **common)
    return y, mean, rstd


def bn_act_backward(grad: Tensor, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                    mean: Tensor, rstd: Tensor, training: bool, slope: Optional[float],
                    need_dx: bool, need_dw: bool, need_db: bool, groups: int = 1
                    ) -> Tuple[Tensor, Tensor, Tensor]:
    """dx, dgamma, dbeta (bn_act_backward.py), with this module's FORCE_SPLIT."""
    return _backward(grad, x, weight, bias, mean, rstd, training, slope, need_dx, need_dw,
                     need_db, groups, FORCE_SPLIT)
