"""gan_loss for the triton backend: custom op, autograd and the registry entry."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from fastgan.kernels._common import check_float
from fastgan.kernels.gan_loss import gan_loss_forward
from fastgan.ops.checks import gan_loss_args
from fastgan.ops.units import is_unit_grad
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op

Tensor = torch.Tensor


@torch.library.custom_op("fastgan_triton::gan_loss", mutates_args=())
def gan_loss_op(logits: Tensor, target: Optional[Tensor], target_value: float, kind: str,
                reduction: str, need_grad: bool, weight: float = 1.0) -> Tuple[Tensor, Tensor]:
    return gan_loss_forward(logits, target, target_value, kind, reduction, need_grad, weight)


@gan_loss_op.register_fake
def _(logits, target, target_value, kind, reduction, need_grad, weight=1.0):
    return logits.new_empty(()), (torch.empty_like(logits) if need_grad else logits.new_empty(0))


def _setup_context(ctx, inputs, output):
    loss, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.set_materialize_grads(False)   # no zero-filled gradient for the grad output
    ctx.save_for_backward(grad)


def _backward(ctx, grad_loss, grad_grad):
    (g,) = ctx.saved_tensors
    if grad_loss is None or g.numel() == 0 or not ctx.needs_input_grad[0]:
        return None, None, None, None, None, None, None
    if is_unit_grad(grad_loss):   # the engine's seed, 1: the forward's gradient as it is
        return g, None, None, None, None, None, None
    return g * grad_loss.to(g.dtype), None, None, None, None, None, None


gan_loss_op.register_autograd(_backward, setup_context=_setup_context)


class _GanLossFn(torch.autograd.Function):
    """The eager path (_policy.EAGER_FAST_PATH): the same kernels without the dispatcher."""

    @staticmethod
    def forward(logits, target, target_value, kind, reduction, need_grad, weight):
        return gan_loss_forward(logits, target, target_value, kind, reduction, need_grad, weight)

    setup_context = staticmethod(_setup_context)
    backward = staticmethod(_backward)


def target_args(logits: Tensor, target: Union[float, Tensor]) -> Tuple[Optional[Tensor], float]:
    """(target tensor or None, target value): the launcher's two forms of a target."""
    if isinstance(target, Tensor):
        target = target.detach()
        return (target if target.device == logits.device else target.to(logits.device)), 0.0
    return None, float(target)


def check_gan_loss(logits: Tensor, kind: str, reduction: str) -> None:
    check_float("gan_loss", logits)
    gan_loss_args(kind, reduction)


def gan_loss(logits: Tensor, target: Union[float, Tensor], kind: str = "bce",
             reduction: str = "mean", weight: float = 1.0) -> Tensor:
    """Registry entry: ``weight`` times the mean/sum of BCE-with-logits, LSGAN, hinge or linear
    against ``target`` (the weight folded into the kernel's scale)."""
    check_gan_loss(logits, kind, reduction)
    need_grad = logits.requires_grad and torch.is_grad_enabled()
    fn = gan_loss_op if use_custom_op() else _GanLossFn.apply
    loss, _ = fn(logits, *target_args(logits, target), kind, reduction, need_grad, float(weight))
    return loss


register("gan_loss", "triton", DEVICE_TYPES, gan_loss)
