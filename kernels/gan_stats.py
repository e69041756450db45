"""gan_stats: the iteration's metrics in one launch,
``stats += [loss_d, loss_g, mean sigmoid(real), mean sigmoid(fake), 1]``.

One program reads both losses and sweeps both logit sets (a GAN has a few logits per sample), in
float32 (float64 for float64 logits; the sums in a fixed order: deterministic), then adds the
five values, converted to stats' dtype (float32 or float64), to ``stats`` in place. The mean over
zero logits is NaN, as torch's; a NaN anywhere propagates.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_type, next_pow2


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
def _gan_stats_kernel(stats_ptr, ld_ptr, lg_ptr, real_ptr, fake_ptr, n_real, n_fake,
                      ACC: tl.constexpr, BLOCK: tl.constexpr):
    st = stats_ptr.dtype.element_ty
    mean_r = _sigmoid_sum(real_ptr, n_real, ACC, BLOCK) / (n_real * 1.0)
    mean_f = _sigmoid_sum(fake_ptr, n_fake, ACC, BLOCK) / (n_fake * 1.0)
    tl.store(stats_ptr, tl.load(stats_ptr) + tl.load(ld_ptr).to(st))
    tl.store(stats_ptr + 1, tl.load(stats_ptr + 1) + tl.load(lg_ptr).to(st))
    tl.store(stats_ptr + 2, tl.load(stats_ptr + 2) + mean_r.to(st))
    tl.store(stats_ptr + 3, tl.load(stats_ptr + 3) + mean_f.to(st))
    tl.store(stats_ptr + 4, tl.load(stats_ptr + 4) + 1.0)


def gan_stats_into(stats: torch.Tensor, loss_d: torch.Tensor, loss_g: torch.Tensor,
                   real: torch.Tensor, fake: torch.Tensor) -> None:
    """Launch on checked arguments: stats contiguous [5]; the logits are read flat."""
    real, fake = real.reshape(-1), fake.reshape(-1)
    if fake.dtype != real.dtype:
        fake = fake.to(real.dtype)
    n = max(real.numel(), fake.numel(), 1)
    block = min(1024 if config.INTERPRET else 2048, max(128, next_pow2(n)))
    # an empty set is never read (its mean is 0 / 0): any valid pointer stands in for it
    _gan_stats_kernel[(1,)](stats, loss_d, loss_g, real if real.numel() else stats,
                            fake if fake.numel() else stats, real.numel(), fake.numel(),
                            ACC=acc_type(real.dtype), BLOCK=block)
