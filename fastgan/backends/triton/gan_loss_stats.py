"""gan_loss_stats for the triton backend: the G step's loss and the iteration's metrics in one
launch (the gan_loss kernel's STATS tail), eagerly and in CUDA graphs; under torch.compile the
two custom ops, gan_loss then gan_stats (a mutating custom op cannot carry an autograd
formula)."""
from __future__ import annotations

from typing import Union

import torch

from fastgan.kernels.gan_loss import gan_loss_forward
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op
from .gan_loss import _backward, _setup_context, check_gan_loss, gan_loss, target_args
from .gan_stats import check_gan_stats, gan_stats

Tensor = torch.Tensor


class _GanLossStatsFn(torch.autograd.Function):
    """gan_loss's autograd.Function with the metrics' tensors after its arguments (stats is
    written in place; it and the metrics' inputs get no gradient)."""

    @staticmethod
    def forward(logits, target, target_value, kind, reduction, need_grad, weight, stats, loss_d,
                real, fake):
        return gan_loss_forward(logits, target, target_value, kind, reduction, need_grad, weight,
                                stats=(stats, loss_d, real, fake))

    setup_context = staticmethod(_setup_context)

    @staticmethod
    def backward(ctx, grad_loss, grad_grad):
        return _backward(ctx, grad_loss, grad_grad) + (None,) * 4


def gan_loss_stats(logits: Tensor, target: Union[float, Tensor], kind: str, reduction: str,
                   weight: float, stats: Tensor, loss_d: Tensor, real_logits: Tensor,
                   fake_logits: Tensor) -> Tensor:
    if use_custom_op():
        loss = gan_loss(logits, target, kind, reduction, weight)
        gan_stats(stats, loss_d, loss, real_logits, fake_logits)
        return loss
    check_gan_loss(logits, kind, reduction)
    check_gan_stats(stats, loss_d, loss_d, real_logits, fake_logits)
    if logits.device != stats.device:
        raise ValueError(f"gan_loss_stats: logits are on {logits.device}, stats on "
                         f"{stats.device}")
    need_grad = logits.requires_grad and torch.is_grad_enabled()
    loss, _ = _GanLossStatsFn.apply(logits, *target_args(logits, target), kind, reduction,
                                    need_grad, float(weight), stats, loss_d.detach(),
                                    real_logits.detach(), fake_logits.detach())
    return loss


register("gan_loss_stats", "triton", DEVICE_TYPES, gan_loss_stats)
