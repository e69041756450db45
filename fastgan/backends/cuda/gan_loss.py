"""gan_loss for the cuda backend: ``fastgan::gan_loss`` (one kernel writes the reduced loss and
d(loss)/d(logits)) with its fake, its autograd formula, the registry entry and its CPU size
policy."""
from __future__ import annotations

import warnings
from typing import Union

import torch

from fastgan.backends.reference import gan_loss as _reference
from fastgan.ops.checks import gan_loss_args
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _acc_dtype, _ops


@torch.library.register_fake("fastgan::gan_loss")
def _gan_loss_fake(logits, target, target_value, kind, reduction):
    return logits.new_empty(()), torch.empty_like(logits, dtype=_acc_dtype(logits.dtype),
                                                  memory_format=torch.contiguous_format)


# gan_loss: the forward already wrote d(loss)/d(logits); the backward scales it by the incoming
# gradient. Under create_graph (double backward) it is recomputed with differentiable torch ops.
def _gan_loss_setup(ctx, inputs, output):
    logits, target, target_value, kind, reduction = inputs
    loss, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.set_materialize_grads(False)    # no zero-filled gradient for the unused grad output
    ctx.kind, ctx.reduction, ctx.target_value = kind, reduction, target_value
    ctx.save_for_backward(grad, logits, target)


def _gan_loss_grad_expr(logits, target, target_value, kind, reduction):
    t = target if target is not None else target_value
    s = torch.sigmoid(logits)
    g = s - t if kind == "bce" else 2 * (s - t) * s * (1 - s)
    return g / logits.numel() if reduction == "mean" else g


def _gan_loss_bwd(ctx, gloss, ggrad):
    grad, logits, target = ctx.saved_tensors
    if not ctx.needs_input_grad[0] or gloss is None:
        return None, None, None, None, None
    if torch.is_grad_enabled():
        g = _gan_loss_grad_expr(logits, target, ctx.target_value, ctx.kind, ctx.reduction)
        return (gloss * g).to(logits.dtype), None, None, None, None
    # grad is kept in float32 (float64): one rounding to the logits' dtype, here
    return (gloss.to(grad.dtype) * grad).to(logits.dtype), None, None, None, None


torch.library.register_autograd("fastgan::gan_loss", _gan_loss_bwd, setup_context=_gan_loss_setup)

_warned_target_grad = False


def gan_loss(logits: torch.Tensor, target: Union[float, torch.Tensor], kind: str = "bce",
             reduction: str = "mean") -> torch.Tensor:
    global _warned_target_grad
    gan_loss_args(kind, reduction)
    if isinstance(target, torch.Tensor):
        if target.requires_grad and torch.is_grad_enabled():
            if not _warned_target_grad:
                _warned_target_grad = True
                warnings.warn("fastgan: gan_loss with a target that requires grad uses the "
                              "reference implementation", RuntimeWarning, stacklevel=2)
            return _reference(logits, target, kind, reduction)
        if target.device != logits.device:
            if target.numel() == 1 and target.device.type == "cpu":
                return _ops.gan_loss(logits, None, float(target), kind, reduction)[0]
            target = target.to(logits.device)
        if not target.is_floating_point():
            target = target.to(logits.dtype)
        return _ops.gan_loss(logits, target, 0.0, kind, reduction)[0]
    return _ops.gan_loss(logits, None, float(target), kind, reduction)[0]


gan_loss_cpu = _cpu_pick("gan_loss", gan_loss, _reference, lambda x, *a, **k: x.numel())

register("gan_loss", "cuda", ("cpu",), gan_loss_cpu)
if "cuda" in DEVICE_TYPES:
    register("gan_loss", "cuda", ("cuda",), gan_loss)
