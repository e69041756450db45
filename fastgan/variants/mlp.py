"""`mlp` — seed 001 (Keras, MNIST): fully connected G with activation *before* BatchNorm.

The defaults reproduce the seed's training loop (lines 169-194):

* real images: ``x_train[o : o + 32]`` with ``o = randint(0, len(x_train) - 32)`` (lines 170-171);
* training noise ``np.random.normal(-1, 1, (n, 100)) / 2``, i.e. N(-0.5, 0.5²), for both steps
  (lines 172, 186); the sample grid's noise is N(0, 1) (line 141);
* the D step's fakes from ``generator.predict`` (line 173): G's BatchNorm in inference mode, on
  the moving statistics, which it leaves alone; the G step (``gan.train_on_batch``, line 194)
  runs G in training mode on 64 fresh noise vectors and updates them (from the biased batch
  variance, as Keras does on 2-D input);
* Keras ``Adam(lr=0.0002, beta_1=0.5, decay=8e-8)`` (lines 123-137): the eps-hat form with
  eps 1e-7 and the per-update decay (engine/optim.py);
* Keras' Dense init: glorot_uniform kernels, zero biases.

Knowing departures: the loss is BCE computed in logit space, where Keras clips the sigmoid's
output to [1e-7, 1 - 1e-7] (the same value until D saturates). Line 191 trains the same model a
second time under a name the seed never defines (``stacked_generator_discriminator``); line 194
is the one G step per iteration.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from fastgan.nn import BatchNormAct, FusedLinearAct, bce
from fastgan.nn.batchnorm import LinearBNSequential
from fastgan.nn.linear import LinearHeadSequential

from .base import BenchSettings, Hyper, Variant, cat_rows

# Keras BatchNormalization(momentum=0.8) keeps 0.8 of the old statistic: PyTorch momentum 0.2;
# its moving variance follows the biased batch variance.
BN = dict(momentum=0.2, eps=1e-3, unbiased_running_var=False)


def keras_dense_init_(module: nn.Module) -> nn.Module:
    """Keras Dense defaults: glorot_uniform kernel, zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return module


class Generator(nn.Module):
    def __init__(self, z_dim: int = 100, out_dim: int = 784):
        super().__init__()
        widths = [z_dim, 256, 512, 1024]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [FusedLinearAct(a, b, slope=0.2), BatchNormAct(b, slope=None, **BN)]
        # each (linear, BN) pair one op in training (ops.linear_bn_act); state dict as Sequential's
        self.body = LinearBNSequential(*layers)
        self.out = FusedLinearAct(1024, out_dim, slope="tanh")

    def _body_eval(self, h: torch.Tensor) -> torch.Tensor:
        """The body in inference mode without grad: each BatchNorm (eval, no activation) folded
        into the preceding linear_act's epilogue, one op per layer instead of two."""
        layers = list(self.body)
        for lin, bn in zip(layers[::2], layers[1::2]):
            assert bn.slope is None
            h = lin.pre_activation(h, lin.slope, bn_eval=(bn.running_mean, bn.running_var,
                                                          bn.weight, bn.bias, bn.eps))
        return h

    def forward(self, z: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        folded = not self.training and not torch.is_grad_enabled()
        h = self._body_eval(z) if folded else self.body(z)
        if out is None:
            return self.out(h)  # tanh in the matmul's epilogue
        # without grad, into the caller's buffer (D's [real; fake] rows): the layer's epilogue
        # (or tanh, in a backend without the fused form) writes it, no copy
        return self.out(h, out=out)


class Discriminator(nn.Module):
    """Returns logits; the seed's final sigmoid lives in the logit-space loss."""

    def __init__(self, in_dim: int = 784):
        super().__init__()
        # the last two layers one op (ops.linear_act_head); state dict as Sequential's
        self.net = LinearHeadSequential(FusedLinearAct(in_dim, 1024, slope=0.2),
                                        FusedLinearAct(1024, 256, slope=0.2),
                                        FusedLinearAct(256, 1, slope=None))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1))


class MLP(Variant):
    name = "mlp"
    g_loss_single = True   # g_loss: one loss call
    # seed 001: Keras MLP GAN on MNIST
    bench = BenchSettings(tiny_batch=16, gpu_batches=(64, 256, 1024, 8192), heavy=True,
                          bf16_batches=(8192,), kernel_budget=46, kernel_budget_reference=95,
                          kernel_budget_triton=29)
    # Keras Adam(lr=0.0002, beta_1=0.5, decay=8e-8): eps-hat form, K.epsilon() = 1e-7.
    hyper = Hyper(batch_size=64, lr_d=2e-4, lr_g=2e-4, betas=(0.5, 0.999), z_dim=100,
                  adam="eps_hat", adam_eps=1e-7, lr_decay=8e-8)
    g_reuses_fake = False  # the seed trains G on a fresh batch of B noise vectors
    g_writes_out = True
    d_fakes_from_eval_g = True  # generator.predict (line 173)
    real_draw = "slice"         # lines 170-171

    def build(self, cfg):
        return {"G": keras_dense_init_(Generator(self.hyper.z_dim)),
                "D": keras_dense_init_(Discriminator())}

    def fill_train_noise(self, z, labels, generator):
        # np.random.normal(-1, 1, (n, 100)) / 2 (lines 172, 186), drawn as N(-0.5, 0.5²) in one
        # kernel: halving is exact in binary, so (mean + std x) / 2 with (-1, 1) equals the
        # draw with (-0.5, 0.5) bit for bit (tests/test_kernel_budget.py checks it).
        z.normal_(-0.5, 0.5, generator=generator)

    def batch_sizes(self, batch_size):
        # The seed's D sees half a batch of real and half of fake images.
        half = max(1, batch_size // 2)
        return half, half

    def image_view(self, images):
        return images.reshape(images.shape[0], -1)

    def d_loss(self, nets, batch, gen, real_target):
        n = batch.real.shape[0]
        # D has no BatchNorm, so one pass over [real; fake] equals two passes.
        logits = nets["D"](cat_rows(batch.real, gen["fake"]))
        real, fake = logits[:n], logits[n:]
        # Keras reports 0.5 * (loss on real + loss on fake): with as many fakes as real images,
        # the mean over both, one loss call (no slices in the graph) with a target per row.
        if 2 * n != logits.shape[0]:
            # 0.5 (a + b) as the ops' weights (exact: a power of two)
            return bce(real, real_target, weight=0.5) + bce(fake, 0.0, weight=0.5), real, fake
        return bce(logits, self.split_targets(logits, n, real_target, 0.0)), real, fake

    def g_loss(self, nets, batch, gen):
        fake = nets["D"](gen["fake"])
        return bce(fake, 1.0), fake
