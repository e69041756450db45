"""channels_last through the fused ops (issue 21): bn_act (training with groups 1 and 2, eval)
and bias_act take an NHWC tensor as [rows, C] and keep the layout in the output and in the input
gradient, with the same numbers (forward, every gradient, running statistics) as the float64
reference on the NCHW copy, for every backend, float32 / bfloat16 / float64."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import R, backend_devices, check, leaf, tolerance

CASES = backend_devices("cuda", "triton") + [pytest.param("reference", "cpu",
                                                          id="reference-cpu")]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]
CL = torch.channels_last


def _nhwc(shape, device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g) * 2 + 0.5).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=CL)
    assert not x.is_contiguous()   # a real NHWC layout, not an ambiguous one
    return x


def _is_nhwc(t):
    return t.is_contiguous(memory_format=CL) and not t.is_contiguous()


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("training,groups", [(True, 1), (True, 2), (False, 1)])
def test_bn_act_channels_last(backend, device, dtype, training, groups, seed):
    shape, C = (6, 5, 3, 7), 5
    x0 = _nhwc(shape, device, dtype, seed)
    acc = torch.float64 if dtype == torch.float64 else torch.float32   # parameters, statistics
    w0 = (torch.rand(C, device=device) + 0.5).to(acc)
    b0 = torch.randn(C, device=device).to(acc)
    rm0 = torch.randn(C, device=device).to(acc)
    rv0 = (torch.rand(C, device=device) + 0.5).to(acc)
    x, w, b = leaf(x0), leaf(w0), leaf(b0)
    rm, rv = rm0.clone(), rv0.clone()
    with ops.use_backend(backend):
        y = ops.bn_act(x, w, b, rm, rv, training, 0.1, 1e-5, 0.2, True, groups)
    assert _is_nhwc(y), f"output strides {y.stride()}: not channels_last"
    g = torch.randn(shape, device=device).to(dtype).contiguous(memory_format=CL)
    y.backward(g)
    assert _is_nhwc(x.grad), f"dx strides {x.grad.stride()}: not channels_last"
    # The reference in float64 on the NCHW copy.
    xr, wr, br = leaf(x0.double().contiguous()), leaf(w0.double()), leaf(b0.double())
    rmr, rvr = rm0.double(), rv0.double()
    yr = R.bn_act(xr, wr, br, rmr, rvr, training, 0.1, 1e-5, 0.2, True, groups)
    yr.backward(g.double().contiguous())
    tol = tolerance(backend, device, dtype)
    scale = g.double().norm().item() * (w0.double().max().item() / (rv0.min().item() ** 0.5))
    check("y", y, yr, tol, seed)
    check("dx", x.grad, xr.grad, tol, seed, scale=scale)
    check("dgamma", w.grad, wr.grad, tol, seed, scale=g.double().abs().sum().item())
    check("dbeta", b.grad, br.grad, tol, seed, scale=g.double().abs().sum().item())
    check("running_mean", rm, rmr, max(tol, 1e-5), seed)
    check("running_var", rv, rvr, max(tol, 1e-5), seed)


@pytest.mark.parametrize("backend,device", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("slope", [None, 0.2, "tanh"])
def test_bias_act_channels_last(backend, device, dtype, slope, seed):
    shape, C = (3, 6, 5, 4), 6
    x0 = _nhwc(shape, device, dtype, seed)
    b0 = torch.randn(C, device=device).to(dtype)
    x, b = leaf(x0), leaf(b0)
    with ops.use_backend(backend):
        y = ops.bias_act(x, b, slope, 1)
    assert _is_nhwc(y), f"output strides {y.stride()}: not channels_last"
    g = torch.randn(shape, device=device).to(dtype).contiguous(memory_format=CL)
    y.backward(g)
    assert _is_nhwc(x.grad), f"dx strides {x.grad.stride()}: not channels_last"
    xr, br = leaf(x0.double().contiguous()), leaf(b0.double())
    yr = R.bias_act(xr, br, slope, 1)
    yr.backward(g.double().contiguous())
    tol = tolerance(backend, device, dtype)
    check("y", y, yr, tol, seed)
    check("dx", x.grad, xr.grad, tol, seed)
    check("dbias", b.grad, br.grad, tol, seed, scale=g.double().abs().sum().item())
