"""`bigan` — seed 000 (TensorFlow, MNIST): BiGAN / ALI with an encoder Q and a joint D(x, z).

The defaults reproduce the seed's loop (lines 205-218): one D update and one Q+P update on the
same batch and noise, TF1's ``AdamOptimizer(learning_rate=1e-3)`` for both (eps-hat form, eps
1e-8, lines 189-193), the seed's init (lines 65-74).

Knowing departures: the losses are BCE in logit space where the seed takes ``log(p + 1e-8)`` of
the sigmoid (lines 76-82, 169, 177): a relative difference of ~1e-8 until D saturates, where the
seed's form loses the gradient; batches are drawn with replacement (``next_batch`` walks
shuffled epochs).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from fastgan.nn import FusedLinearAct, bce

from .base import BenchSettings, Hyper, Variant


def xavier_(module: nn.Module) -> nn.Module:
    """The seed's init: N(0, 1/sqrt(fan_in/2)) weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 1.0 / math.sqrt(m.in_features / 2.0))
            nn.init.zeros_(m.bias)
    return module


class Encoder(nn.Module):
    def __init__(self, x_dim=784, h_dim=128, z_dim=64):
        super().__init__()
        self.net = nn.Sequential(FusedLinearAct(x_dim, h_dim, 0.0), FusedLinearAct(h_dim, z_dim))

    def forward(self, x):
        return self.net(x)


class Generator(nn.Module):
    def __init__(self, z_dim=64, h_dim=128, x_dim=784):
        super().__init__()
        self.net = nn.Sequential(FusedLinearAct(z_dim, h_dim, 0.0), FusedLinearAct(h_dim, x_dim))

    def forward(self, z):
        return torch.sigmoid(self.net(z))


class Discriminator(nn.Module):
    def __init__(self, x_dim=784, z_dim=64, h_dim=128):
        super().__init__()
        self.net = nn.Sequential(FusedLinearAct(x_dim + z_dim, h_dim, 0.0),
                                 FusedLinearAct(h_dim, 1))

    def forward(self, x, z):
        return self.net(torch.cat([x, z], 1))


class BiGAN(Variant):
    name = "bigan"
    # seed 000: TensorFlow BiGAN/ALI on MNIST
    bench = BenchSettings(tiny_batch=8, gpu_batches=(32, 128, 512),
                          kernel_budget=56, kernel_budget_reference=69)
    hyper = Hyper(batch_size=32, lr_d=1e-3, lr_g=1e-3, z_dim=64, data_range="sigmoid",
                  adam="eps_hat", adam_eps=1e-8)   # tf.train.AdamOptimizer
    gen_keys = ("fake", "z_hat")

    def build(self, cfg):
        h = self.hyper
        return {"G": xavier_(Generator(h.z_dim)), "E": xavier_(Encoder(z_dim=h.z_dim)),
                "D": xavier_(Discriminator(z_dim=h.z_dim))}

    def param_roles(self):
        return {"D": ["D"], "G": ["G", "E"]}

    def fill_noise(self, z, labels, generator):
        z.uniform_(-1.0, 1.0, generator=generator)

    def image_view(self, images):
        return images.reshape(images.shape[0], -1)

    def generate_train(self, nets, batch):
        return {"fake": nets["G"](batch.z), "z_hat": nets["E"](batch.real)}

    def _both(self, nets, batch, gen):
        n = batch.real.shape[0]
        # D has no BatchNorm: score (x, Q(x)) and (P(z), z) in one pass.
        logits = nets["D"](torch.cat([batch.real, gen["fake"]], 0),
                           torch.cat([gen["z_hat"], batch.z], 0))
        return logits, n

    def _two_means(self, logits, n, t_real, t_fake):
        """bce(real rows, t_real) + bce(fake rows, t_fake): with equal halves twice the mean
        over both, one loss call with a target per row (the factor 2 is exact)."""
        if 2 * n != logits.shape[0]:
            return bce(logits[:n], t_real) + bce(logits[n:], t_fake)
        return 2 * bce(logits, self.split_targets(logits, n, t_real, t_fake))

    def d_loss(self, nets, batch, gen, real_target):
        logits, n = self._both(nets, batch, gen)
        # -mean(log D(x,Q(x)) + log(1 - D(P(z),z))), in logit space.
        return self._two_means(logits, n, real_target, 0.0), logits[:n], logits[n:]

    def g_loss(self, nets, batch, gen):
        logits, n = self._both(nets, batch, gen)
        # -mean(log D(P(z),z) + log(1 - D(x,Q(x)))): trains P and Q together.
        return self._two_means(logits, n, 0.0, 1.0), logits[n:]
