"""gan_loss, reference: BCE-with-logits, LSGAN on sigmoid(logits), hinge (D side) or linear
(the hinge/Wasserstein G side), mean or sum, times a constant ``weight``."""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F

from fastgan.ops.checks import gan_loss_args
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def gan_loss(logits: torch.Tensor, target: Union[float, torch.Tensor], kind: str = "bce",
             reduction: str = "mean", weight: float = 1.0) -> torch.Tensor:
    gan_loss_args(kind, reduction)
    if torch.is_tensor(target):
        t = target.to(logits.dtype).expand_as(logits)
    else:  # a fill, not a host-to-device copy: capturable in a CUDA graph
        t = torch.full_like(logits, float(target))
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    elif kind == "lsgan":
        per = (torch.sigmoid(logits) - t) ** 2
    elif kind == "hinge":   # t = 1: relu(1 - l), t = 0: relu(1 + l)
        per = t * torch.relu(1 - logits) + (1 - t) * torch.relu(1 + logits)
    else:                   # linear: t = 1: -l (hinge G loss), t = 0: l
        per = (1 - 2 * t) * logits
    loss = per.mean() if reduction == "mean" else per.sum()
    # the plain torch sequence: a mul after the reduction, what `weight * loss` costs in torch
    return loss if weight == 1.0 else loss * weight


register("gan_loss", "reference", ALL_DEVICES, gan_loss)
