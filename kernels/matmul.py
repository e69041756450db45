"""The tiled ``tl.dot`` matmul behind linear_act, with the linear layer's epilogue and prologue.

``C[P, Q] = A[P, K] @ B[K, Q]`` over strided operands, one output tile per program
(:func:`_mm_tile`). Forward epilogue: bias (per column or per row), the activation
(ReLU/LeakyReLU/tanh/sigmoid) and optionally an inference-mode batch norm. Backward prologue: dY
multiplied by act'(y) as its tiles are loaded, and the row/column sum of those masked tiles (db)
reduced by the programs of the first block of the other axis.

:func:`mm` launches one such problem (:data:`mm_kernel`); :func:`mm_grad_pair` launches the
backward's two problems, dX and dW (+ db), in one grid (:data:`mm_pair_kernel`): its first
programs compute dX tiles, the rest dW tiles, so a layer's backward is one launch. Each problem
keeps its own orientation (natural or transposed, see :class:`Problem`); the two share one tile
config.

fp32 inputs use ``fastgan.kernels.config.DOT_PRECISION`` (tf32 by default on CUDA, ieee under
the interpreter); bf16 inputs go to the tensor cores as bf16 with fp32 accumulation; fp64 (tests)
accumulates in fp64. Autotuned over ``MM_CONFIGS`` keyed on the problem shapes; under the
interpreter never benchmarked: :func:`_interp_config` picks the one tile for the shape.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_type, next_pow2
from .bias_act import act_fwd, act_grad, bn_eval_tile
from .launch import cached

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


def _interp_config(P: int, Q: int, K: int, big: bool) -> tuple:
    """The interpreter's one tile: small unless the product is big, else fitted to it."""
    if not big:
        return _INTERP_CONFIG
    bp, bq, bk, w, s = _INTERP_BIG_CONFIG
    return (min(bp, max(32, next_pow2(P))), min(bq, max(32, next_pow2(Q))),
            min(bk, max(32, next_pow2(K))), w, s)


def _fitting(configs, P: int, Q: int):
    """Drop configs whose tile is far larger than the problem (keeps at least one)."""
    keep = [c for c in configs
            if c.kwargs["BLOCK_P"] <= max(64, next_pow2(P))
            and c.kwargs["BLOCK_Q"] <= max(32, next_pow2(Q))]
    return keep or configs[:1]


def _prune(configs, named_args, **kwargs):
    P, Q, K = named_args["P"], named_args["Q"], named_args["K"]
    if config.INTERPRET:  # one config, never benchmarked
        return _make_configs([_interp_config(P, Q, K, P * Q * K > config.INTERPRET_BIG_WORK)])
    return _fitting(configs, P, Q)


def _prune_pair(configs, named_args, **kwargs):
    """One tile for both problems: the configs that fit the larger of each side."""
    return _fitting(configs, max(named_args["P_x"], named_args["P_w"]),
                    max(named_args["Q_x"], named_args["Q_w"]))


@triton.jit
def _masked_dy(v, y_ptr, offs_0, offs_1, m0, m1, s_y0, s_y1, slope, ACT: tl.constexpr,
               ACC: tl.constexpr):
    """A dY tile (rows offs_0, columns offs_1) times act'(y) read at the same place, in ACC."""
    if ACT != 0:
        yv = tl.load(y_ptr + offs_0[:, None] * s_y0 + offs_1[None, :] * s_y1,
                     mask=m0[:, None] & m1[None, :], other=0.0)
        return act_grad(v.to(ACC), yv, slope, ACT)
    return v.to(ACC)


@triton.jit
def _head_dy(v, f_ptr, y_ptr, offs_0, offs_1, m0, m1, s_f0, s_f1, s_y0, s_y1, slope,
             ACT: tl.constexpr, ACC: tl.constexpr):
    """The rank-1 dY of a layer under a 1-output head: ``v`` is the head's gradient g read
    broadcast (a zero stride), f the head's weight w (likewise), so dY = g w, times act'(y).
    Also returns g * y, whose sum over the rows is the head weight's gradient."""
    m = m0[:, None] & m1[None, :]
    g = v.to(ACC)
    fv = tl.load(f_ptr + offs_0[:, None] * s_f0 + offs_1[None, :] * s_f1, mask=m, other=0.0)
    yv = tl.load(y_ptr + offs_0[:, None] * s_y0 + offs_1[None, :] * s_y1, mask=m, other=0.0)
    dy = g * fv.to(ACC)
    if ACT != 0:
        dy = act_grad(dy, yv, slope, ACT)
    return dy, g * yv.to(ACC)


