"""Per-op benchmarks (pytest-benchmark) of every available backend at the variants' real shapes.

    pytest bench/test_ops.py --benchmark-group-by=param:case,param:mode --benchmark-columns=min,median,mean,rounds

Backends: ``fastgan.ops.available_backends(device)``, so a backend that implements every op on
the device joins automatically. On a GPU each timed call ends with ``torch.cuda.synchronize()``
(the time of the op's kernels, launch overhead included); one warm-up call per case first
compiles and autotunes outside the timing. On a machine without CUDA the file runs in a tiny mode:
a few scaled-down cases, the Triton interpreter left out (it is a test tool, not a CPU backend).
Inputs are real random data (normal logits/activations, Kaiming-scale weights).
"""
from __future__ import annotations

import os

import pytest
import torch

from fastgan import ops

pytest.importorskip("pytest_benchmark")

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
DEVICE = "cuda" if CUDA else "cpu"
TINY = not CUDA


def _backends():
    bs = ops.available_backends(DEVICE)
    if not CUDA:
        bs = [b for b in bs if b != "triton"]   # the interpreter: tests only
    return bs


BACKENDS = _backends()

# (id, N, K, M, slope): mlp (batch 64 and 4096), bigan (32), gancls (30), convgan D (16)
LINEAR = [
    ("mlp.G1", 64, 100, 256, 0.2), ("mlp.G2", 64, 256, 512, 0.2), ("mlp.G3", 64, 512, 1024, 0.2),
    ("mlp.G4", 64, 1024, 784, None), ("mlp.D1", 64, 784, 1024, 0.2), ("mlp.D2", 64, 1024, 256, 0.2),
    ("mlp.D3", 64, 256, 1, None), ("mlp.D1@4096", 4096, 784, 1024, 0.2),
    ("mlp.G3@8192", 8192, 512, 1024, 0.2),
    ("bigan.E1", 32, 784, 128, 0.2), ("bigan.G1", 32, 64, 128, 0.0), ("bigan.G2", 32, 128, 784, None),
    ("bigan.D1", 32, 848, 128, 0.2), ("bigan.D2", 32, 128, 1, None),
    ("gancls.G1", 30, 48, 1024, 0.0), ("gancls.G2", 30, 1024, 6272, 0.0),
    ("gancls.Dtxt", 30, 10, 784, 0.2), ("gancls.D1", 30, 6272, 1024, 0.2),
    ("gancls.D2", 30, 1024, 1, None),
    ("convgan.D1", 16, 3136, 1024, 0.2), ("convgan.D2", 16, 1024, 1, None),
]
# (id, shape, channels_last, slope)
BN = [
    ("dcgan.G1", (128, 512, 4, 4), False, 0.0), ("dcgan.G2", (128, 256, 8, 8), False, 0.0),
    ("dcgan.G3", (128, 128, 16, 16), False, 0.0), ("dcgan.G4", (128, 64, 32, 32), False, 0.0),
    ("dcgan.G4.cl", (128, 64, 32, 32), True, 0.0),
    ("convgan.1", (16, 1, 56, 56), False, 0.0), ("convgan.50", (16, 50, 56, 56), False, 0.0),
    ("convgan.25", (16, 25, 56, 56), False, 0.0),
    ("mlp.bn1024", (64, 1024), False, None), ("gancls.bn6272", (30, 6272), False, 0.0),
]
# (id, shape, slope): the D side of dcgan, lrelu(0.2) after each conv
BIAS = [
    ("dcgan.D1", (128, 64, 32, 32), 0.2), ("dcgan.D2", (128, 128, 16, 16), 0.2),
    ("dcgan.D3", (128, 256, 8, 8), 0.2), ("dcgan.D4", (128, 512, 4, 4), 0.2),
]
# (id, shape, kind, reduction)
LOSS = [("bce.64", (64, 1), "bce", "mean"), ("lsgan.128", (128, 1), "lsgan", "sum"),
        ("bce.4096", (4096, 1), "bce", "mean")]

if TINY:  # a quick smoke run: a few scaled-down cases
    LINEAR = [("tiny.lin", 16, 32, 24, 0.2), ("tiny.logit", 16, 32, 1, None)]
    BN = [("tiny.bn4d", (4, 8, 6, 6), False, 0.0), ("tiny.bn2d", (16, 32), False, None)]
    BIAS = [("tiny.bias", (4, 8, 6, 6), 0.2)]
    LOSS = [("tiny.bce", (16, 1), "bce", "mean")]

MODES = ["fwd", "fwd_bwd"]


def _sync():
    if CUDA:
        torch.cuda.synchronize()


