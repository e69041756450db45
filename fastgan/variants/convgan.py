"""`convgan` — seed 004 (PyTorch, MNIST): a conv D with average pooling and a conv G that
works at 56x56 and halves to 28x28 at the end.

The defaults reproduce the seed's loop (lines 261-307): its networks (198-258), BCE, torch's
Adam(3e-4) for both, a D step on real and G(z) and a G step on fresh noise.

Knowing departures: images in [-1, 1], where the seed normalises with MNIST's mean/std (lines
188-191) although its G ends in tanh; BCE in logit space (the seed's Sigmoid + BCELoss differs
only once D saturates); batches drawn with replacement (the seed's DataLoader walks shuffled
epochs).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from fastgan.nn import BatchNormAct, ConvBNAct, FusedLinearAct, bce

from .base import BenchSettings, Hyper, Variant, cat_rows


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = ConvBNAct(1, 32, 5, padding=2, slope=0.2)
        self.conv2 = ConvBNAct(32, 64, 5, padding=2, slope=0.2)
        self.pool = nn.AvgPool2d(2, stride=2)
        self.fc = FusedLinearAct(64 * 7 * 7, 1024, slope=0.2)
        self.out = FusedLinearAct(1024, 1)

    def forward(self, x):
        h = self.pool(self.conv2(self.pool(self.conv1(x))))
        return self.out(self.fc(h.flatten(1)))


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100):
        super().__init__()
        self.fc = FusedLinearAct(z_dim, 56 * 56)
        self.br = BatchNormAct(1, slope=0.0)
        self.down1 = ConvBNAct(1, 50, 3, padding=1, bn=True, slope=0.0)
        self.down2 = ConvBNAct(50, 25, 3, padding=1, bn=True, slope=0.0)
        self.down3 = ConvBNAct(25, 1, 2, stride=2, slope="tanh")

    def forward(self, z, out: Optional[torch.Tensor] = None):
        h = self.br(self.fc(z).view(-1, 1, 56, 56))
        h = self.down2(self.down1(h))
        if out is None:
            return self.down3(h)  # tanh in down3's bias_act epilogue
        # without grad, into the caller's buffer: the conv with its bias, then tanh writes out
        return torch.tanh(self.down3.conv(h), out=out)


class ConvGAN(Variant):
    name = "convgan"
    g_loss_single = True   # g_loss: one loss call
    # seed 004: PyTorch conv GAN on MNIST
    bench = BenchSettings(tiny_batch=4, gpu_batches=(16, 64, 256),
                          kernel_budget=75, kernel_budget_reference=108,
                          kernel_budget_triton=63)
    hyper = Hyper(batch_size=16, lr_d=3e-4, lr_g=3e-4, z_dim=100)
    g_reuses_fake = False  # the seed draws new noise for the G step
    g_writes_out = True

    def build(self, cfg):
        return {"G": Generator(self.hyper.z_dim), "D": Discriminator()}

    def d_loss(self, nets, batch, gen, real_target):
        n = batch.real.shape[0]
        logits = nets["D"](cat_rows(batch.real, gen["fake"]))  # no BN in D: one pass
        real, fake = logits[:n], logits[n:]
        if 2 * n != logits.shape[0]:
            return bce(real, real_target) + bce(fake, 0.0), real, fake
        # Equal halves: the sum of the two means is twice the mean over both (one loss call,
        # no slices in the graph; the factor 2 is exact, and is the op's weight: no scalar kernel).
        return bce(logits, self.split_targets(logits, n, real_target, 0.0), weight=2.0), real, fake

    def g_loss(self, nets, batch, gen):
        fake = nets["D"](gen["fake"])
        return bce(fake, 1.0), fake
