"""`dcgan` — seed 003 (TensorFlow DCGAN on 96x96 faces) and the DCGAN paper / PyTorch example.

Defaults equal the PyTorch DCGAN example: 64x64, ngf = ndf = 64, 4x4 kernels, no conv biases,
a final 4x4 conv to one logit, N(0, 0.02) init. Any size 4·2^k or 6·2^k (32, 64, 96, 128...)
with 1 or 3 channels.

``kernel=5`` is seed 003's TF DCGAN as far as its text survives (lines 100-105): 5x5
convolutions with biases (zero-initialised) and ``tf.truncated_normal(stddev=0.02)`` weights
(re-drawn beyond two standard deviations); "SAME" padding as exact halving/doubling. The seed's
text stops after D's second layer: the rest (BN, layer widths, the final layer: ``final=linear``
for the seed's linear layer) follows the DCGAN recipe of its lines 39-53.

Knowing departures: BCE in logit space (the example's Sigmoid + BCELoss differs only once D
saturates); batches drawn with replacement, as seed 003's ``get_batch`` does (the example walks
shuffled epochs).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from fastgan.nn import BatchNormAct, ConvBNAct, FusedLinearAct, SyncBatchNormAct, bce
from fastgan.nn.batchnorm import bn_groups

from .base import BenchSettings, Hyper, Option, Variant, cat_rows


def base_and_doublings(size: int):
    """(4 or 6, k) with size = base·2^k, k >= 1; None if the networks cannot make ``size``."""
    for base in (4, 6):
        if size % base == 0:
            q = size // base
            if q >= 2 and q & (q - 1) == 0:
                return base, q.bit_length() - 1
    return None


def nearest_size(size: int) -> int:
    """The image size the networks can make that is nearest to ``size`` (the larger on a tie)."""
    sizes = [b << k for b in (4, 6) for k in range(1, 12)]
    return min(sizes, key=lambda s: (abs(s - size), -s))


def _pad(kernel: int):
    """(padding, output_padding) giving exact halving/doubling at stride 2 ("SAME")."""
    if kernel == 4:
        return 1, 0
    if kernel == 5:
        return 2, 1
    raise ValueError(f"dcgan: kernel must be 4 (PyTorch example) or 5 (TF seed), not {kernel}")


class Generator(nn.Module):
    def __init__(self, z_dim=100, image_size=64, channels=3, ngf=64, kernel=4):
        super().__init__()
        base, n = base_and_doublings(image_size)
        p, op = _pad(kernel)
        ch = ngf * 2 ** (n - 1)
        bias = kernel == 5   # the TF seed's layers have biases, the PyTorch example's none
        layers = [ConvBNAct(z_dim, ch, base, 1, 0, transposed=True, bias=bias, bn=True,
                            slope=0.0)]
        for _ in range(n - 1):
            layers.append(ConvBNAct(ch, ch // 2, kernel, 2, p, op, transposed=True, bias=bias,
                                    bn=True, slope=0.0))
            ch //= 2
        layers.append(ConvBNAct(ch, channels, kernel, 2, p, op, transposed=True, bias=bias))
        self.net = nn.Sequential(*layers)
        self.z_dim = z_dim

    def forward(self, z):
        return torch.tanh(self.net(z.view(z.shape[0], self.z_dim, 1, 1)))


class Discriminator(nn.Module):
    def __init__(self, image_size=64, channels=3, ndf=64, kernel=4, final="conv"):
        super().__init__()
        base, n = base_and_doublings(image_size)
        p, _ = _pad(kernel)
        bias = kernel == 5   # seed 003: w1, b1, w2, b2 (lines 102-105)
        layers = [ConvBNAct(channels, ndf, kernel, 2, p, bias=bias, slope=0.2)]
        ch = ndf
        for _ in range(n - 1):
            layers.append(ConvBNAct(ch, ch * 2, kernel, 2, p, bias=bias, bn=True, slope=0.2))
            ch *= 2
        self.body = nn.Sequential(*layers)
        if final == "conv":   # the PyTorch example
            self.out = ConvBNAct(ch, 1, base, 1, 0, bias=bias)
        elif final == "linear":  # the TF seed
            self.out = FusedLinearAct(ch * base * base, 1)
        else:
            raise ValueError(f"dcgan: final layer must be conv or linear, not {final!r}")
        self.final = final

    def forward(self, x):
        h = self.body(x)
        if self.final == "linear":
            h = h.flatten(1)
        return self.out(h).view(-1, 1)


def dcgan_init_(module: nn.Module, truncated: bool = False) -> nn.Module:
    """DCGAN paper init: conv (and linear) weights N(0, 0.02); BN gamma N(1, 0.02), beta 0.
    ``truncated``: weights as ``tf.truncated_normal(stddev=0.02)``, re-drawn beyond 2 std."""
    for m in module.modules():
        if isinstance(m, BatchNormAct):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if truncated:
                nn.init.trunc_normal_(m.weight, 0.0, 0.02, -0.04, 0.04)
            else:
                nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class DCGAN(Variant):
    name = "dcgan"
    g_loss_single = True   # g_loss: one loss call
    # seed 003 (TF DCGAN, faces) / the PyTorch DCGAN example
    bench = BenchSettings(
        tiny_batch=4, tiny_overrides={"image_size": 32, "ngf": 8, "ndf": 8},
        gpu_batches=(128, 512, 2048), heavy=True, bf16_batches=(512,), bf16_quick=True,
        check_batches=(128, 512), top_kernels=True,
        kernel_budget=73, kernel_budget_reference=101, kernel_budget_triton=52)
    hyper = Hyper(batch_size=128, lr_d=2e-4, lr_g=2e-4, betas=(0.5, 0.999), z_dim=100,
                  image_size=64, channels=3,
                  extra={"ngf": 64, "ndf": 64, "kernel": 4, "final": "conv"})
    cli_options = (Option("--ngf", "ngf", int, help="dcgan: generator width"),
                   Option("--ndf", "ndf", int, help="dcgan: discriminator width"),
                   Option("--kernel", "kernel", int, (4, 5),
                          help="dcgan: 4 (PyTorch) or 5 (TF seed)"),
                   Option("--final", "final", choices=("conv", "linear"),
                          help="dcgan: D's last layer"))

    def check_image_size(self, image_size, channels):
        if base_and_doublings(image_size) is None:
            raise ValueError(f"dcgan cannot make {image_size}x{image_size} images: the size must "
                             "be 4·2^k or 6·2^k (e.g. 32, 64, 96, 128); use --image-size "
                             f"{nearest_size(image_size)}")
        if channels not in (1, 3):
            raise ValueError(f"dcgan makes 1- or 3-channel images, not {channels}")

    def build(self, cfg):
        h = self.hyper
        x = h.extra
        self.check_image_size(h.image_size, h.channels)
        G = Generator(h.z_dim, h.image_size, h.channels, int(x["ngf"]), int(x["kernel"]))
        D = Discriminator(h.image_size, h.channels, int(x["ndf"]), int(x["kernel"]),
                          str(x["final"]))
        tf = int(x["kernel"]) == 5   # seed 003's truncated_normal (line 102)
        return {"G": dcgan_init_(G, tf), "D": dcgan_init_(D, tf)}

    def d_loss(self, nets, batch, gen, real_target):
        # D has BatchNorm: real and fake are normalised with their own batch statistics, as in
        # the PyTorch example's two passes; with equal halves that is one pass of grouped BN
        # (groups=2: each half its own statistics, running stats updated real first).
        D, n = nets["D"], batch.real.shape[0]
        if gen["fake"].shape[0] != n or any(isinstance(m, SyncBatchNormAct)
                                            for m in D.modules()):
            real = D(batch.real)
            fake = D(gen["fake"])
            return bce(real, real_target) + bce(fake, 0.0), real, fake
        # Under bf16 autocast the fakes are bf16 and the gathered reals float32: the reals are
        # cast to bf16 first (the cast D's first conv would make anyway), so the cat does not
        # promote the fakes to float32 and back (numbers unchanged).
        fake = gen["fake"]
        real_in = batch.real.to(fake.dtype) if fake.dtype != batch.real.dtype else batch.real
        with bn_groups(D, 2):
            logits = D(cat_rows(real_in, fake))
        real, fake = logits[:n], logits[n:]
        # The sum of the two means is twice the mean over both (one loss call; the factor 2 is
        # exact, and is the op's weight: no scalar kernel).
        return bce(logits, self.split_targets(logits, n, real_target, 0.0), weight=2.0), real, fake

    def g_loss(self, nets, batch, gen):
        fake = nets["D"](gen["fake"])
        return bce(fake, 1.0), fake
