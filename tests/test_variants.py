"""The five variants: exact parameter counts (docs/VARIANTS.md), shapes and ranges, and each loss
against the seed's own formula written in probability space."""
from __future__ import annotations

import pytest
import torch

from fastgan.variants import (VARIANTS, Batch, UnknownVariant, count_bn_buffers, count_params,
                              get_variant)

# (trainable parameters, BN running mean+var) per network, from docs/VARIANTS.md and the seeds.
EXPECTED = {
    "mlp": {"G": (1_489_936, 3_584), "D": (1_066_497, 0)},
    "bigan": {"G": (64 * 128 + 128 + 128 * 784 + 784, 0),
              "E": (784 * 128 + 128 + 128 * 64 + 64, 0),
              "D": (848 * 128 + 128 + 128 + 1, 0)},
    # G: 48·1024 + b1024 + β1024 + 1024·6272 + b6272 + β6272 + 128·64·16 + b64 + β64
    #    + 64·16 + 1 (tf-slim: a bias on every layer, no gamma)
    "gancls": {"G": (6_618_497, 2 * (1024 + 6272 + 64)),
               "D": (10 * 784 + 784 + 2 * 64 * 16 + 64 + 64 * 128 * 16 + 128 + 6272 * 1024
                     + 1024 + 1024 + 1, 0)},
    # The PyTorch DCGAN example at 64x64x3, ngf = ndf = 64.
    "dcgan": {"G": (3_576_704, 2 * (512 + 256 + 128 + 64)), "D": (2_765_568, 2 * (128 + 256 + 512))},
    "convgan": {"G": (100 * 3136 + 3136 + 2 + 50 * 9 + 50 + 100 + 50 * 25 * 9 + 25 + 50
                      + 25 * 4 + 1, 2 * (1 + 50 + 25)),
                "D": (32 * 25 + 32 + 32 * 64 * 25 + 64 + 3136 * 1024 + 1024 + 1024 + 1, 0)},
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_parameter_counts(name):
    nets = get_variant(name).build({})
    got = {role: (count_params(m), count_bn_buffers(m)) for role, m in nets.items()}
    assert got == EXPECTED[name]


def test_mlp_keras_total_params():
    G = get_variant("mlp").build({})["G"]
    assert count_params(G) + count_bn_buffers(G) == 1_493_520  # Keras "Total params"


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(UnknownVariant, match="mlp, bigan, gancls, dcgan, convgan"):
        get_variant("wgan")


def _batch(v, n, dtype=torch.float64, labels=True):
    h = v.hyper
    n_real, n_noise = v.batch_sizes(n)
    real = torch.rand(n_real, h.channels, h.image_size, h.image_size, dtype=dtype)
    if h.data_range == "tanh":
        real = real * 2 - 1
    real = v.image_view(real)
    y = torch.randint(0, 10, (n_real,)) if v.needs_labels else None
    z = torch.empty(v.noise_shape(n_noise), dtype=dtype)
    v.fill_noise(z, y, None)
    mis = torch.randint(0, 10, (n_real,)) if v.needs_labels else None
    return Batch(real=real, z=z, labels=y, mis_labels=mis)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_output_shapes_and_ranges(name):
    v = get_variant(name, image_size=32) if name == "dcgan" else get_variant(name)
    nets = v.build({})
    b = _batch(v, 6, torch.float32)
    gen = v.generate_train(nets, b)
    fake = gen["fake"]
    h = v.hyper
    assert fake.shape[0] == b.z.shape[0]
    assert fake.numel() == b.z.shape[0] * h.channels * h.image_size * h.image_size
    lo, hi = (-1, 1) if h.data_range == "tanh" else (0, 1)
    assert torch.isfinite(fake).all() and fake.min() >= lo and fake.max() <= hi
    imgs = v.sample(nets, b.z, b.labels)
    assert imgs.shape == (b.z.shape[0], h.channels, h.image_size, h.image_size)
    assert imgs.min() >= 0 and imgs.max() <= 1
    loss_d, real_logits, fake_logits = v.d_loss(nets, b, {k: t.detach() for k, t in gen.items()},
                                                torch.tensor(1.0))
    assert loss_d.dim() == 0 and torch.isfinite(loss_d)
    assert real_logits.shape == (b.real.shape[0], 1)


@pytest.mark.parametrize("size,ok", [(32, True), (64, True), (96, True), (128, True),
                                     (28, False), (48, True), (100, False)])
def test_dcgan_sizes(size, ok):
    v = get_variant("dcgan", image_size=size, ngf=8, ndf=8)
    if not ok:
        with pytest.raises(ValueError, match="4·2\\^k or 6·2\\^k"):
            v.check_image_size(size, 3)
        return
    nets = v.build({})
    z = torch.randn(2, 100)
    assert nets["G"](z).shape == (2, 3, size, size)
    assert nets["D"](nets["G"](z)).shape == (2, 1)


def test_dcgan_kernel5_and_linear_final():
    v = get_variant("dcgan", image_size=96, channels=3, kernel=5, final="linear", ngf=8, ndf=8)
    nets = v.build({})
    x = nets["G"](torch.randn(3, 100))
    assert x.shape == (3, 3, 96, 96)
    assert nets["D"](x).shape == (3, 1)


# ---- losses against the seeds' formulas (probability space, float64) -------------------------

def _p(logits):
    return torch.sigmoid(logits)


def test_mlp_loss_formula():
    v = get_variant("mlp")
    nets = {k: m.double() for k, m in v.build({}).items()}
    b = _batch(v, 64)
    gen = {"fake": nets["G"](b.z)}
    loss_d, _, _ = v.d_loss(nets, b, gen, torch.tensor(1.0, dtype=torch.float64))
    pr, pf = _p(nets["D"](b.real)), _p(nets["D"](gen["fake"]))
    # Keras: 0.5 * (BCE(real, 1) + BCE(fake, 0)), each a batch mean.
    want = 0.5 * (-torch.log(pr).mean() - torch.log(1 - pf).mean())
    torch.testing.assert_close(loss_d, want, rtol=1e-10, atol=1e-12)
    loss_g, _ = v.g_loss(nets, b, gen)
    torch.testing.assert_close(loss_g, -torch.log(pf).mean(), rtol=1e-10, atol=1e-12)
    assert b.real.shape[0] == 32 and b.z.shape[0] == 32  # D sees 32 real + 32 fake


def test_bigan_loss_formula():
    v = get_variant("bigan")
    nets = {k: m.double() for k, m in v.build({}).items()}
    b = _batch(v, 32)
    gen = v.generate_train(nets, b)
    loss_d, _, _ = v.d_loss(nets, b, gen, torch.tensor(1.0, dtype=torch.float64))
    d_enc = _p(nets["D"](b.real, nets["E"](b.real)))
    d_gen = _p(nets["D"](nets["G"](b.z), b.z))
    want_d = -torch.mean(torch.log(d_enc) + torch.log(1 - d_gen))
    want_g = -torch.mean(torch.log(d_gen) + torch.log(1 - d_enc))
    torch.testing.assert_close(loss_d, want_d, rtol=1e-10, atol=1e-12)
    loss_g, _ = v.g_loss(nets, b, gen)
    torch.testing.assert_close(loss_g, want_g, rtol=1e-10, atol=1e-12)
    assert b.z.min() >= -1 and b.z.max() <= 1  # z ~ U(-1, 1)


def test_gancls_loss_formula_with_mismatched_labels():
    v = get_variant("gancls")
    nets = {k: m.double() for k, m in v.build({}).items()}
    b = _batch(v, 10)
    # z = [one_hot(y), N(0,1)^38]
    assert torch.equal(b.z[:, :10], torch.nn.functional.one_hot(b.labels, 10).double())
    gen = v.generate_train(nets, b)
    loss_d, _, _ = v.d_loss(nets, b, gen, torch.tensor(1.0, dtype=torch.float64))
    oh = lambda y: torch.nn.functional.one_hot(y, 10).double()  # noqa: E731
    x = b.real.view(-1, 1, 28, 28)
    d_real = _p(nets["D"](x, oh(b.labels)))
    d_fake = _p(nets["D"](gen["fake"], oh(b.labels)))
    d_mis = _p(nets["D"](x, oh(b.mis_labels)))
    want_d = torch.sum((d_real - 1) ** 2 + (d_fake ** 2 + d_mis ** 2) / 2) / 2
    torch.testing.assert_close(loss_d, want_d, rtol=1e-10, atol=1e-12)
    loss_g, _ = v.g_loss(nets, b, gen)
    torch.testing.assert_close(loss_g, torch.sum((d_fake - 1) ** 2) / 2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["dcgan", "convgan"])
def test_bce_sum_of_means(name):
    v = get_variant(name, image_size=32, ngf=8, ndf=8) if name == "dcgan" else get_variant(name)
    nets = {k: m.double() for k, m in v.build({}).items()}
    b = _batch(v, 4)
    gen = v.generate_train(nets, b)
    loss_d, real_logits, fake_logits = v.d_loss(nets, b, gen,
                                                torch.tensor(0.9, dtype=torch.float64))
    pr, pf = _p(real_logits), _p(fake_logits)
    # nn.BCELoss on sigmoid outputs, real target 0.9 (label smoothing), fake 0.
    want = -(0.9 * torch.log(pr) + 0.1 * torch.log(1 - pr)).mean() - torch.log(1 - pf).mean()
    torch.testing.assert_close(loss_d, want, rtol=1e-10, atol=1e-12)
    loss_g, fl = v.g_loss(nets, b, gen)
    torch.testing.assert_close(loss_g, -torch.log(_p(fl)).mean(), rtol=1e-10, atol=1e-12)
