"""Spectral norm (fastgan/nn/spectral_norm.py) against torch.nn.utils.parametrizations.
spectral_norm in float64 given the same u, v; on FusedLinearAct and ConvBNAct's convolutions
(plain and transposed); eval mode does not iterate; no host syncs."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torch.nn.utils.parametrizations import spectral_norm as torch_sn

from fastgan import ops
from fastgan.benchmark.kernel_count import count_work
from fastgan.nn.conv import ConvBNAct
from fastgan.nn.linear import FusedLinearAct
from fastgan.nn.spectral_norm import SpectralNorm, apply_spectral_norm, spectral_norm

D64 = torch.float64


def _pair(layer, attr):
    """(ours, torch's) on deep copies of ``layer``, torch's u and v copied into ours."""
    ref = copy.deepcopy(layer)
    mod = copy.deepcopy(layer)
    torch_sn(getattr(ref, attr) if attr else ref)
    target = getattr(mod, attr) if attr else mod
    spectral_norm(target, generator=torch.Generator().manual_seed(0))
    src = (getattr(ref, attr) if attr else ref).parametrizations.weight[0]
    dst = target.parametrizations.weight[0]
    with torch.no_grad():
        dst._u.copy_(src._u)
        dst._v.copy_(src._v)
    return mod, ref, dst, src


LAYERS = [
    ("fused_linear", lambda: FusedLinearAct(11, 7, slope=0.2).to(D64), None, (5, 11)),
    ("conv", lambda: ConvBNAct(3, 6, 3, 2, 1, slope=0.2).to(D64), "conv", (2, 3, 9, 9)),
    ("conv_bn", lambda: ConvBNAct(3, 5, 4, 2, 1, bn=True, slope=0.0).to(D64), "conv", (4, 3, 8, 8)),
    ("conv_transposed", lambda: ConvBNAct(6, 3, 4, 2, 1, transposed=True).to(D64), "conv",
     (2, 6, 5, 5)),
]


@pytest.mark.parametrize("backend", ["reference", "cuda"])
@pytest.mark.parametrize("name,make,attr,xshape", LAYERS, ids=[l[0] for l in LAYERS])
def test_matches_torch_float64(backend, name, make, attr, xshape, monkeypatch):
    if backend == "cuda":
        if not ops.ensure_loaded("cuda"):
            pytest.skip("no fastgan._C")
        monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")   # the C++ kernels, not the fallback
    torch.manual_seed(0)
    mod, ref, ours, theirs = _pair(make(), attr)
    assert (ours.dim == 1) == (name == "conv_transposed") and ours.dim == theirs.dim
    opt_m = torch.optim.SGD(mod.parameters(), lr=0.1)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    with ops.use_backend(backend):
        for _ in range(4):
            x = torch.randn(xshape, generator=g, dtype=D64)
            # two forwards before one backward, as D(real) and D(fake)
            ym = mod(x).square().mean() + mod(x * 0.5).mean()
            yr = ref(x).square().mean() + ref(x * 0.5).mean()
            torch.testing.assert_close(ym, yr, rtol=1e-12, atol=1e-12)
            for o in (opt_m, opt_r):
                o.zero_grad()
            ym.backward()
            yr.backward()
            pm = dict(mod.named_parameters())
            for k, p in ref.named_parameters():
                torch.testing.assert_close(pm[k].grad, p.grad, rtol=1e-10, atol=1e-12)
            opt_m.step()
            opt_r.step()
            torch.testing.assert_close(ours._u, theirs._u, rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(ours._v, theirs._v, rtol=1e-12, atol=1e-13)


def test_sigma_is_the_top_singular_value_after_iterations():
    lin = nn.Linear(9, 6).to(D64)
    spectral_norm(lin, generator=torch.Generator().manual_seed(2))
    for _ in range(50):
        w = lin.weight
    assert abs(torch.linalg.matrix_norm(w, 2).item() - 1.0) < 1e-8


def test_eval_does_not_iterate_and_train_does():
    lin = spectral_norm(FusedLinearAct(8, 4).to(D64), generator=torch.Generator().manual_seed(3))
    sn = lin.parametrizations.weight[0]
    with torch.no_grad():
        lin.parametrizations.weight.original.mul_(torch.linspace(0.5, 2, 8, dtype=D64))
    u0, v0 = sn._u.clone(), sn._v.clone()
    ptr = sn._u.data_ptr()
    lin.eval()
    lin(torch.randn(3, 8, dtype=D64))
    assert torch.equal(sn._u, u0) and torch.equal(sn._v, v0)
    lin.train()
    lin(torch.randn(3, 8, dtype=D64))
    assert not torch.equal(sn._u, u0) and sn._u.data_ptr() == ptr   # updated in place


def test_apply_to_a_discriminator_no_host_sync():
    d = nn.Sequential(ConvBNAct(1, 4, 3, 2, 1, bn=True, slope=0.2), nn.Flatten(),
                      FusedLinearAct(4 * 4 * 4, 8, slope=0.2), FusedLinearAct(8, 1))
    names = apply_spectral_norm(d, generator=torch.Generator().manual_seed(0))
    assert names == ["0.conv", "2", "3"]
    assert apply_spectral_norm(d) == []           # not twice
    assert not hasattr(d[0].bn, "parametrizations")
    x = torch.randn(5, 1, 8, 8)
    work = count_work(lambda: d(x).sum().backward())
    assert work["host_syncs"] == 0
    # bf16 autocast: the iteration stays in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(x)
    assert out.dtype == torch.bfloat16 and d[2].parametrizations.weight[0]._u.dtype == torch.float32


def test_errors():
    with pytest.raises(ValueError, match="2 or more dimensions"):
        SpectralNorm(torch.randn(4))
    with pytest.raises(ValueError, match="n_power_iterations"):
        SpectralNorm(torch.randn(4, 3), n_power_iterations=0)
