"""gan_loss = BCE-with-logits or LSGAN on sigmoid(logits), mean or sum: parity of every backend
against the float64 reference, the loss and its gradient (the harness: ops_harness.py). The case
lists are per backend (the Triton interpreter is slow)."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import (DTYPES, GC, INTERP, R, backend_devices, check, interp_only, leaf,
                         noncontig, only, run_pair, tolerance)

TRITON = backend_devices("triton")
CUDA = backend_devices("cuda")


# ------------------------------------------------------------------------------ Triton cases

def _logits(shape, device, dtype):
    z = torch.randn(*shape, device=device) * 8
    flat = z.view(-1)
    flat[0] = 100.0          # the stability range of the contract
    if flat.numel() > 1:
        flat[1] = -100.0
    if flat.numel() > 3:
        flat[2], flat[3] = 30.0, -30.0
    return z.to(dtype)


GAN_TARGETS = [0.0, 1.0, 0.9, "tensor0.9", "tensor0.0"]


def gan_loss_case(backend, device, dtype, shape, kind, reduction, target, seed, layout=None):
    z0 = _logits(shape, device, dtype)
    if layout:
        z0 = noncontig(z0, layout)
    if isinstance(target, str):
        t, tr = torch.tensor(float(target[6:]), device=device), torch.tensor(float(target[6:]), dtype=torch.float64)
    else:
        t, tr = target, target
    z = leaf(z0)
    with ops.use_backend(backend):
        loss = ops.gan_loss(z, t, kind, reduction)
    assert loss.shape == () and loss.dtype == dtype
    go = torch.rand((), device=device) + 0.5       # a grad_output that is not 1
    loss.backward(go.to(dtype))
    zr = leaf(z0.double().cpu())
    lr = R.gan_loss(zr, tr, kind, reduction)
    lr.backward(go.double().cpu())
    tol = tolerance(backend, device, dtype)
    check("loss", loss, lr, tol, seed)
    check("dlogits", z.grad, zr.grad, tol, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("target", GAN_TARGETS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
@pytest.mark.parametrize("shape", [(1,), (7, 1), (3000,)], ids=lambda s: "x".join(map(str, s)))
def test_gan_loss(backend, device, shape, kind, reduction, target, seed):
    gan_loss_case(backend, device, torch.float32, shape, kind, reduction, target, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
def test_gan_loss_bf16(backend, device, kind, seed):
    gan_loss_case(backend, device, torch.bfloat16, (64, 1), kind, "mean", 0.9, seed)


@pytest.mark.parametrize("backend,device", TRITON)
def test_gan_loss_noncontiguous(backend, device, seed):
    gan_loss_case(backend, device, torch.float32, (20, 30), "bce", "mean", 1.0, seed, layout="t")


@pytest.mark.parametrize("backend", only("triton"))
def test_gan_loss_per_element_target(backend, seed):
    if not INTERP:
        pytest.skip("interpreter run")
    z, t = torch.randn(5, 3), torch.rand(5, 3)
    with ops.use_backend(backend):
        loss = ops.gan_loss(leaf(z), t, "bce", "sum")
    check("loss", loss, R.gan_loss(z.double(), t.double(), "bce", "sum"), 1e-5, seed)


@pytest.mark.parametrize("backend", only("triton"))
def test_gan_loss_bad_args(backend):
    with ops.use_backend(backend):
        with pytest.raises(ValueError, match="kind"):
            ops.gan_loss(torch.randn(4), 1.0, "hinge", "mean")
        with pytest.raises(ValueError, match="reduction"):
            ops.gan_loss(torch.randn(4), 1.0, "bce", "max")


@pytest.mark.parametrize("backend", only("triton"))
def test_gradcheck_gan_loss(backend):
    interp_only()
    z = (torch.randn(7, dtype=torch.float64) * 3).requires_grad_()
    with ops.use_backend(backend):
        for kind in ("bce", "lsgan"):
            for red in ("mean", "sum"):
                assert torch.autograd.gradcheck(lambda a: ops.gan_loss(a, 0.9, kind, red), (z,), **GC)


# -------------------------------------------------------------------------------- cuda cases

LOSS_SHAPES = [(1,), (64, 1), (7, 3, 5), (33,), (2, 1, 30, 30)]


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("target", ["one", "zero", "0.9", "tensor0d", "tensor_full"])
def test_gan_loss_dtypes(backend, device, dtype, kind, reduction, shape, target, seed):
    logits = leaf(torch.randn(shape) * 3, dtype, device)
    if target == "one":
        t = 1.0
    elif target == "zero":
        t = 0.0
    elif target == "0.9":
        t = 0.9
    elif target == "tensor0d":
        t = torch.tensor(0.9, device=device)
    else:
        t = torch.rand(shape, device=device)
    t_ref = t.double().cpu() if isinstance(t, torch.Tensor) else t
    run_pair(backend, lambda l: ops.gan_loss(l, t, kind, reduction),
             lambda l: R.gan_loss(l, t_ref, kind, reduction),
             [logits], dtype, device, seed, ["logits"])


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
def test_gan_loss_extreme_logits(backend, device, kind, seed):
    logits = leaf(torch.cat([torch.randn(61) * 3, torch.tensor([-100.0, 100.0, 0.0, 88.0, -88.0])]),
                  torch.float32, device)
    for t in (0.0, 1.0):
        run_pair(backend, lambda l: ops.gan_loss(l, t, kind, "mean"),
                 lambda l: R.gan_loss(l, t, kind, "mean"),
                 [logits], torch.float32, device, seed, ["logits"])


@pytest.mark.parametrize("backend", only("cuda"))
def test_gan_loss_empty_mean_is_nan(backend):
    with ops.use_backend(backend):
        assert torch.isnan(ops.gan_loss(torch.randn(0), 1.0, "bce", "mean"))
        assert ops.gan_loss(torch.randn(0), 1.0, "bce", "sum").item() == 0.0


@pytest.mark.parametrize("backend", only("cuda"))
def test_gan_loss_double_backward(backend, seed):
    # create_graph through the loss recomputes the gradient with differentiable ops
    l = torch.randn(9, dtype=torch.float64, requires_grad=True)
    with ops.use_backend(backend):
        for kind in ("bce", "lsgan"):
            torch.autograd.gradgradcheck(lambda x: ops.gan_loss(x, 0.3, kind, "mean"), (l,))
