"""`gancls` — seed 002 (TensorFlow, MNIST): conditional GAN with a matching-aware D (GAN-CLS)
and LSGAN losses summed over the batch.

The defaults reproduce the seed's training loop (lines 28-66): D scores (x, y), (G(z), y) and
(x, y_mis) as one batch (lines 37-40), the LSGAN losses summed (lines 41-42), TF1's
``AdamOptimizer`` (eps-hat form, eps 1e-8; D lr 1e-4, G lr 1e-3, lines 49-50), and a G step on
fresh noise with the D step's labels: ``tf.random_normal`` (line 31) is re-run by the second
``sess.run`` (line 66). The generator is the book's InfoGAN one, with tf-slim's defaults.

Knowing departures: batches are drawn with replacement (the seed's ``next_batch`` walks shuffled
epochs); BatchNorm keeps moving statistics (decay 0.999) for eval-mode sampling, which the seed
never updates (it does not run UPDATE_OPS) and never uses in training; the LSGAN losses are
computed by fastgan's loss op on D's logits (sigmoid inside), the same function.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import is_fake

from fastgan.nn import BatchNormAct, ConvBNAct, FusedLinearAct, lsgan
from fastgan.nn.batchnorm import linear_bn_act
from fastgan.nn.linear import linear_head

from .base import BenchSettings, Hyper, Variant

N_CLASSES = 10
# TF-slim batch_norm defaults: no gamma (beta only), epsilon 1e-3, decay 0.999.
BN = dict(momentum=0.001, eps=1e-3, affine="beta")


class Generator(nn.Module):
    """The InfoGAN generator of the book: ``slim.fully_connected`` keeps its defaults (a bias and
    a ReLU) before ``slim.batch_norm(activation_fn=relu)``, twice; the first
    ``conv2d_transpose`` sets ``activation_fn=None`` but keeps its bias; two 4x4 stride-2
    deconvolutions ("SAME": padding 1)."""

    def __init__(self, z_dim: int = 48):
        super().__init__()
        self.fc1 = FusedLinearAct(z_dim, 1024, slope=0.0)
        self.bn1 = BatchNormAct(1024, slope=0.0, **BN)
        self.fc2 = FusedLinearAct(1024, 7 * 7 * 128, slope=0.0)
        self.bn2 = BatchNormAct(7 * 7 * 128, slope=0.0, **BN)
        self.up1 = ConvBNAct(128, 64, 4, 2, 1, transposed=True, bias=True, bn=True, slope=0.0,
                             bn_momentum=BN["momentum"], bn_eps=BN["eps"], bn_affine="beta")
        self.up2 = ConvBNAct(64, 1, 4, 2, 1, transposed=True, bias=True, slope="sigmoid")

    def forward(self, z):
        # each fc + bn one op (ops.linear_bn_act)
        h = linear_bn_act(self.fc2, self.bn2, linear_bn_act(self.fc1, self.bn1, z))
        return self.up2(self.up1(h.view(-1, 128, 7, 7)))  # the sigmoid in up2's epilogue


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = FusedLinearAct(N_CLASSES, 784, slope=0.01)
        self.conv1 = ConvBNAct(2, 64, 4, 2, 1, slope=0.01)
        self.conv2 = ConvBNAct(64, 128, 4, 2, 1, slope=0.01)
        self.fc = FusedLinearAct(128 * 7 * 7, 1024, slope=0.01)
        self.out = FusedLinearAct(1024, 1)

    def forward(self, x, y_onehot):
        y = self.embed(y_onehot).view(-1, 1, 28, 28)
        h = torch.cat([x.view(-1, 1, 28, 28), y], 1)
        h = self.conv2(self.conv1(h))
        return linear_head(self.fc, self.out, h.flatten(1))   # one op (ops.linear_act_head)


_CLASSES: Dict[torch.device, torch.Tensor] = {}


def _classes(device: torch.device) -> torch.Tensor:
    c = _CLASSES.get(device)
    if c is None:
        c = torch.arange(N_CLASSES, device=device)
        if not is_fake(c):   # the roofline's shape-only pass must not leave its tensor here
            _CLASSES[device] = c
    return c


def one_hot(labels: torch.Tensor, dtype=torch.float32,
            out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """labels (n,) -> (n, 10) in ``dtype``, into ``out`` when given (any strides)."""
    # F.one_hot checks the labels' range on the host on CPU (a read back) and needs a cast: a
    # comparison with the class indices, written as floats, is the same tensor in one kernel.
    if out is None:
        out = torch.empty(labels.shape[0], N_CLASSES, dtype=dtype, device=labels.device)
    return torch.eq(labels.view(-1, 1), _classes(labels.device), out=out)


class GANCLS(Variant):
    name = "gancls"
    g_loss_single = True   # g_loss: one loss call
    # seed 002: TensorFlow GAN-CLS (conditional, matching-aware D) on MNIST
    bench = BenchSettings(tiny_batch=4, gpu_batches=(10, 40, 160),
                          kernel_budget=78, kernel_budget_reference=146,
                          kernel_budget_triton=66)
    hyper = Hyper(batch_size=10, lr_d=1e-4, lr_g=1e-3, z_dim=48, data_range="sigmoid",
                  adam="eps_hat", adam_eps=1e-8)   # tf.train.AdamOptimizer
    needs_labels = True
    g_reuses_fake = False   # fresh z_rand for the G step (lines 31, 66), the same labels
    loss_reduction = "sum"   # LSGAN losses summed over the batch, as the seed does

    def build(self, cfg):
        return {"G": Generator(self.hyper.z_dim), "D": Discriminator()}

    def fill_noise(self, z, labels, generator):
        # z = [one_hot(y), N(0,1)^38], written in place so the buffer can be captured.
        z.normal_(generator=generator)
        if labels is not None:
            self.condition_noise(z, labels)

    def condition_noise(self, z, labels):
        one_hot(labels, out=z[:, :N_CLASSES])

    def d_loss(self, nets, batch, gen, real_target):
        n = batch.real.shape[0]
        # The seed scores the three groups as one batch: (x, y), (G(z), y), (x, y_mis).
        y3 = one_hot(torch.cat([batch.labels, batch.labels, batch.mis_labels]), batch.real.dtype)
        x = batch.real.view(n, 1, 28, 28)
        logits = nets["D"](torch.cat([x, gen["fake"], x], 0), y3)
        # sum[(d_real-1)^2 + (d_fake^2 + d_mis^2)/2] / 2. Fake and mismatched rows have the same
        # target and weight: one loss call; split (not sliced) so the backward is one cat.
        real, fake_mis = logits.split([n, 2 * n])
        # The halves and quarters are the ops' weights (exact: powers of two), not scalar kernels.
        loss = lsgan(real, real_target, weight=0.5) + lsgan(fake_mis, 0.0, weight=0.25)
        return loss, real, logits[n:2 * n]

    def g_loss(self, nets, batch, gen):
        fake = nets["D"](gen["fake"], one_hot(batch.labels, gen["fake"].dtype))
        return lsgan(fake, 1.0, weight=0.5), fake
