"""The unit backward seed (fastgan/ops/units.py): gan_loss's fused backward returns the
gradient its forward wrote, with no multiply, when the seed is the unit; any other seed still
scales it; the unit cannot be changed in place; the triton and cuda backends' autograd wiring
fills no zero gradients for their non-differentiable outputs."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from fastgan.benchmark.kernel_count import count_work
from ops_harness import backend_devices

FUSED = backend_devices("triton", "cuda")


def _backward_counts(backend, device, seed_grad, dtype=torch.float32):
    z = torch.randn(12, 1, device=device, dtype=dtype, requires_grad=True)
    with ops.use_backend(backend):
        loss = ops.gan_loss(z, 1.0, "bce") + ops.gan_loss(z, 0.0, "lsgan", weight=0.5)
        c = count_work(lambda: loss.backward(seed_grad))
    zz = z.detach().double().requires_grad_()
    want = ops.lookup("gan_loss", "cpu", "reference")(zz, 1.0, "bce") + \
        ops.lookup("gan_loss", "cpu", "reference")(zz, 0.0, "lsgan", "mean", 0.5)
    want.backward(seed_grad.double().cpu())
    return c, z.grad, zz.grad


@pytest.mark.parametrize("backend,device", FUSED)
def test_unit_seed_skips_the_multiply(backend, device):
    c, got, want = _backward_counts(backend, device, ops.unit_grad(device))
    assert not any(k.startswith(("aten.mul", "aten.zeros")) for k in c["by_op"]), c["by_op"]
    torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend,device", FUSED)
def test_any_other_seed_scales(backend, device):
    for seed_grad in (torch.ones((), device=device), torch.full((), 2.5, device=device)):
        c, got, want = _backward_counts(backend, device, seed_grad)
        assert "aten.mul" in c["by_op"], c["by_op"]      # the same 1 elsewhere is not the unit
        torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=1e-7)


def test_unit_is_cached_recognised_and_read_only():
    u = ops.unit_grad("cpu")
    assert u is ops.unit_grad("cpu") and float(u) == 1.0 and u.dim() == 0
    assert ops.is_unit_grad(u) and not ops.is_unit_grad(torch.ones(()))
    assert not ops.is_unit_grad(ops.unit_grad("cpu", torch.float64).float())
    assert ops.is_unit_grad(ops.unit_grad("cpu", torch.float64))
    assert u.is_inference()
    # an in-place update raises (torch checks after the write: done on a unit of a dtype no
    # other test uses, dropped from the cache afterwards, so no later backward sees it)
    from fastgan.ops import units as U
    h = ops.unit_grad("cpu", torch.float16)
    try:
        with pytest.raises(RuntimeError, match="[Ii]nplace update to inference tensor"):
            h.add_(1.0)
    finally:
        U._UNITS.pop((torch.device("cpu"), torch.float16))


def test_new_units_reach_the_hooks():
    seen = []
    ops.on_new_unit(seen.append)
    try:
        u = ops.unit_grad("cpu", torch.bfloat16)
        assert any(t is u for t in seen)
    finally:
        from fastgan.ops import units as U
        U._HOOKS.remove(seen.append)


@pytest.mark.parametrize("backend,device", FUSED)
def test_no_zero_filled_grads_for_unused_outputs(backend, device):
    """bn_act returns (y, mean, rstd) and linear_bn_act (y, h, mean, invstd) inside: autograd
    must not fill zero gradients for the statistics (a kernel each)."""
    x = torch.randn(16, 24, device=device, requires_grad=True)
    w = torch.randn(32, 24, device=device, requires_grad=True)
    g, b = torch.ones(32, device=device, requires_grad=True), torch.zeros(32, device=device)
    rm, rv = torch.zeros(32, device=device), torch.ones(32, device=device)
    with ops.use_backend(backend):
        y1 = ops.bn_act(x, None, None, rm[:24].clone(), rv[:24].clone(), True, 0.1, 1e-5, 0.2)
        y2 = ops.linear_bn_act(x, w, None, g, b, rm, rv, True, 0.1, 1e-5, 0.2, None)
        gy1, gy2 = torch.randn_like(y1), torch.randn_like(y2)
        c = count_work(lambda: torch.autograd.backward([y1, y2], [gy1, gy2]))
    # (aten.fill_ is the harness' NaN poison of every allocation, not autograd's)
    assert not any(k.startswith(("aten.zeros", "aten.zero_")) for k in c["by_op"]), c["by_op"]
