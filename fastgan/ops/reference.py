"""The reference backend: plain PyTorch ops, on any device. It is the ground truth every fast
path is tested against, so it is written for clarity, in the most literal form of each formula."""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from .registry import register

_ALL = ("cpu", "cuda", "meta", "mps")


def act(y: torch.Tensor, slope: Optional[float]) -> torch.Tensor:
    """The activation every fused op ends with: none (slope None), ReLU (0) or LeakyReLU."""
    if slope is None:
        return y
    if slope == 0.0:
        return F.relu(y)
    return F.leaky_relu(y, slope)


@register("linear_act", "reference", _ALL)
def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               slope: Optional[float]) -> torch.Tensor:
    return act(F.linear(x, weight, bias), slope)


@register("bias_act", "reference", _ALL)
def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor], slope: Optional[float],
             dim: int = 1) -> torch.Tensor:
    if bias is not None:
        shape = [1] * x.dim()
        shape[dim] = -1
        x = x + bias.view(shape)
    return act(x, slope)


@register("bn_act", "reference", _ALL)
def bn_act(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
           running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
           training: bool, momentum: float, eps: float, slope: Optional[float]) -> torch.Tensor:
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return act(y, slope)


@register("gan_loss", "reference", _ALL)
def gan_loss(logits: torch.Tensor, target: Union[float, torch.Tensor], kind: str = "bce",
             reduction: str = "mean") -> torch.Tensor:
    if torch.is_tensor(target):
        t = target.to(logits.dtype).expand_as(logits)
    else:  # a fill, not a host-to-device copy: capturable in a CUDA graph
        t = torch.full_like(logits, float(target))
    if kind == "bce":
        per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    elif kind == "lsgan":
        per = (torch.sigmoid(logits) - t) ** 2
    else:
        raise ValueError(f"gan_loss: unknown kind {kind!r} (use 'bce' or 'lsgan')")
    if reduction == "mean":
        return per.mean()
    if reduction == "sum":
        return per.sum()
    raise ValueError(f"gan_loss: unknown reduction {reduction!r} (use 'mean' or 'sum')")
