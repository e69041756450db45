"""gan_loss: BCE-with-logits, LSGAN (on sigmoid(logit)), hinge or linear against a target, with
the gradient written by the same kernel as the loss.

One pass over the logits computes each element's loss and ``dL/dlogit`` (already scaled by
weight/n for ``mean``, weight for ``sum``: a constant weight costs no kernel); the per-program partial losses are summed in a fixed order by a one-program
finalize kernel (skipped when one program covers everything), so the loss is deterministic.
The backward only multiplies the saved gradient by the incoming scalar gradient.

hinge = t relu(1 - z) + (1 - t) relu(1 + z) (D's loss: t = 1 real, 0 fake); linear =
(1 - 2t) z (t = 1: -z, the generator's hinge loss).

Stable for any |logit| (tested to 100): ``bce = max(z, 0) - z*t + log1p(exp(-|z|))``,
``sigmoid`` and ``1 - sigmoid`` both computed from ``exp(-|z|)``; log1p is computed as
``log(u) - ((u - 1) - e) / u`` with ``u = 1 + e`` (exact to an ulp, works in the interpreter).

The target is a Python float or a 0-d tensor (read on the device: no host sync); a tensor with
more than one element is broadcast to the logits (per-element targets). No gradient flows to the
target.

STATS (``gan_loss_stats``): the program that writes the loss (the one program, or the finalize
kernel) also adds the iteration's metrics with it (:func:`gan_stats.add_stats`): the G step's
loss and the metrics in one launch, the gan_stats kernel's arithmetic.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_type, next_pow2
from .gan_stats import add_stats, gan_stats_into, stats_args
from .launch import cached

Tensor = torch.Tensor

_KINDS = {"bce": 0, "lsgan": 1, "hinge": 2, "linear": 3}   # kind and reduction are checked by fastgan.ops.checks


@cached
@triton.jit
def _gan_loss_kernel(z_ptr, g_ptr, part_ptr, loss_ptr, t_ptr, t_val, n, scale,
                     stats_ptr, ld_ptr, real_ptr, fake_ptr, n_real, n_fake,
                     KIND: tl.constexpr, T_MODE: tl.constexpr, NEED_GRAD: tl.constexpr,
                     ONE_BLOCK: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr,
                     STATS: tl.constexpr, S_ACC: tl.constexpr, S_BLOCK: tl.constexpr):
    """KIND 0 bce, 1 lsgan, 2 hinge, 3 linear. T_MODE 0: target t_val; 1: t_ptr[0]; 2: t_ptr[i]
    per element. STATS (ONE_BLOCK only): add_stats with the loss after storing it."""
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    z = tl.load(z_ptr + offs, mask=m, other=0.0).to(ACC)
    if T_MODE == 0:
        t = t_val
    elif T_MODE == 1:
        t = tl.load(t_ptr).to(ACC)
    else:
        t = tl.load(t_ptr + offs, mask=m, other=0.0).to(ACC)
    if KIND <= 1:
        e = tl.exp(-tl.abs(z))                  # in (0, 1]
        u = 1.0 + e
        inv = 1.0 / u
        pos = z >= 0
        p = tl.where(pos, inv, e * inv)         # sigmoid(z)
        q = tl.where(pos, e * inv, inv)         # 1 - sigmoid(z), without cancellation
        d = tl.where(pos, (1.0 - t) - q, p - t)   # sigmoid(z) - t, no cancellation near t = 1
        if KIND == 0:
            log1p_e = tl.log(u) - ((u - 1.0) - e) / u
            loss = tl.maximum(z, 0.0) - z * t + log1p_e
            grad = d
        else:
            loss = d * d
            grad = 2.0 * d * p * q
    elif KIND == 2:
        # t relu(1 - z) + (1 - t) relu(1 + z); `a < 0` (not maximum) keeps a NaN logit NaN, and
        # the subgradient at the kinks is 0, as torch.relu's
        a = 1.0 - z
        b = 1.0 + z
        loss = t * tl.where(a < 0, 0.0, a) + (1.0 - t) * tl.where(b < 0, 0.0, b)
        grad = tl.where(a > 0, -t, 0.0) + tl.where(b > 0, 1.0 - t, 0.0)
    else:
        w = 1.0 - 2.0 * t
        loss = w * z
        grad = w + tl.zeros_like(z)             # a block even for a scalar target
    loss = tl.where(m, loss, 0.0)
    total = tl.sum(loss, axis=0)
    if NEED_GRAD:
        tl.store(g_ptr + offs, (grad * scale).to(g_ptr.dtype.element_ty), mask=m)
    if ONE_BLOCK:
        value = (total * scale).to(loss_ptr.dtype.element_ty)
        tl.store(loss_ptr, value)
        if STATS:
            add_stats(stats_ptr, ld_ptr, value, real_ptr, fake_ptr, n_real, n_fake, S_ACC,
                      S_BLOCK)
    else:
        tl.store(part_ptr + pid, total)


@cached
@triton.jit
def _gan_loss_finalize_kernel(part_ptr, loss_ptr, n_parts, scale,
                              stats_ptr, ld_ptr, real_ptr, fake_ptr, n_real, n_fake,
                              ACC: tl.constexpr, BLOCK: tl.constexpr, STATS: tl.constexpr,
                              S_ACC: tl.constexpr, S_BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    acc = tl.full((BLOCK,), 0.0, ACC)
    for i in range(0, n_parts, BLOCK):
        acc += tl.load(part_ptr + i + offs, mask=i + offs < n_parts, other=0.0)
    value = (tl.sum(acc, axis=0) * scale).to(loss_ptr.dtype.element_ty)
    tl.store(loss_ptr, value)
    if STATS:
        add_stats(stats_ptr, ld_ptr, value, real_ptr, fake_ptr, n_real, n_fake, S_ACC, S_BLOCK)


def gan_loss_forward(logits: Tensor, target: Optional[Tensor], target_value: float, kind: str,
                     reduction: str, need_grad: bool, weight: float = 1.0,
                     stats: Optional[Tuple[Tensor, Tensor, Tensor, Tensor]] = None
                     ) -> Tuple[Tensor, Tensor]:
    """(weight * loss 0-d, its gradient shaped like logits, or empty when need_grad is
    False). ``stats`` = (stats, loss_d, real logits, fake logits), checked: also
    ``stats += [loss_d, loss, mean sigmoid(real), mean sigmoid(fake), 1]``."""
    z = logits.contiguous()
    n = z.numel()
    loss = torch.empty((), device=z.device, dtype=z.dtype)
    grad = torch.empty_like(z) if need_grad else z.new_empty(0)
    if target is None:
        t_mode, t_arg = 0, z
    elif target.numel() == 1:
        t_mode, t_arg = 1, target.reshape(())
    else:
        t_mode, t_arg = 2, target.to(z.device).expand_as(z).contiguous()
    if n == 0:
        loss.fill_(float("nan") if reduction == "mean" else 0.0)
        if stats is not None:
            gan_stats_into(stats[0], stats[1], loss, stats[2], stats[3])
        return loss, grad
    if stats is None:   # nothing is read when STATS is off: any pointer stands in
        s_args, s_meta = (z, z, z, z, 0, 0), dict(S_ACC=tl.float32, S_BLOCK=128)
    else:
        s_args, meta = stats_args(*stats)
        s_meta = dict(S_ACC=meta["ACC"], S_BLOCK=meta["BLOCK"])
    scale = float(weight) * (1.0 / n) if reduction == "mean" else float(weight)
    BLOCK = 1024 if config.INTERPRET else (2048 if n >= 2048 else max(128, next_pow2(n)))
    n_blocks = triton.cdiv(n, BLOCK)
    acc = acc_type(z.dtype)
    parts = torch.empty(n_blocks, device=z.device,
                        dtype=torch.float64 if z.dtype == torch.float64 else torch.float32)
    _gan_loss_kernel[(n_blocks,)](z, grad if need_grad else z, parts, loss, t_arg,
                                  float(target_value), n, scale, *s_args, KIND=_KINDS[kind],
                                  T_MODE=t_mode, NEED_GRAD=need_grad, ONE_BLOCK=n_blocks == 1,
                                  ACC=acc, BLOCK=BLOCK, STATS=stats is not None and n_blocks == 1,
                                  **s_meta)
    if n_blocks > 1:
        _gan_loss_finalize_kernel[(1,)](parts, loss, n_blocks, scale, *s_args, ACC=acc,
                                        BLOCK=min(1024, next_pow2(n_blocks)),
                                        STATS=stats is not None, **s_meta)
    return loss, grad