def _bench(benchmark, backend, fn, leaves, grad, extra):
    """Time ``fn`` (forward, then backward with ``grad`` if given) under ``backend``."""

    def run():
        for t in leaves:
            t.grad = None
        with ops.use_backend(backend):
            y = fn()
            if grad is not None:
                y.backward(grad)
        _sync()
        return y

    run()  # warm-up: compile, autotune
    run()
    benchmark.extra_info.update(extra, backend=backend, device=DEVICE)
    if TINY:
        benchmark.pedantic(run, rounds=20, iterations=1)
    else:
        benchmark(run)


def _req(t, mode):
    return t.requires_grad_(mode == "fwd_bwd")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", LINEAR, ids=lambda c: c[0])
def test_linear_act(benchmark, case, backend, mode):
    name, N, K, M, slope = case
    x = _req(torch.randn(N, K, device=DEVICE), mode)
    w = _req(torch.randn(M, K, device=DEVICE) * (2.0 / K) ** 0.5, mode)
    b = _req(torch.randn(M, device=DEVICE) * 0.1, mode)
    g = torch.randn(N, M, device=DEVICE) if mode == "fwd_bwd" else None
    _bench(benchmark, backend, lambda: ops.linear_act(x, w, b, slope), (x, w, b), g,
           dict(case=name, shape=(N, K, M), slope=slope))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", BN, ids=lambda c: c[0])
def test_bn_act(benchmark, case, backend, mode):
    name, shape, cl, slope = case
    x = torch.randn(*shape, device=DEVICE) * 1.5 + 0.3
    if cl:
        x = x.to(memory_format=torch.channels_last)
    x = _req(x, mode)
    C = shape[1]
    w = _req(torch.rand(C, device=DEVICE) + 0.5, mode)
    b = _req(torch.randn(C, device=DEVICE) * 0.1, mode)
    rm, rv = torch.zeros(C, device=DEVICE), torch.ones(C, device=DEVICE)
    g = torch.randn_like(x) if mode == "fwd_bwd" else None
    _bench(benchmark, backend, lambda: ops.bn_act(x, w, b, rm, rv, True, 0.1, 1e-5, slope),
           (x, w, b), g, dict(case=name, shape=shape, channels_last=cl, slope=slope))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", BIAS, ids=lambda c: c[0])
def test_bias_act(benchmark, case, backend, mode):
    name, shape, slope = case
    x = _req(torch.randn(*shape, device=DEVICE), mode)
    b = _req(torch.randn(shape[1], device=DEVICE) * 0.1, mode)
    g = torch.randn_like(x) if mode == "fwd_bwd" else None
    _bench(benchmark, backend, lambda: ops.bias_act(x, b, slope, 1), (x, b), g,
           dict(case=name, shape=shape, slope=slope))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", LOSS, ids=lambda c: c[0])
def test_gan_loss(benchmark, case, backend, mode):
    name, shape, kind, reduction = case
    z = _req(torch.randn(*shape, device=DEVICE) * 3, mode)
    g = torch.ones((), device=DEVICE) if mode == "fwd_bwd" else None
    _bench(benchmark, backend, lambda: ops.gan_loss(z, 0.9, kind, reduction), (z,), g,
           dict(case=name, shape=shape, kind=kind, reduction=reduction))


