"""The nn layers (FusedLinearAct, BatchNormAct, ConvBNAct, the losses) under each backend against
the same modules under the reference backend (the harness: ops_harness.py)."""
from __future__ import annotations

import copy

import pytest
import torch

from fastgan import ops
from ops_harness import SLOPES, backend_devices, check, check_floored

TRITON = backend_devices("triton")
CUDA = backend_devices("cuda")


@pytest.mark.parametrize("backend,device", TRITON)
def test_layers_match_reference(backend, device, seed, monkeypatch):
    """FusedLinearAct, BatchNormAct, ConvBNAct (BN and bias epilogue, transposed) and the losses
    under the backend against the same modules under the reference backend (fp32 matmuls on both
    sides: the convolutions are the same cuDNN calls in both)."""
    from fastgan.kernels import config as KC
    from fastgan.nn import BatchNormAct, ConvBNAct, FusedLinearAct, bce, lsgan

    monkeypatch.setattr(KC, "DOT_PRECISION", "ieee")
    torch.manual_seed(seed)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = FusedLinearAct(20, 48, slope=0.2)
            self.b1 = BatchNormAct(48, slope=0.0)
            self.l2 = FusedLinearAct(48, 2 * 4 * 4, slope=None)
            self.c1 = ConvBNAct(2, 3, 4, stride=2, padding=1, transposed=True, bn=True, slope=0.0)
            self.c2 = ConvBNAct(3, 5, 3, padding=1, slope=0.2)
            self.l3 = FusedLinearAct(5 * 8 * 8, 1)

        def forward(self, x):
            h = self.l2(self.b1(self.l1(x))).view(-1, 2, 4, 4)
            h = self.c2(self.c1(h))
            return self.l3(h.flatten(1))

    ref = Net().to(device)
    tri = Net().to(device)
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(6, 20, device=device)
    outs = {}
    for name, net, b in (("ref", ref, "reference"), ("tri", tri, backend)):
        with ops.use_backend(b):
            logits = net(x)
            loss = bce(logits, 1.0) + lsgan(logits, 0.0)
        loss.backward()
        outs[name] = (logits, loss)
    tol = 1e-5 if device == "cpu" else 1e-4
    check("logits", outs["tri"][0], outs["ref"][0], tol, seed)
    check("loss", outs["tri"][1], outs["ref"][1], tol, seed)
    for (n, p), (_, q) in zip(tri.named_parameters(), ref.named_parameters()):
        if n == "c1.conv.bias":   # a bias followed by BN: its gradient is 0 up to rounding
            assert (p.grad - q.grad).abs().max() < 1e-5, f"{n} (seed {seed})"
            continue
        check(f"grad {n}", p.grad, q.grad, tol, seed)
    for (n, p), (_, q) in zip(tri.named_buffers(), ref.named_buffers()):
        check(f"buffer {n}", p, q, tol, seed)


def _layer_parity(backend, module, make_input, loss_fn, device, seed, tol=1e-5, steps=2):
    """Forward/backward of `module` with the backend vs the reference backend (float64 copy),
    for a few SGD steps so that running statistics and updated weights are compared too."""
    fast = module.to(device)
    ref = copy.deepcopy(module).double()
    opt_f = torch.optim.SGD(fast.parameters(), lr=0.1)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(steps):
        x = make_input().to(device)
        with ops.use_backend(backend):
            lf = loss_fn(fast(x))
        with ops.use_backend("reference"):
            lr = loss_fn(ref(x.double()))
        check_floored("layer loss", lf, lr, tol, seed)
        opt_f.zero_grad(), opt_r.zero_grad()
        lf.backward(), lr.backward()
        # a bias feeding batch norm has a gradient that is zero in exact arithmetic: compare it
        # against the scale of the other gradients
        floor = 0.1 * max(p.grad.norm().item() for p in ref.parameters())
        for (n, pf), (_, pr) in zip(fast.named_parameters(), ref.named_parameters()):
            check_floored(f"grad {n}", pf.grad, pr.grad, tol, seed, floor=floor)
        opt_f.step(), opt_r.step()
    for (n, bf), (_, br) in zip(fast.named_buffers(), ref.named_buffers()):
        check_floored(f"buffer {n}", bf, br, tol, seed)


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("slope", SLOPES)
def test_layer_fused_linear_act(backend, device, slope, seed):
    from fastgan.nn import FusedLinearAct
    m = torch.nn.Sequential(FusedLinearAct(37, 19, slope), FusedLinearAct(19, 1, None))
    _layer_parity(backend, m, lambda: torch.randn(11, 37), lambda y: y.square().mean(), device, seed)


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("affine", ["gamma_beta", "beta", "none"])
def test_layer_batchnorm_act(backend, device, affine, seed):
    from fastgan.nn import BatchNormAct
    m = torch.nn.Sequential(torch.nn.Linear(10, 24), BatchNormAct(24, 0.2, 0.2, 1e-3, affine))
    _layer_parity(backend, m, lambda: torch.randn(9, 10), lambda y: y.square().mean(), device, seed)


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("transposed,bn,slope", [(False, False, 0.2), (False, True, 0.2),
                                                 (True, True, 0.0), (True, False, None),
                                                 (False, False, 0.01)])
def test_layer_conv_bn_act(backend, device, transposed, bn, slope, seed):
    from fastgan.nn import ConvBNAct
    m = ConvBNAct(3, 6, 4, 2, 1, transposed=transposed, bn=bn, slope=slope)
    _layer_parity(backend, m, lambda: torch.randn(5, 3, 9, 9), lambda y: y.square().mean(), device, seed)
    m.eval()
    x = torch.randn(4, 3, 9, 9, device=device)
    with ops.use_backend(backend):
        yf = m(x)
    with ops.use_backend("reference"):
        yr = copy.deepcopy(m).double()(x.double())
    check_floored("eval forward", yf, yr, 1e-5, seed)


@pytest.mark.parametrize("backend,device", CUDA)
def test_layer_losses(backend, device, seed):
    from fastgan.nn import bce, lsgan
    logits = torch.randn(16, 1, device=device, requires_grad=True)
    for fn in (bce, lsgan):
        for t in (0.0, 1.0, torch.tensor(1.0, device=device)):
            with ops.use_backend(backend):
                lf = fn(logits, t)
            lr_in = logits.detach().double().requires_grad_(True)
            with ops.use_backend("reference"):
                lr = fn(lr_in, t.double() if isinstance(t, torch.Tensor) else t)
            check_floored("loss", lf, lr, 1e-5, seed)
            (gf,) = torch.autograd.grad(lf, logits)
            (gr,) = torch.autograd.grad(lr, lr_in)
            check_floored("loss grad", gf, gr, 1e-5, seed)
