"""GAN losses on logits. A sigmoid followed by BCE is computed in logit space (no log(0));
LSGAN is on probabilities sigmoid(logit), as the seeds define it."""
from __future__ import annotations

from typing import Union

import torch

from fastgan import ops

Target = Union[float, torch.Tensor]


def _fp32(logits: torch.Tensor) -> torch.Tensor:
    # Losses are computed in fp32 at least, whatever the logits' dtype (as autocast does for BCE).
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def bce(logits: torch.Tensor, target: Target, reduction: str = "mean") -> torch.Tensor:
    return ops.gan_loss(_fp32(logits), target, "bce", reduction)


def lsgan(logits: torch.Tensor, target: Target, reduction: str = "sum") -> torch.Tensor:
    return ops.gan_loss(_fp32(logits), target, "lsgan", reduction)
