"""Fixed noise for sample grids, and generating without disturbing training state."""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .base import Variant


def fixed_noise(variant: Variant, n: int, seed: int, device: torch.device,
                label: Optional[int] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor], int]:
    """(z, labels, images per grid row). Conditional variants get one row per class (or all
    ``label`` when given); others a square-ish grid."""
    g = torch.Generator().manual_seed(seed)
    labels = None
    nrow = max(1, int(round(n ** 0.5)))
    if variant.needs_labels:
        if label is not None:
            labels = torch.full((n,), int(label), dtype=torch.long)
        else:
            per = max(1, n // 10)
            labels = torch.arange(10).repeat_interleave(per)
            n, nrow = labels.numel(), per
    z = torch.empty(variant.noise_shape(n))
    variant.fill_noise(z, labels, g)
    return z.to(device), (labels.to(device) if labels is not None else None), nrow


@torch.no_grad()
def generate(variant: Variant, nets, z: torch.Tensor, labels: Optional[torch.Tensor] = None,
             bn: str = "batch") -> torch.Tensor:
    """Images in [0, 1]. ``bn="batch"`` normalizes with the sample batch's own statistics (as
    the PyTorch DCGAN example samples) and leaves the running statistics untouched; ``"running"``
    uses the running statistics (eval mode)."""
    G = nets["G"]
    was_training = G.training
    saved = [b.clone() for b in G.buffers()]
    G.train(bn == "batch")
    try:
        return variant.sample(nets, z, labels)
    finally:
        for b, s in zip(G.buffers(), saved):
            b.copy_(s)
        G.train(was_training)
