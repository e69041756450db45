"""gan_loss_stats, reference: the active backend's gan_loss, then its gan_stats with that loss as
the G loss (the fusion is all a backend's form adds)."""
from __future__ import annotations

from typing import Union

import torch

from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def gan_loss_stats(logits: torch.Tensor, target: Union[float, torch.Tensor], kind: str,
                   reduction: str, weight: float, stats: torch.Tensor, loss_d: torch.Tensor,
                   real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    from fastgan import ops
    loss = ops.gan_loss(logits, target, kind, reduction, weight)
    with torch.no_grad():
        ops.gan_stats(stats, loss_d.detach(), loss.detach(), real_logits.detach(),
                      fake_logits.detach())
    return loss


register("gan_loss_stats", "reference", ALL_DEVICES, gan_loss_stats)