@triton.jit
def _dy_operand(v, f_ptr, y_ptr, offs_0, offs_1, m0, m1, s_f0, s_f1, s_y0, s_y1, slope,
                ACT: tl.constexpr, HEAD: tl.constexpr, ACC: tl.constexpr):
    """The dY operand tile ``v`` as read, as the product needs it (times act'(y), or a head's
    rank-1 dY: :func:`_head_dy`), and g * y (HEAD only; else a placeholder)."""
    if HEAD != 0:
        vf, gy = _head_dy(v, f_ptr, y_ptr, offs_0, offs_1, m0, m1, s_f0, s_f1, s_y0, s_y1,
                          slope, ACT, ACC)
    else:
        vf = _masked_dy(v, y_ptr, offs_0, offs_1, m0, m1, s_y0, s_y1, slope, ACT, ACC)
        gy = vf
    return vf, gy


@triton.jit
def _mm_tile(pid, a_ptr, b_ptr, c_ptr, y_ptr, bias_ptr, db_ptr,
             P, Q, K,
             s_ap, s_ak, s_bk, s_bq, s_cp, s_cq, s_y0, s_y1,
             slope, bnm_ptr, bnv_ptr, bnw_ptr, bnb_ptr, bn_eps,
             f_ptr, s_f0, s_f1, hw_ptr, hb_ptr,
             ACT: tl.constexpr, BIAS_MODE: tl.constexpr, GRAD: tl.constexpr, DB: tl.constexpr,
             BN: tl.constexpr, HEAD: tl.constexpr,
             PREC: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr,
             BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
             GROUP_P: tl.constexpr):
    """Tile ``pid`` of C[P, Q] = epilogue(sum_k A'[p, k] B'[k, q]).

    GRAD: 0 forward (ACT, the activation code of bias_act.act_fwd, in the epilogue); 1: A is dY,
    multiplied by act'(y) (if ACT) with y[p, k] at y_ptr + p*s_y0 + k*s_y1; 2: B is dY, y[k, q]
    at y_ptr + k*s_y0 + q*s_y1. BIAS_MODE: 0 none, 1 bias per column q, 2 per row p.
    DB: also write the sum over k of the (masked) dY operand, i.e. db, from the programs of the
    first block of the other axis. BN (forward only): an inference-mode batch norm after the
    activation, per column q (1) or per row p (2): (v - mean) / sqrt(var + eps) * w + b.
    HEAD (backward): the layer feeds a 1-output linear head and dY is never stored: the dY
    operand's pointer and strides read the head's gradient g broadcast, f (strides s_f0, s_f1
    along the operand) its weight w, dY = g w (:func:`_head_dy`); 2 also writes the head's
    gradients from the db programs: hw = sum over k of g * y (dw of the head), hb = sum g.
    """
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
    # The dY operand's own axis (p for GRAD 1, q for 2): db and the head's sums run along it,
    # stored by the programs of the other axis' first block.
    if GRAD == 1:
        offs_r, m_r, own_r, first_r = offs_p, mp, pid_q == 0, pid_p == 0
    else:
        offs_r, m_r, own_r, first_r = offs_q, mq, pid_p == 0, pid_q == 0
    if DB:
        dbacc = tl.zeros(offs_r.shape, ACC)
    if HEAD == 2:
        hwacc = tl.zeros(offs_r.shape, ACC)
        hbacc = tl.zeros(offs_r.shape, ACC)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + offs_k
        mk = kk < K
        a = tl.load(a_ptr + offs_p[:, None] * s_ap + kk[None, :] * s_ak,
                    mask=mp[:, None] & mk[None, :], other=0.0)
        b = tl.load(b_ptr + kk[:, None] * s_bk + offs_q[None, :] * s_bq,
                    mask=mk[:, None] & mq[None, :], other=0.0)
        if GRAD != 0:
            v = a if GRAD == 1 else b
            if GRAD == 1:
                vf, gy = _dy_operand(a, f_ptr, y_ptr, offs_p, kk, mp, mk, s_f0, s_f1, s_y0, s_y1,
                                     slope, ACT, HEAD, ACC)
            else:
                vf, gy = _dy_operand(b, f_ptr, y_ptr, kk, offs_q, mk, mq, s_f0, s_f1, s_y0, s_y1,
                                     slope, ACT, HEAD, ACC)
            if HEAD == 2:
                hwacc += tl.sum(gy, axis=2 - GRAD)
                hbacc += tl.sum(v.to(ACC), axis=2 - GRAD)
            if ACT != 0 or HEAD != 0:
                if GRAD == 1:
                    a = vf.to(a_ptr.dtype.element_ty)
                else:
                    b = vf.to(b_ptr.dtype.element_ty)
            if DB:
                dbacc += tl.sum(vf, axis=2 - GRAD)
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
        if own_r:
            tl.store(db_ptr + offs_r, dbacc.to(db_ptr.dtype.element_ty), mask=m_r)
    if HEAD == 2:   # every row of hbacc holds sum g: the first program stores one
        if own_r:
            tl.store(hw_ptr + offs_r, hwacc.to(hw_ptr.dtype.element_ty), mask=m_r)
            if first_r:
                tl.store(hb_ptr + offs_r, hbacc.to(hb_ptr.dtype.element_ty), mask=offs_r == 0)


