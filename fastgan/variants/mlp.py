"""`mlp` — seed 001 (Keras, MNIST): fully connected G with activation *before* BatchNorm."""
from __future__ import annotations

import torch
import torch.nn as nn

from fastgan.nn import BatchNormAct, FusedLinearAct, bce

from .base import Hyper, Variant

# Keras BatchNormalization(momentum=0.8) keeps 0.8 of the old statistic: PyTorch momentum 0.2.
BN = dict(momentum=0.2, eps=1e-3)


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100, out_dim: int = 784):
        super().__init__()
        widths = [z_dim, 256, 512, 1024]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [FusedLinearAct(a, b, slope=0.2), BatchNormAct(b, slope=None, **BN)]
        self.body = nn.Sequential(*layers)
        self.out = FusedLinearAct(1024, out_dim, slope=None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.body(z)))


class Discriminator(nn.Module):
    """Returns logits; the seed's final sigmoid lives in the logit-space loss."""

    def __init__(self, in_dim: int = 784):
        super().__init__()
        self.net = nn.Sequential(FusedLinearAct(in_dim, 1024, slope=0.2),
                                 FusedLinearAct(1024, 256, slope=0.2),
                                 FusedLinearAct(256, 1, slope=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))


class MLP(Variant):
    name = "mlp"
    seed_doc = "seed 001: Keras MLP GAN on MNIST"
    hyper = Hyper(batch_size=64, lr_d=2e-4, lr_g=2e-4, betas=(0.5, 0.999), z_dim=100)
    g_reuses_fake = False  # the seed trains G on a fresh batch of B noise vectors

    def build(self, cfg):
        return {"G": Generator(self.hyper.z_dim), "D": Discriminator()}

    def batch_sizes(self, batch_size):
        # The seed's D sees half a batch of real and half of fake images.
        half = max(1, batch_size // 2)
        return half, half

    def image_view(self, images):
        return images.reshape(images.shape[0], -1)

    def d_loss(self, nets, batch, gen, real_target):
        n = batch.real.shape[0]
        # D has no BatchNorm, so one pass over [real; fake] equals two passes.
        logits = nets["D"](torch.cat([batch.real, gen["fake"]], 0))
        real, fake = logits[:n], logits[n:]
        # Keras reports 0.5 * (loss on real + loss on fake).
        return 0.5 * (bce(real, real_target) + bce(fake, 0.0)), real, fake

    def g_loss(self, nets, batch, gen):
        fake = nets["D"](gen["fake"])
        return bce(fake, 1.0), fake
