"""gan_stats, reference: ``stats += [loss_d, loss_g, mean sigmoid(real), mean sigmoid(fake), 1]``,
the torch ops the engine ran before the op existed (one sigmoid and one mean over both logit
sets, read in place where they are adjacent halves of one D pass). The sigmoids and means are
in float32, float64 for float64 logits; every value is converted to stats' dtype, then added."""
from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import is_fake

from fastgan.ops.iteration_checks import gan_stats_args
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def _acc(t: torch.Tensor) -> torch.Tensor:
    return t.double() if t.dtype == torch.float64 else t.float()


def _mean_probs(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    fake = fake.to(real.dtype)
    k = real.numel()
    if fake.numel() != k:
        return torch.stack([torch.sigmoid(_acc(real)).mean(), torch.sigmoid(_acc(fake)).mean()])
    if not (torch.compiler.is_compiling() or is_fake(real) or is_fake(fake)) and \
            real.is_contiguous() and fake.is_contiguous() and \
            real.untyped_storage().data_ptr() == fake.untyped_storage().data_ptr() and \
            fake.storage_offset() == real.storage_offset() + k:
        both = real.as_strided((2, k), (k, 1))    # fake lies right after real: a view
    else:
        both = torch.stack([real.reshape(k), fake.reshape(k)])
    return torch.sigmoid(_acc(both)).mean(1)


_ones: dict = {}


def _one(like: torch.Tensor) -> torch.Tensor:
    """A constant [1] on ``like``'s device and dtype, filled once rather than every iteration
    (never kept from inside a CUDA-graph capture, where the fill would not have run)."""
    if torch.compiler.is_compiling():    # a constant of the traced graph
        return torch.ones(1, dtype=like.dtype, device=like.device)
    key = (like.device, like.dtype)
    one = _ones.get(key)
    if one is None:
        one = torch.ones(1, dtype=like.dtype, device=like.device)
        if not (is_fake(like) or (like.is_cuda and torch.cuda.is_current_stream_capturing())):
            _ones[key] = one
    return one


def gan_stats(stats: torch.Tensor, loss_d: torch.Tensor, loss_g: torch.Tensor,
              real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    gan_stats_args(stats, loss_d, loss_g, real_logits, fake_logits)
    dt = stats.dtype
    return stats.add_(torch.cat([loss_d.detach().view(1).to(dt), loss_g.detach().view(1).to(dt),
                                 _mean_probs(real_logits.detach(), fake_logits.detach()).to(dt),
                                 _one(stats)]))


register("gan_stats", "reference", ALL_DEVICES, gan_stats)
