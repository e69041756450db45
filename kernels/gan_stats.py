"""gan_stats: the iteration's metrics in one launch,
``stats += [loss_d, loss_g, mean sigmoid(real), mean sigmoid(fake), 1]``.

One program reads both losses and sweeps both logit sets (a GAN has a few logits per sample), in
float32 (float64 for float64 logits; the sums in a fixed order: deterministic), then adds the
five values, converted to stats' dtype (float32 or float64), to ``stats`` in place. The mean over
zero logits is NaN, as torch's; a NaN anywhere propagates.

:func:`add_stats` is the same work as a tail of another one-program kernel: gan_loss adds the
metrics with the G step's loss it has just computed (``gan_loss_stats``), the same arithmetic.
"""
from __future__ import annotations

from typing import Tuple

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_type, next_pow2
from .launch import cached


@triton.jit
def _sigmoid_sum(z_ptr, n, ACC: tl.constexpr, BLOCK: tl.constexpr):
    acc = tl.full((BLOCK,), 0.0, ACC)
    for i in range(0, n, BLOCK):
        offs = i + tl.arange(0, BLOCK)
        m = offs < n
        z = tl.load(z_ptr + offs, mask=m, other=0.0).to(ACC)
        acc += tl.where(m, 1.0 / (1.0 + tl.exp(-z)), 0.0)
    return tl.sum(acc, axis=0)


@triton.jit
def add_stats(stats_ptr, ld_ptr, lg, real_ptr, fake_ptr, n_real, n_fake, ACC: tl.constexpr,
              BLOCK: tl.constexpr):
    """``stats += [loss_d, lg, mean sigmoid(real), mean sigmoid(fake), 1]``, lg a scalar value
    (the G loss as stored, in the loss's dtype), loss_d read at ld_ptr."""
    st = stats_ptr.dtype.element_ty
    mean_r = _sigmoid_sum(real_ptr, n_real, ACC, BLOCK) / (n_real * 1.0)
    mean_f = _sigmoid_sum(fake_ptr, n_fake, ACC, BLOCK) / (n_fake * 1.0)
    tl.store(stats_ptr, tl.load(stats_ptr) + tl.load(ld_ptr).to(st))
    tl.store(stats_ptr + 1, tl.load(stats_ptr + 1) + lg.to(st))
    tl.store(stats_ptr + 2, tl.load(stats_ptr + 2) + mean_r.to(st))
    tl.store(stats_ptr + 3, tl.load(stats_ptr + 3) + mean_f.to(st))
    tl.store(stats_ptr + 4, tl.load(stats_ptr + 4) + 1.0)


@cached
@triton.jit
def _gan_stats_kernel(stats_ptr, ld_ptr, lg_ptr, real_ptr, fake_ptr, n_real, n_fake,
                      ACC: tl.constexpr, BLOCK: tl.constexpr):
    add_stats(stats_ptr, ld_ptr, tl.load(lg_ptr), real_ptr, fake_ptr, n_real, n_fake, ACC,
              BLOCK)


def stats_args(stats: torch.Tensor, loss_d: torch.Tensor, real: torch.Tensor,
               fake: torch.Tensor) -> Tuple[tuple, dict]:
    """The launch arguments of :func:`add_stats` on checked tensors (stats contiguous [5], the
    logits read flat): (stats_ptr, ld_ptr, real_ptr, fake_ptr, n_real, n_fake), {ACC, BLOCK}."""
    real, fake = real.reshape(-1), fake.reshape(-1)
    if fake.dtype != real.dtype:
        fake = fake.to(real.dtype)
    n = max(real.numel(), fake.numel(), 1)
    block = min(1024 if config.INTERPRET else 2048, max(128, next_pow2(n)))
    # an empty set is never read (its mean is 0 / 0): any valid pointer stands in for it
    return ((stats, loss_d, real if real.numel() else stats, fake if fake.numel() else stats,
             real.numel(), fake.numel()), dict(ACC=acc_type(real.dtype), BLOCK=block))


def gan_stats_into(stats: torch.Tensor, loss_d: torch.Tensor, loss_g: torch.Tensor,
                   real: torch.Tensor, fake: torch.Tensor) -> None:
    """Launch on checked arguments: stats contiguous [5]; the logits are read flat."""
    (st, ld, r, f, n_real, n_fake), meta = stats_args(stats, loss_d, real, fake)
    _gan_stats_kernel[(1,)](st, ld, loss_g, r, f, n_real, n_fake, **meta)
