"""linear_bn_act = bn_act(linear_act(x, W, b, slope_pre), gamma, beta, running stats, ...,
slope_post) as one op: parity of every backend against the float64 reference (the composition),
forward, dx, dW, db, dgamma, dbeta and the running statistics; the fallbacks; NaN; the layers."""
from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn as nn

from fastgan import ops
from ops_harness import R, backend_devices, check, leaf, tolerance

TRITON = backend_devices("triton")
CUDA = backend_devices("cuda")
ALL = CUDA + TRITON
DTYPES = [torch.float32, torch.bfloat16, torch.float64]

SHAPES = [(2, 5, 3), (7, 33, 37), (16, 20, 70), (64, 9, 19)]   # (N, K, M)
ACTS = [(0.2, None), (None, 0.0), (0.0, 0.2), (None, None)]     # (slope_pre, slope_post)


def _small_tiles(monkeypatch):
    """Triton under the interpreter: 16-column tiles, so the test shapes cross column blocks."""
    from fastgan.kernels import linear_bn_act as LBA
    real = LBA._blocks
    monkeypatch.setattr(LBA, "_blocks", lambda N, M, K: (real(N, M, K)[0], 16, 16, 4))


def case(backend, device, dtype, N, K, M, slope_pre, slope_post, seed, affine="gamma_beta",
         unbiased=True, training=True, momentum=0.2, eps=1e-3, grad=True):
    x0 = (torch.randn(N, K, device=device) + 0.3).to(dtype)
    w0 = (torch.randn(M, K, device=device) / K ** 0.5).to(dtype)
    b0 = (torch.randn(M, device=device) * 0.5).to(dtype)
    g0 = torch.rand(M, device=device) + 0.5 if affine == "gamma_beta" else torch.ones(M, device=device)
    be0 = torch.randn(M, device=device) if affine != "none" else torch.zeros(M, device=device)
    rm0, rv0 = torch.randn(M, device=device), torch.rand(M, device=device) + 0.5
    if dtype == torch.float64:   # a float64 model's BN parameters and buffers (module.double())
        g0, be0, rm0, rv0 = (t.double() for t in (g0, be0, rm0, rv0))
    x, w, b = leaf(x0, requires_grad=grad), leaf(w0, requires_grad=grad), leaf(b0, requires_grad=grad)
    gam = leaf(g0, requires_grad=grad and affine == "gamma_beta")
    bet = leaf(be0, requires_grad=grad and affine != "none")
    rm, rv = rm0.clone(), rv0.clone()
    args = (training, momentum, eps, slope_pre, slope_post, unbiased)
    with ops.use_backend(backend):
        y = ops.linear_bn_act(x, w, b, gam, bet, rm, rv, *args)
    assert y.shape == (N, M) and y.dtype == dtype
    refs = [leaf(t.detach().double(), requires_grad=t.requires_grad) for t in (x, w, b, gam, bet)]
    rmr, rvr = rm0.double(), rv0.double()
    yr = R.linear_bn_act(*refs, rmr, rvr, *args)
    tol = tolerance(backend, device, dtype)
    check("y", y, yr, tol, seed)
    check("running_mean", rm, rmr, max(tol, 1e-5), seed)
    check("running_var", rv, rvr, max(tol, 1e-5), seed)
    if not grad:
        return y
    gy = torch.randn(N, M, dtype=torch.float64, device=device)
    if slope_post is not None:
        # act_post's mask at u ~ 0 follows the rounding of h: zero the incoming gradient there
        with torch.no_grad():
            u = R.linear_bn_act(*[t.detach() for t in refs], rmr.clone(), rvr.clone(),
                                training, momentum, eps, slope_pre, None, unbiased)
        gy = torch.where(u.abs() < (3e-2 if dtype == torch.bfloat16 else 1e-5), 0.0, gy)
    gy = gy.to(dtype)
    y.backward(gy)
    yr.backward(gy.double())
    # BN's backward projects most of g away (few rows): its rounding scales with the terms
    with torch.no_grad():
        xr, wr, br, gr, ber = (t.detach() for t in refs)
        h = R.linear_act(xr, wr, br, slope_pre)
        rstd = (h.var(0, unbiased=False) + eps).rsqrt()
        t = gy.double().abs() * (rstd * gr.abs())[None, :]
        xhat = (h - h.mean(0)) * rstd
    check("dx", x.grad, refs[0].grad, tol, seed, scale=(t @ wr.abs()).norm().item())
    check("dW", w.grad, refs[1].grad, tol, seed, scale=(t.t() @ xr.abs()).norm().item())
    check("db", b.grad, refs[2].grad, tol, seed, scale=t.sum(0).norm().item())
    if gam.requires_grad:
        check("dgamma", gam.grad, refs[3].grad, tol, seed,
              scale=(gy.double().abs() * xhat.abs()).sum(0).norm().item())
    if bet.requires_grad:
        check("dbeta", bet.grad, refs[4].grad, tol, seed, scale=gy.double().abs().sum(0).norm().item())
    for name, t_ in zip(("dx", "dW", "db"), (x, w, b)):
        assert t_.grad.dtype == t_.dtype, name
    return y


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("acts", ACTS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_bn_act_float32(backend, device, shape, acts, seed, monkeypatch):
    if backend == "triton":
        _small_tiles(monkeypatch)
    case(backend, device, torch.float32, *shape, *acts, seed)


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("acts", [(0.2, None), (0.0, 0.0)], ids=str)
def test_linear_bn_act_dtypes(backend, device, dtype, acts, seed):
    case(backend, device, dtype, 12, 17, 45, *acts, seed)


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("affine", ["beta", "none"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_linear_bn_act_affine_and_running_var(backend, device, affine, unbiased, seed):
    case(backend, device, torch.float32, 10, 8, 21, 0.0, 0.0, seed, affine=affine,
         unbiased=unbiased)
    case(backend, device, torch.float32, 10, 8, 21, 0.2, None, seed, affine="gamma_beta",
         unbiased=unbiased)


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("acts", [(0.2, None), (0.0, 0.0)], ids=str)
@pytest.mark.parametrize("grad", [False, True])
def test_linear_bn_act_eval(backend, device, acts, grad, seed):
    """Eval mode: the running statistics, untouched (the inference fold or the composition)."""
    case(backend, device, torch.float32, 6, 7, 11, *acts, seed, training=False, grad=grad)


@pytest.mark.parametrize("backend,device", TRITON)
def test_linear_bn_act_triton_large_batch_falls_back(backend, device, seed, monkeypatch):
    """More rows than one tile holds: today's two ops, same results (and no fused launch)."""
    from fastgan.kernels import linear_bn_act as LBA
    monkeypatch.setattr(LBA, "MAX_ROWS", 16)
    calls = []
    real = LBA.linear_bn_act_forward
    T = importlib.import_module("fastgan.backends.triton.linear_bn_act")
    monkeypatch.setattr(T, "linear_bn_act_forward", lambda *a: calls.append(1) or real(*a))
    case(backend, device, torch.float32, 17, 5, 9, 0.2, None, seed)
    assert not calls
    case(backend, device, torch.float32, 16, 5, 9, 0.2, None, seed)
    assert calls


@pytest.mark.parametrize("backend,device", ALL + [pytest.param("reference", "cpu", id="reference-cpu")])
def test_linear_bn_act_nan_propagates(backend, device):
    x = torch.randn(5, 4, device=device)
    x[2, 1] = float("nan")
    w, b = torch.randn(6, 4, device=device), torch.randn(6, device=device)
    rm, rv = torch.zeros(6, device=device), torch.ones(6, device=device)
    with ops.use_backend(backend):
        y = ops.linear_bn_act(x, w, b, torch.ones(6), torch.zeros(6), rm, rv, True, 0.1, 1e-5,
                              0.0, 0.2, False)
    assert torch.isnan(y).all() and torch.isnan(rm).all() and torch.isnan(rv).all()


def test_linear_bn_act_is_optional():
    assert "linear_bn_act" in ops.OPTIONAL_OPS and "linear_bn_act" not in ops.OPS


# ------------------------------------------------------------------------------ layers

def _pairs():
    from fastgan.nn import BatchNormAct, FusedLinearAct
    return [FusedLinearAct(7, 12, slope=0.2), BatchNormAct(12, momentum=0.2, eps=1e-3,
                                                          unbiased_running_var=False),
            FusedLinearAct(12, 5, slope=None), BatchNormAct(5, slope=0.0, affine="beta"),
            FusedLinearAct(5, 3, slope="tanh")]


@pytest.mark.parametrize("backend", ["reference", "cuda"])
def test_linear_bn_sequential_matches_sequential(backend):
    """Same state dict keys as nn.Sequential, same outputs, gradients and running statistics."""
    from fastgan.nn.batchnorm import LinearBNSequential
    if not ops.ensure_loaded(backend):
        pytest.skip(f"no {backend}")
    torch.manual_seed(0)
    plain = nn.Sequential(*_pairs()).double()
    fused = LinearBNSequential(*_pairs()).double()
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(9, 7, dtype=torch.float64)
    for train in (True, False):
        plain.train(train)
        fused.train(train)
        with ops.use_backend(backend):
            y1, y2 = plain(x), fused(x)
        torch.testing.assert_close(y2, y1, rtol=1e-12, atol=1e-12)
        if train:
            y1.sum().backward()
            y2.sum().backward()
            for (n, p1), p2 in zip(plain.named_parameters(), fused.parameters()):
                torch.testing.assert_close(p2.grad, p1.grad, rtol=1e-10, atol=1e-12, msg=n)
        for (n, b1), b2 in zip(plain.named_buffers(), fused.buffers()):
            torch.testing.assert_close(b2, b1, rtol=1e-12, atol=1e-12, msg=n)


def test_mlp_and_gancls_generators_load_old_checkpoints():
    """The generators' state dict keys are unchanged (body.0.weight, body.1.running_mean, ...)."""
    from fastgan.variants import gancls, mlp
    g = mlp.Generator()
    keys = list(g.state_dict())
    assert keys[:6] == ["body.0.weight", "body.0.bias", "body.1.weight", "body.1.bias",
                        "body.1.running_mean", "body.1.running_var"]
    old = nn.Module()
    old.body = nn.Sequential(*list(g.body))
    old.out = g.out
    g.load_state_dict(old.state_dict())
    gc = gancls.Generator()
    assert {"fc1.weight", "bn1.bias", "bn1.running_var", "fc2.bias", "bn2.running_mean"} <= \
        set(gc.state_dict())
