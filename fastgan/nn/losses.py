"""GAN losses on logits. A sigmoid followed by BCE is computed in logit space (no log(0));
LSGAN is on probabilities sigmoid(logit), as the seeds define it."""
from __future__ import annotations

from typing import Union

import torch

from fastgan import ops

Target = Union[float, torch.Tensor]


def bce(logits: torch.Tensor, target: Target, reduction: str = "mean") -> torch.Tensor:
    return ops.gan_loss(logits, target, "bce", reduction)


def lsgan(logits: torch.Tensor, target: Target, reduction: str = "sum") -> torch.Tensor:
    return ops.gan_loss(logits, target, "lsgan", reduction)
