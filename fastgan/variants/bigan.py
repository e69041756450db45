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
from fastgan.nn.linear import LinearHeadSequential

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
        self.net = nn.Sequential(FusedLinearAct(z_dim, h_dim, 0.0),
                                 FusedLinearAct(h_dim, x_dim, "sigmoid"))

    def forward(self, z):
        return self.net(z)


class Discriminator(nn.Module):
    def __init__(self, x_dim=784, z_dim=64, h_dim=128):
        super().__init__()
        # both layers one op (ops.linear_act_head); state dict as Sequential's
        self.net = LinearHeadSequential(FusedLinearAct(x_dim + z_dim, h_dim, 0.0),
                                        FusedLinearAct(h_dim, 1))

    def forward(self, x, z):
        return self.net(torch.cat([x, z], 1))

    def score(self, xz):
        """D on pairs already joined, [x, z] per row."""
        return self.net(xz)


class BiGAN(Variant):
    name = "bigan"
    g_loss_single = True   # g_loss: one loss call
    # seed 000: TensorFlow BiGAN/ALI on MNIST
    bench = BenchSettings(tiny_batch=8, gpu_batches=(32, 128, 512),
                          kernel_budget=36, kernel_budget_reference=64,
                          kernel_budget_triton=24)
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

    def _both(self, nets, batch, gen, t_real, t_fake):
        """bce(D(x, Q(x)), t_real) + bce(D(P(z), z), t_fake), D's real and fake logits. D has
        no BatchNorm: both groups in one pass, scored by one loss call with a target per row
        (with equal groups the sum of the two means is twice the mean over both; the factor 2
        is exact, and is the op's weight: no scalar kernel)."""
        x, z_hat, fake, z = batch.real, gen["z_hat"], gen["fake"], batch.z
        n = x.shape[0]
        if fake.shape[0] != n:
            logits = nets["D"](torch.cat([x, fake], 0), torch.cat([z_hat, z], 0))
            real_l, fake_l = logits[:n], logits[n:]
            return bce(real_l, t_real) + bce(fake_l, t_fake), real_l, fake_l
        if z_hat.requires_grad or fake.requires_grad:
            # The G step: the four (n, .) blocks side by side are, read row by row, the pairs
            # (x, Q(x)), (P(z), z) interleaved: one cat, differentiable.
            logits = nets["D"].score(torch.cat([x, z_hat, fake, z], 1).view(2 * n, -1))
            pairs = logits.view(n, 2)
            loss = bce(pairs, self.split_targets(pairs, 1, t_real, t_fake, dim=1), weight=2.0)
            return loss, pairs[:, :1], pairs[:, 1:]
        # The D step (nothing to differentiate into): real pairs above fake ones, each half
        # joined in place.
        dt = torch.promote_types(torch.promote_types(x.dtype, z_hat.dtype),
                                 torch.promote_types(fake.dtype, z.dtype))
        xz = torch.empty((2 * n, x.shape[1] + z.shape[1]), dtype=dt, device=x.device)
        torch.cat([x, z_hat], 1, out=xz[:n])
        torch.cat([fake, z], 1, out=xz[n:])
        logits = nets["D"].score(xz)
        real_l, fake_l = logits[:n], logits[n:]
        loss = bce(logits, self.split_targets(logits, n, t_real, t_fake), weight=2.0)
        return loss, real_l, fake_l

    def d_loss(self, nets, batch, gen, real_target):
        # -mean(log D(x,Q(x)) + log(1 - D(P(z),z))), in logit space.
        return self._both(nets, batch, gen, real_target, 0.0)

    def g_loss(self, nets, batch, gen):
        # -mean(log D(P(z),z) + log(1 - D(x,Q(x)))): trains P and Q together.
        loss, _, fake = self._both(nets, batch, gen, 0.0, 1.0)
        return loss, fake