@triton.jit
def _mm_kernel(a_ptr, b_ptr, c_ptr, y_ptr, bias_ptr, db_ptr,
               P, Q, K,
               s_ap, s_ak, s_bk, s_bq, s_cp, s_cq, s_y0, s_y1,
               slope, bnm_ptr, bnv_ptr, bnw_ptr, bnb_ptr, bn_eps,
               f_ptr, s_f0, s_f1, hw_ptr, hb_ptr,
               ACT: tl.constexpr, BIAS_MODE: tl.constexpr, GRAD: tl.constexpr, DB: tl.constexpr,
               BN: tl.constexpr, HEAD: tl.constexpr,
               PREC: tl.constexpr, UPCAST: tl.constexpr, ACC: tl.constexpr,
               BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
               GROUP_P: tl.constexpr = 8):
    """One problem: the tiles of C[P, Q], see :func:`_mm_tile`."""
    _mm_tile(tl.program_id(0), a_ptr, b_ptr, c_ptr, y_ptr, bias_ptr, db_ptr, P, Q, K,
             s_ap, s_ak, s_bk, s_bq, s_cp, s_cq, s_y0, s_y1,
             slope, bnm_ptr, bnv_ptr, bnw_ptr, bnb_ptr, bn_eps, f_ptr, s_f0, s_f1, hw_ptr, hb_ptr,
             ACT, BIAS_MODE, GRAD, DB, BN, HEAD, PREC, UPCAST, ACC, BLOCK_P, BLOCK_Q, BLOCK_K,
             GROUP_P)


