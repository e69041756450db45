"""R1 (fastgan/engine/r1.py): the penalty and its gradient with respect to D's parameters
(double backward of the fused ops) against torch.autograd.functional on a pure-torch copy of
D, float64, reference and cuda backends; the one-line errors where a backend cannot."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from fastgan import ops
from fastgan.benchmark.kernel_count import count_work
from fastgan.engine.r1 import check_r1, r1_penalty
from fastgan.nn import ConvBNAct, FusedLinearAct

D64 = torch.float64
GAMMA = 3.0


def _backend(backend, monkeypatch):
    if backend == "cuda":
        if not ops.ensure_loaded("cuda"):
            pytest.skip("no fastgan._C")
        monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")   # the C++ kernels, not the fallback


def _mlp_d():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), FusedLinearAct(12, 7, slope=0.2),
                         FusedLinearAct(7, 5, slope=0.0), FusedLinearAct(5, 1)).to(D64)


def _torch_mlp(x, w1, b1, w2, b2, w3, b3):
    h = F.leaky_relu(F.linear(x.flatten(1), w1, b1), 0.2)
    h = F.relu(F.linear(h, w2, b2))
    return F.linear(h, w3, b3)


def _grad(p):
    # the last bias does not change grad_x D: its gradient is None (= 0)
    return torch.zeros_like(p) if p.grad is None else p.grad


def _torch_r1(fn, real, params):
    def penalty(*ps):
        g = jacobian(lambda x: fn(x, *ps).sum(), real, create_graph=True)
        return g.square().flatten(1).sum(1).mean() * (GAMMA / 2)
    return penalty(*params), jacobian(penalty, tuple(params))


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_r1_matches_torch_functional(backend, monkeypatch):
    _backend(backend, monkeypatch)
    d = _mlp_d()
    real = torch.randn(6, 3, 2, 2, dtype=D64)
    params = [p.detach().clone() for p in d.parameters()]
    want, want_grads = _torch_r1(_torch_mlp, real, params)
    with ops.use_backend(backend):
        pen = r1_penalty(d, real, GAMMA, discriminator=d)
        pen.backward()
    torch.testing.assert_close(pen, want, rtol=1e-10, atol=1e-12)
    for p, g in list(zip(d.parameters(), want_grads)):
        torch.testing.assert_close(_grad(p), g, rtol=1e-9, atol=1e-12)
    # piecewise-linear D: grad_x D does not depend on the biases, only on the weights
    assert all(torch.linalg.vector_norm(g) > 0 for g in want_grads[0::2])


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_r1_conv_d(backend, monkeypatch):
    _backend(backend, monkeypatch)
    torch.manual_seed(1)
    d = nn.Sequential(ConvBNAct(1, 3, 3, 2, 1, slope=0.2), nn.Flatten(),
                      FusedLinearAct(3 * 3 * 3, 1)).to(D64)
    conv, lin = d[0].conv, d[2]

    def fn(x, cw, cb, lw, lb):
        h = F.leaky_relu(F.conv2d(x, cw, cb, 2, 1), 0.2)
        return F.linear(h.flatten(1), lw, lb)

    real = torch.randn(4, 1, 5, 5, dtype=D64)
    params = [t.detach().clone() for t in (conv.weight, conv.bias, lin.weight, lin.bias)]
    want, want_grads = _torch_r1(fn, real, params)
    with ops.use_backend(backend):
        pen = r1_penalty(d, real, GAMMA, discriminator=d)
        pen.backward()
    torch.testing.assert_close(pen, want, rtol=1e-10, atol=1e-12)
    for p, g in zip((conv.weight, conv.bias, lin.weight, lin.bias), want_grads):
        torch.testing.assert_close(_grad(p), g, rtol=1e-9, atol=1e-12)


def test_r1_no_host_sync():
    d = _mlp_d()
    real = torch.randn(4, 3, 2, 2, dtype=D64)
    assert count_work(lambda: r1_penalty(d, real, GAMMA).backward())["host_syncs"] == 0


def test_r1_bn_under_cuda_one_clear_error(monkeypatch):
    _backend("cuda", monkeypatch)
    d = nn.Sequential(ConvBNAct(1, 3, 3, 2, 1, bn=True, slope=0.2), nn.Flatten(),
                      FusedLinearAct(27, 1)).to(D64)
    real = torch.randn(4, 1, 5, 5, dtype=D64)
    with ops.use_backend("cuda"):
        with pytest.raises(ValueError, match="BatchNorm needs double backward"):
            r1_penalty(d, real, GAMMA, discriminator=d)
        # what the check saves the user from: the op's error deep inside the second backward
        with pytest.raises(NotImplementedError, match="double backward through bn_act"):
            r1_penalty(d, real, GAMMA).backward()
    check_r1(d, "reference")            # the reference differentiates BN twice
    check_r1(_mlp_d(), "cuda")          # and the cuda backend a D without BN


def test_r1_triton_error():
    with pytest.raises(ValueError, match="triton backend"):
        check_r1(_mlp_d(), "triton")
