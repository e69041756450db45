"""Stand-ins shared by the tests: a variant and a 'generator' that hands back real images (the
quality metrics' tests), and a small CPU training config (the trainer's tests)."""
from __future__ import annotations

import torch
import torch.nn as nn

from fastgan.engine import TrainConfig


class BankG(nn.Module):
    """A 'generator' that returns real images from a bank in order (per class when conditional:
    ``labels``, ``wrong_class`` shifts the class by one)."""

    def __init__(self, images, labels=None, wrong_class=False):
        super().__init__()
        self.images, self.labels, self.wrong = images.float() / 255, labels, wrong_class
        self.pos = 0

    def forward(self, z, labels=None):
        m = z.shape[0]
        if labels is None:
            x = self.images[self.pos:self.pos + m]
        else:
            want = (labels.cpu() + (1 if self.wrong else 0)) % 10
            x = torch.stack([self.images[self.labels == k][(self.pos + i) % 100]
                             for i, k in enumerate(want.tolist())])
        self.pos += m
        return x


class StubVariant:
    needs_labels = False

    def noise_shape(self, n):
        return (n, 4)

    def fill_noise(self, z, labels, g):
        z.normal_(generator=g)

    def sample(self, nets, z, labels=None):
        return nets["G"](z, labels) if labels is not None else nets["G"](z)


def train_config(data_dir, out, **kw) -> TrainConfig:
    """mlp on CPU with the reference backend, batch 16, logging every 5 steps, no samples or
    checkpoints unless asked; ``kw`` overrides."""
    base = dict(variant="mlp", data_dir=str(data_dir), out=str(out), device="cpu",
                backend="reference", log_every=5, sample_every=0, checkpoint_every=0,
                quiet=True, batch_size=16)
    base.update(kw)
    return TrainConfig(**base)