@triton.jit
def _mm_pair_kernel(a_x_ptr, b_x_ptr, c_x_ptr, a_w_ptr, b_w_ptr, c_w_ptr, y_ptr, db_ptr,
                    P_x, Q_x, K_x, P_w, Q_w, K_w,
                    sx_ap, sx_ak, sx_bk, sx_bq, sx_cp, sx_cq, sx_y0, sx_y1,
                    sw_ap, sw_ak, sw_bk, sw_bq, sw_cp, sw_cq, sw_y0, sw_y1,
                    slope, f_ptr, sx_f0, sx_f1, sw_f0, sw_f1, hw_ptr, hb_ptr,
                    ACT: tl.constexpr, GRAD_X: tl.constexpr, GRAD_W: tl.constexpr,
                    DB: tl.constexpr, HEAD: tl.constexpr, PREC: tl.constexpr, UPCAST: tl.constexpr,
                    ACC: tl.constexpr,
                    BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                    GROUP_P: tl.constexpr = 8):
    """A linear layer's backward in one grid: programs [0, tiles of dX) compute dX (problem
    ``_x``, dY operand mode GRAD_X), the rest dW (problem ``_w``, GRAD_W) and, if DB, db.
    Both read the same dY and y; a problem's strides are those of :func:`_mm_tile`. HEAD: dY is
    a head's rank-1 gradient (:func:`_mm_tile`), its weight's and bias's gradients from the dW
    problem when 2."""
    pid = tl.program_id(0)
    tiles_x = ((P_x + BLOCK_P - 1) // BLOCK_P) * ((Q_x + BLOCK_Q - 1) // BLOCK_Q)
    if pid < tiles_x:
        _mm_tile(pid, a_x_ptr, b_x_ptr, c_x_ptr, y_ptr, c_x_ptr, c_x_ptr, P_x, Q_x, K_x,
                 sx_ap, sx_ak, sx_bk, sx_bq, sx_cp, sx_cq, sx_y0, sx_y1,
                 slope, c_x_ptr, c_x_ptr, c_x_ptr, c_x_ptr, 0.0, f_ptr, sx_f0, sx_f1, c_x_ptr,
                 c_x_ptr, ACT, 0, GRAD_X, False, 0, HEAD != 0, PREC, UPCAST, ACC,
                 BLOCK_P, BLOCK_Q, BLOCK_K, GROUP_P)
    else:
        _mm_tile(pid - tiles_x, a_w_ptr, b_w_ptr, c_w_ptr, y_ptr, c_w_ptr, db_ptr, P_w, Q_w, K_w,
                 sw_ap, sw_ak, sw_bk, sw_bq, sw_cp, sw_cq, sw_y0, sw_y1,
                 slope, c_w_ptr, c_w_ptr, c_w_ptr, c_w_ptr, 0.0, f_ptr, sw_f0, sw_f1, hw_ptr,
                 hb_ptr, ACT, 0, GRAD_W, DB, 0, HEAD, PREC, UPCAST, ACC, BLOCK_P, BLOCK_Q,
                 BLOCK_K, GROUP_P)


mm_kernel = cached(triton.autotune(
    configs=_ACTIVE_MM_CONFIGS,
    key=["P", "Q", "K", "ACT", "BIAS_MODE", "GRAD", "DB", "BN", "HEAD"],
    prune_configs_by={"early_config_prune": _prune},
)(_mm_kernel))
# Launched without the autotuner under the interpreter (the tile is picked per call, so no
# cache outlives a change of config.INTERPRET_BIG_WORK).
mm_pair_kernel = cached(triton.autotune(
    configs=MM_CONFIGS,
    key=["P_x", "Q_x", "K_x", "P_w", "Q_w", "K_w", "ACT", "GRAD_X", "GRAD_W", "DB", "HEAD"],
    prune_configs_by={"early_config_prune": _prune_pair},
)(_mm_pair_kernel))


class Problem(NamedTuple):
    """C[P, Q] = A[P, K] @ B[K, Q] with (row, column) strides of A, B, C and of y as laid out
    along dY's operand; ``grad``: which operand is dY (1: A, 2: B), as :func:`_mm_tile`'s GRAD;
    ``sf``: the strides of a head's weight read as dY's factor (HEAD)."""
    a: Tensor
    b: Tensor
    c: Tensor
    P: int
    Q: int
    K: int
    sa: Tuple[int, int]
    sb: Tuple[int, int]
    sc: Tuple[int, int]
    sy: Tuple[int, int]
    grad: int
    sf: Tuple[int, int] = (0, 0)   # a head's weight along dY's operand, as sy (HEAD only)


def _tiles(P: int, Q: int, meta) -> int:
    return triton.cdiv(P, meta["BLOCK_P"]) * triton.cdiv(Q, meta["BLOCK_Q"])


def mm(a, b, c, P, Q, K, sa, sb, sc, *, y=None, sy=(0, 0), bias=None, db=None, act=0,
       slope=0.0, bias_mode=0, grad=0, dtype=torch.float32, bn=None, bn_mode=0,
       head=None) -> None:
    """One problem C = epilogue(A' @ B') (see :func:`_mm_tile` for the modes); ``head`` =
    (f, sf, hw, hb): a head's weight read as dY's factor with strides sf, and where hw is given
    its weight's and bias's gradients written to hw, hb (HEAD 1 or 2)."""
    grid = lambda meta: (_tiles(P, Q, meta),)  # noqa: E731
    dummy = c
    bm, bv, bw, bb, eps = bn if bn is not None else (dummy, dummy, dummy, dummy, 0.0)
    f, sf, hw, hb = head if head is not None else (dummy, (0, 0), None, None)
    mm_kernel[grid](a, b, c, y if y is not None else dummy, bias if bias is not None else dummy,
                    db if db is not None else dummy, P, Q, K,
                    sa[0], sa[1], sb[0], sb[1], sc[0], sc[1], sy[0], sy[1], slope,
                    bm, bv, bw, bb, eps, f, sf[0], sf[1],
                    hw if hw is not None else dummy, hb if hb is not None else dummy,
                    ACT=act, BIAS_MODE=bias_mode, GRAD=grad, DB=db is not None, BN=bn_mode,
                    HEAD=0 if head is None else 1 if hw is None else 2,
                    PREC=config.dot_precision(dtype), UPCAST=config.dot_upcast(dtype),
                    ACC=acc_type(dtype))


def mm_grad(p: Problem, y: Tensor, db, act: int, slope: float, dtype, head=None) -> None:
    """One backward problem (dX, or dW with db when ``db`` is given); ``head`` = (f, hw, hb):
    dY is a head's rank-1 gradient (``p``'s dY operand reads g broadcast, f is the head's
    weight, read with ``p.sf``), hw and hb (or None) its weight's and bias's gradients."""
    mm(p.a, p.b, p.c, p.P, p.Q, p.K, p.sa, p.sb, p.sc, y=y, sy=p.sy, db=db, act=act,
       slope=slope, grad=p.grad, dtype=dtype,
       head=None if head is None else (head[0], p.sf, head[1], head[2]))


def mm_grad_pair(px: Problem, pw: Problem, y: Tensor, db, act: int, slope: float,
                 dtype, head=None) -> None:
    """dX (``px``) and dW (``pw``, with db when given) in one launch; ``head`` as
    :func:`mm_grad`'s (its gradients from the dW problem)."""
    grid = lambda meta: (_tiles(px.P, px.Q, meta) + _tiles(pw.P, pw.Q, meta),)  # noqa: E731
    kernel, tile = mm_pair_kernel, {}
    if config.INTERPRET:
        big = max(px.P * px.Q * px.K, pw.P * pw.Q * pw.K) > config.INTERPRET_BIG_WORK
        bp, bq, bk, _, _ = _interp_config(max(px.P, pw.P), max(px.Q, pw.Q), max(px.K, pw.K), big)
        kernel, tile = _mm_pair_kernel, dict(BLOCK_P=bp, BLOCK_Q=bq, BLOCK_K=bk)
    f, hw, hb = head if head is not None else (pw.c, None, None)
    kernel[grid](px.a, px.b, px.c, pw.a, pw.b, pw.c, y, db if db is not None else pw.c,
                 px.P, px.Q, px.K, pw.P, pw.Q, pw.K,
                 *px.sa, *px.sb, *px.sc, *px.sy, *pw.sa, *pw.sb, *pw.sc, *pw.sy, slope,
                 f, *px.sf, *pw.sf, hw if hw is not None else pw.c,
                 hb if hb is not None else pw.c,
                 ACT=act, GRAD_X=px.grad, GRAD_W=pw.grad, DB=db is not None,
                 HEAD=0 if head is None else 1 if hw is None else 2,
                 PREC=config.dot_precision(dtype), UPCAST=config.dot_upcast(dtype),
                 ACC=acc_type(dtype), **tile)
