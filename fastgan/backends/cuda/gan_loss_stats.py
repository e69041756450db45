"""gan_loss_stats for the cuda backend: ``fastgan::gan_loss_stats`` (gan_loss's kernel, which
then adds the iteration's metrics: one kernel where the two ops run two) with its fake, the
registry entry and its CPU size policy. Where the operator does not apply (logits not in stats'
dtype, a target that requires grad, a torch.compile trace) the backend's two ops run."""
from __future__ import annotations

from typing import Union

import torch

from fastgan.backends.reference.gan_loss_stats import gan_loss_stats as _two_ops
from fastgan.ops.checks import gan_loss_args
from fastgan.ops.iteration_checks import gan_stats_args
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _acc_dtype, _ops
from .gan_loss import target_args, target_needs_grad


@torch.library.register_fake("fastgan::gan_loss_stats")
def _(logits, target, target_value, kind, reduction, weight, stats, loss_d, real_logits,
      fake_logits):
    return logits.new_empty(()), torch.empty_like(logits, dtype=_acc_dtype(logits.dtype),
                                                  memory_format=torch.contiguous_format)


def gan_loss_stats(logits: torch.Tensor, target: Union[float, torch.Tensor], kind: str,
                   reduction: str, weight: float, stats: torch.Tensor, loss_d: torch.Tensor,
                   real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    gan_loss_args(kind, reduction)
    gan_stats_args(stats, loss_d, loss_d, real_logits, fake_logits)
    if logits.dtype != stats.dtype or target_needs_grad(target) or \
            torch.compiler.is_compiling():
        return _two_ops(logits, target, kind, reduction, weight, stats, loss_d, real_logits,
                        fake_logits)
    return _ops.gan_loss_stats(logits, *target_args(logits, target), kind, reduction,
                               float(weight), stats, loss_d.detach(), real_logits.detach(),
                               fake_logits.detach())[0]


# On CPU tensors: with the C++ gan_loss (by its size policy), else the two ops (then the
# reference loss and the C++ metrics).
gan_loss_stats_cpu = _cpu_pick("gan_loss", gan_loss_stats, _two_ops, lambda x, *a: x.numel())

register("gan_loss_stats", "cuda", ("cpu",), gan_loss_stats_cpu)
if "cuda" in DEVICE_TYPES:
    register("gan_loss_stats", "cuda", ("cuda",), gan_loss_stats)
