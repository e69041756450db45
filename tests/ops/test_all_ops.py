"""Checks that span the four ops: float64 gradcheck / gradgradcheck (gradient penalties
differentiate the discriminator's gradient) and bitwise determinism (the harness:
ops_harness.py)."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import R, SLOPES, backend_devices, only


def test_gradcheck_reference():
    """The ground truth itself is differentiable as expected (float64)."""
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: R.linear_act(*a, 0.2), (x, w, b))
    x4 = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b2 = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, c: R.bias_act(a, c, 0.2, 1), (x4, b2))
    g2 = torch.rand(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, c, d: R.bn_act(a, c, d, None, None, True, 0.1, 1e-5, 0.2), (x4, g2, b2))
    z = torch.randn(6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: R.gan_loss(a, 0.9, "lsgan", "mean"), (z,))


@pytest.mark.parametrize("backend", only("cuda"))
def test_gradcheck_float64(backend, seed):
    d = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, 3, 2, **d)
    b = torch.randn(4, **d)
    w = torch.rand(4, **d) + 0.5
    xl, wl, bl = torch.randn(6, 5, **d), torch.randn(3, 5, **d), torch.randn(3, **d)
    with ops.use_backend(backend):
        for slope in SLOPES:
            torch.autograd.gradcheck(lambda x, b: ops.bias_act(x, b, slope, 1), (x, b))
            torch.autograd.gradcheck(lambda x, w, b: ops.linear_act(x, w, b, slope), (xl, wl, bl))
            torch.autograd.gradcheck(
                lambda x, w, b: ops.bn_act(x, w, b, None, None, True, 0.1, 1e-5, slope), (x, w, b))
        torch.autograd.gradcheck(lambda l: ops.gan_loss(l, 0.7, "bce", "mean"), (torch.randn(7, **d),))
        torch.autograd.gradcheck(lambda l: ops.gan_loss(l, 0.7, "lsgan", "sum"), (torch.randn(7, **d),))


@pytest.mark.parametrize("backend", only("cuda"))
def test_double_backward_linear_and_bias_act(backend, seed):
    # gradient penalties (R1, WGAN-GP) differentiate the discriminator's gradient
    d = dict(dtype=torch.float64, requires_grad=True)
    xl, wl, bl = torch.randn(4, 5, **d), torch.randn(3, 5, **d), torch.randn(3, **d)
    x, b = torch.randn(2, 3, 4, **d), torch.randn(3, **d)
    with ops.use_backend(backend):
        for slope in (None, 0.2):
            torch.autograd.gradgradcheck(lambda x, w, b: ops.linear_act(x, w, b, slope), (xl, wl, bl))
            torch.autograd.gradgradcheck(lambda x, b: ops.bias_act(x, b, slope, 1), (x, b))


@pytest.mark.parametrize("backend,device", backend_devices("triton"))
def test_deterministic(backend, device, monkeypatch):
    """Two runs give bitwise-equal results: no atomics in any reduction."""
    from fastgan.kernels import bn_act as BN
    monkeypatch.setattr(BN, "FORCE_SPLIT", 3)
    x = torch.randn(17, 5, 4, 4, device=device, requires_grad=True)
    z = torch.randn(3000, device=device, requires_grad=True)
    a = torch.randn(40, 65, device=device, requires_grad=True)
    w = torch.randn(1, 65, device=device, requires_grad=True)
    outs = []
    for _ in range(2):
        for t in (x, z, a, w):
            t.grad = None
        with ops.use_backend(backend):
            y = ops.bn_act(x, None, None, None, None, True, 0.1, 1e-5, 0.2)
            l1 = ops.gan_loss(z, 0.9, "bce", "mean")
            l2 = ops.linear_act(a, w, None, 0.2)
        (y.square().sum() + l1 + l2.sum()).backward()
        outs.append([t.detach().clone() for t in (y, l1, l2, x.grad, z.grad, a.grad, w.grad)])
    for p, q in zip(*outs):
        assert torch.equal(p, q)