# ---- linear_bn_act (issue 20): the generators' linear + training-mode BN pairs ----
# (id, N, K, M, slope_pre, slope_post): mlp's G (lrelu before a Keras BN), gancls's G (ReLU, BN, ReLU)
LINEAR_BN = [
    ("mlp.G1", 64, 100, 256, 0.2, None), ("mlp.G2", 64, 256, 512, 0.2, None),
    ("mlp.G3", 64, 512, 1024, 0.2, None), ("mlp.G3@1024", 1024, 512, 1024, 0.2, None),
    ("gancls.G1", 10, 48, 1024, 0.0, 0.0), ("gancls.G2", 10, 1024, 6272, 0.0, 0.0),
]
if TINY:
    LINEAR_BN = [("tiny.linbn", 16, 32, 24, 0.2, None)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", LINEAR_BN, ids=lambda c: c[0])
def test_linear_bn_act(benchmark, case, backend, mode):
    name, N, K, M, sp, sq = case
    x = _req(torch.randn(N, K, device=DEVICE), mode)
    w = _req(torch.randn(M, K, device=DEVICE) * (2.0 / K) ** 0.5, mode)
    b = _req(torch.randn(M, device=DEVICE) * 0.1, mode)
    gam = _req(torch.rand(M, device=DEVICE) + 0.5, mode)
    bet = _req(torch.randn(M, device=DEVICE) * 0.1, mode)
    rm, rv = torch.zeros(M, device=DEVICE), torch.ones(M, device=DEVICE)
    g = torch.randn(N, M, device=DEVICE) if mode == "fwd_bwd" else None
    _bench(benchmark, backend,
           lambda: ops.linear_bn_act(x, w, b, gam, bet, rm, rv, True, 0.2, 1e-3, sp, sq, False),
           (x, w, b, gam, bet), g, dict(case=name, shape=(N, K, M), slope_pre=sp, slope_post=sq))


# ---- linear_act_head (issue 20): a discriminator's last hidden layer and its logit ----
# (id, N, K, M, slope): mlp's D2 + D3 (batch 64: the D step's [real; fake], and 4096), bigan's D,
# gancls's fc + out
LINEAR_HEAD = [
    ("mlp.D23", 64, 1024, 256, 0.2), ("mlp.D23@4096", 4096, 1024, 256, 0.2),
    ("bigan.D", 32, 848, 128, 0.0), ("gancls.D", 20, 6272, 1024, 0.01),
]
if TINY:
    LINEAR_HEAD = [("tiny.head", 16, 32, 24, 0.2)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", LINEAR_HEAD, ids=lambda c: c[0])
def test_linear_act_head(benchmark, case, backend, mode):
    name, N, K, M, slope = case
    x = _req(torch.randn(N, K, device=DEVICE), mode)
    w = _req(torch.randn(M, K, device=DEVICE) * (2.0 / K) ** 0.5, mode)
    b = _req(torch.randn(M, device=DEVICE) * 0.1, mode)
    hw = _req(torch.randn(1, M, device=DEVICE) * (1.0 / M) ** 0.5, mode)
    hb = _req(torch.zeros(1, device=DEVICE), mode)
    g = torch.randn(N, 1, device=DEVICE) if mode == "fwd_bwd" else None
    _bench(benchmark, backend, lambda: ops.linear_act_head(x, w, b, slope, hw, hb),
           (x, w, b, hw, hb), g, dict(case=name, shape=(N, K, M), slope=slope))


# The iteration's own ops (forward only): the batch gather with its uint8 scaling (MNIST 28x28,
# dcgan's 64x64 RGB) and the metrics of one iteration.
GATHER = [("mnist.64", 64, (1, 28, 28), 2.0 / 255, -1.0), ("dcgan.128", 128, (3, 64, 64),
                                                            2.0 / 255, -1.0)]
STATS = [("logits.64", 64), ("logits.4096", 4096)]
if TINY:
    GATHER = [("tiny.gather", 8, (1, 28, 28), 1.0 / 255, 0.0)]
    STATS = [("tiny.stats", 16)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", GATHER, ids=lambda c: c[0])
def test_gather_scale(benchmark, case, backend):
    name, B, shape, scale, shift = case
    images = torch.randint(0, 256, (4 * B, *shape), dtype=torch.uint8, device=DEVICE)
    idx = torch.randint(0, 4 * B, (B,), device=DEVICE)
    out = torch.empty((B, *shape), device=DEVICE)
    _bench(benchmark, backend, lambda: ops.gather_scale(images, idx, scale, shift, out), (), None,
           dict(case=name, shape=(B, *shape), mode="fwd"))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", STATS, ids=lambda c: c[0])
def test_gan_stats(benchmark, case, backend):
    name, n = case
    stats = torch.zeros(5, device=DEVICE)
    ld, lg = torch.rand((), device=DEVICE), torch.rand((), device=DEVICE)
    logits = torch.randn(2 * n, 1, device=DEVICE)
    _bench(benchmark, backend, lambda: ops.gan_stats(stats, ld, lg, logits[:n], logits[n:]), (),
           None, dict(case=name, shape=(n,), mode="fwd"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", STATS, ids=lambda c: c[0])
def test_gan_loss_stats(benchmark, case, backend, mode):
    """The G step's loss with the iteration's metrics (D's 2n logits of the D step)."""
    name, n = case
    z = _req(torch.randn(n, 1, device=DEVICE) * 3, mode)
    stats, ld = torch.zeros(5, device=DEVICE), torch.rand((), device=DEVICE)
    logits = torch.randn(2 * n, 1, device=DEVICE)
    g = torch.ones((), device=DEVICE) if mode == "fwd_bwd" else None
    _bench(benchmark, backend,
           lambda: ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, stats, ld, logits[:n],
                                      logits[n:]),
           (z,), g, dict(case=name, shape=(n,), kind="bce", reduction="mean"))
