"""gan_loss for the cuda backend: ``fastgan::gan_loss`` (one kernel writes the reduced loss and
d(loss)/d(logits)) with its fake, the registry entry and its CPU size policy."""
from __future__ import annotations

import warnings
from typing import Union

import torch

from fastgan.backends.reference import gan_loss as _reference
from fastgan.ops.checks import gan_loss_args
from fastgan.ops.registry import register
from fastgan.ops.units import on_new_unit

from ._cpu_policy import _cpu_pick
from ._extension import DEVICE_TYPES, _acc_dtype, _ops


@torch.library.register_fake("fastgan::gan_loss")
def _gan_loss_fake(logits, target, target_value, kind, reduction, weight=1.0):
    return logits.new_empty(()), torch.empty_like(logits, dtype=_acc_dtype(logits.dtype),
                                                  memory_format=torch.contiguous_format)


# Its autograd formula is C++ (csrc/autograd/gan_loss.cpp): an eager call runs no Python
# beyond this wrapper.

_warned_target_grad = False


def target_args(logits: torch.Tensor, target: Union[float, torch.Tensor]):
    """(target tensor or None, target value): the operator's two forms of a target (a CPU
    scalar next to CUDA logits as a value)."""
    if not isinstance(target, torch.Tensor):
        return None, float(target)
    if target.device != logits.device:
        if target.numel() == 1 and target.device.type == "cpu":
            return None, float(target)
        target = target.to(logits.device)
    if not target.is_floating_point():
        target = target.to(logits.dtype)
    return target, 0.0


def target_needs_grad(target) -> bool:
    return isinstance(target, torch.Tensor) and target.requires_grad and torch.is_grad_enabled()


def gan_loss(logits: torch.Tensor, target: Union[float, torch.Tensor], kind: str = "bce",
             reduction: str = "mean", weight: float = 1.0) -> torch.Tensor:
    global _warned_target_grad
    weight = float(weight)   # folded into the kernel's reduction scale (csrc/ops/gan_loss.cpp)
    gan_loss_args(kind, reduction)
    if target_needs_grad(target):
        if not _warned_target_grad:
            _warned_target_grad = True
            warnings.warn("fastgan: gan_loss with a target that requires grad uses the "
                          "reference implementation", RuntimeWarning, stacklevel=2)
        return _reference(logits, target, kind, reduction, weight)
    return _ops.gan_loss(logits, *target_args(logits, target), kind, reduction, weight)[0]


# The engine's unit backward seeds (fastgan/ops/units.py), told to the C++ formula, which
# then skips its multiply by 1.
on_new_unit(lambda t: _ops.mark_unit_grad(t))

gan_loss_cpu = _cpu_pick("gan_loss", gan_loss, _reference, lambda x, *a, **k: x.numel())

register("gan_loss", "cuda", ("cpu",), gan_loss_cpu)
if "cuda" in DEVICE_TYPES:
    register("gan_loss", "cuda", ("cuda",), gan_loss)
