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
    """Triton under the interpreter: 16-column tiles, so the test shapes cross column and K
    blocks (forward and backward)."""
    from fastgan.kernels import linear_bn_act as LBA
    real = LBA._blocks
    monkeypatch.setattr(LBA, "_blocks", lambda N, M, K: (real(N, M, K)[0], 16, 16, 4))
    monkeypatch.setattr(LBA, "_bwd_blocks", lambda N, M, K: (real(N, M, K)[0], 16, 16, 16, 16, 4))


def case(backend, device, dtype, N, K, M, slope_pre, slope_post, seed, affine="gamma_beta",
         unbiased=True, training=True, momentum=0.2, eps=1e-3, grad=True, bias=True,
         absent=False, x_grad=True):
    """affine: the trainable BN parameters ("gamma_beta", "gamma", "beta", "none"); the others
    are passed as ones / zeros, or with ``absent`` as None. ``x_grad`` False: no dX (a first
    layer)."""
    x0 = (torch.randn(N, K, device=device) + 0.3).to(dtype)
    w0 = (torch.randn(M, K, device=device) / max(K, 1) ** 0.5).to(dtype)
    b0 = (torch.randn(M, device=device) * 0.5).to(dtype)
    has_g, has_b = affine in ("gamma_beta", "gamma"), affine in ("gamma_beta", "beta")
    g0 = torch.rand(M, device=device) + 0.5 if has_g else torch.ones(M, device=device)
    be0 = torch.randn(M, device=device) if has_b else torch.zeros(M, device=device)
    rm0, rv0 = torch.randn(M, device=device), torch.rand(M, device=device) + 0.5
    if dtype == torch.float64:   # a float64 model's BN parameters and buffers (module.double())
        g0, be0, rm0, rv0 = (t.double() for t in (g0, be0, rm0, rv0))
    x = leaf(x0, requires_grad=grad and x_grad)
    w = leaf(w0, requires_grad=grad)
    b = leaf(b0, requires_grad=grad) if bias else None
    gam = leaf(g0, requires_grad=grad and has_g) if has_g or not absent else None
    bet = leaf(be0, requires_grad=grad and has_b) if has_b or not absent else None
    rm, rv = rm0.clone(), rv0.clone()
    args = (training, momentum, eps, slope_pre, slope_post, unbiased)
    with ops.use_backend(backend):
        y = ops.linear_bn_act(x, w, b, gam, bet, rm, rv, *args)
    assert y.shape == (N, M) and y.dtype == dtype
    refs = [None if t is None else leaf(t.detach().double(), requires_grad=t.requires_grad)
            for t in (x, w, b, gam, bet)]
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
            u = R.linear_bn_act(*[None if t is None else t.detach() for t in refs], rmr.clone(),
                                rvr.clone(), training, momentum, eps, slope_pre, None, unbiased)
        gy = torch.where(u.abs() < (3e-2 if dtype == torch.bfloat16 else 1e-5), 0.0, gy)
    gy = gy.to(dtype)
    y.backward(gy)
    yr.backward(gy.double())
    # BN's backward projects most of g away (few rows): its rounding scales with the terms
    with torch.no_grad():
        xr, wr, br, gr, ber = (None if t is None else t.detach() for t in refs)
        h = R.linear_act(xr, wr, br, slope_pre)
        rstd = (h.var(0, unbiased=False) + eps).rsqrt()
        t = gy.double().abs() * (rstd * (gr.abs() if gr is not None else 1.0))[None, :]
        xhat = (h - h.mean(0)) * rstd
    if x_grad:
        check("dx", x.grad, refs[0].grad, tol, seed, scale=(t @ wr.abs()).norm().item())
    else:
        assert x.grad is None
    check("dW", w.grad, refs[1].grad, tol, seed, scale=(t.t() @ xr.abs()).norm().item())
    if bias:
        check("db", b.grad, refs[2].grad, tol, seed, scale=t.sum(0).norm().item())
    if has_g:
        check("dgamma", gam.grad, refs[3].grad, tol, seed,
              scale=(gy.double().abs() * xhat.abs()).sum(0).norm().item())
    if has_b:
        check("dbeta", bet.grad, refs[4].grad, tol, seed, scale=gy.double().abs().sum(0).norm().item())
    for t_ in (x, w, b, gam, bet):
        if t_ is not None and t_.grad is not None:
            assert t_.grad.dtype == t_.dtype and t_.grad.shape == t_.shape
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


ROWS = [2, 3, 17, 63, 64, 65, 255, 256]   # around the row tile's powers of two, up to MAX_ROWS
SLOPES = [None, 0.0, 0.2]                   # identity, ReLU, LeakyReLU
PARAMS = {"all": {}, "no_bias": dict(bias=False), "no_gamma": dict(affine="beta", absent=True),
          "no_beta": dict(affine="gamma", absent=True), "no_bn_params": dict(affine="none", absent=True)}


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("N", ROWS)
def test_linear_bn_act_rows(backend, device, N, seed, monkeypatch):
    """Every batch size the one-tile path takes, M and K crossing the 16-wide test tiles."""
    if backend == "triton":
        _small_tiles(monkeypatch)
    case(backend, device, torch.float32, N, 21, 37, 0.2, 0.0, seed)


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("params", list(PARAMS))
@pytest.mark.parametrize("post", SLOPES, ids=lambda s: f"post{s}")
@pytest.mark.parametrize("pre", SLOPES, ids=lambda s: f"pre{s}")
def test_linear_bn_act_acts_and_params(backend, device, pre, post, params, seed, monkeypatch):
    """Every pre/post activation with and without bias, gamma, beta (None, not ones/zeros)."""
    if backend == "triton":
        _small_tiles(monkeypatch)
    case(backend, device, torch.float32, 19, 33, 17, pre, post, seed, **PARAMS[params])


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("N", [5, 64, 130])
def test_linear_bn_act_no_dx(backend, device, dtype, N, seed, monkeypatch):
    """A first layer (x needs no gradient): dW, db, dgamma, dbeta alone."""
    if backend == "triton":
        _small_tiles(monkeypatch)
    case(backend, device, dtype, N, 35, 18, 0.0, 0.2, seed, x_grad=False)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("K,M", [(0, 9), (7, 0)])
def test_linear_bn_act_empty_product(backend, device, K, M):
    """K == 0 (h = act_pre(bias), constant columns: BN leaves only beta) and M == 0 (the
    reference's batch_norm takes no empty channel dimension: checked against the math)."""
    N = 6
    x = torch.randn(N, K, device=device, requires_grad=True)
    w = torch.randn(M, K, device=device, requires_grad=True)
    b, g, be = (torch.randn(M, device=device, requires_grad=True) for _ in range(3))
    gy = torch.randn(N, M, device=device)
    with ops.use_backend(backend):
        y = ops.linear_bn_act(x, w, b, g, be, None, None, True, 0.1, 1e-3, 0.2, None, True)
    dx, dw, db, dg, dbeta = torch.autograd.grad(y, (x, w, b, g, be), gy)
    assert dx.shape == (N, K) and dw.shape == (M, K) and db.shape == dg.shape == (M,)
    assert torch.equal(dx, torch.zeros(N, K))
    torch.testing.assert_close(dbeta, gy.sum(0), rtol=1e-6, atol=1e-6)
    # xhat is rounding noise around 0 (|h - mean| ~ ulp): db and dgamma are that small
    assert (db.abs() < 1e-4).all() and (dg.abs() < 1e-4).all()


@pytest.mark.parametrize("backend,device", ALL)
@pytest.mark.parametrize("x_grad", [True, False])
def test_linear_bn_act_backward_nan_propagates(backend, device, x_grad, monkeypatch):
    """A NaN in dL/dy reaches every gradient it touches, as in the reference (no mask hides it):
    its column's db/dgamma/dbeta and dW row, and dX through the column statistics."""
    if backend == "triton":
        _small_tiles(monkeypatch)
    N, K, M = 20, 19, 23
    x = torch.randn(N, K, device=device, requires_grad=x_grad)
    w = torch.randn(M, K, device=device, requires_grad=True)
    b, g, be = (torch.randn(M, device=device, requires_grad=True) for _ in range(3))
    gy = torch.randn(N, M, device=device)
    gy[3, 17] = float("nan")
    grads = []
    for bk in (backend, "reference"):
        with ops.use_backend(bk):
            y = ops.linear_bn_act(x, w, b, g, be, None, None, True, 0.1, 1e-5, 0.2, None, True)
        ts = [t for t in (x, w, b, g, be) if t.requires_grad]
        grads.append(torch.autograd.grad(y, ts, gy))
    for out, ref in zip(*grads):
        assert torch.isnan(ref).any()
        assert torch.equal(torch.isnan(out), torch.isnan(ref))


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("x_grad", [True, False])
def test_linear_bn_act_backward_is_one_launch(backend, device, x_grad, monkeypatch):
    """dX, dW, db, dgamma, dbeta from one Triton launch, whatever the number of tiles."""
    from fastgan.benchmark.kernel_count import count_work
    _small_tiles(monkeypatch)
    x = torch.randn(40, 50, device=device, requires_grad=x_grad)
    w = torch.randn(70, 50, device=device, requires_grad=True)
    b, g, be = (torch.randn(70, device=device, requires_grad=True) for _ in range(3))
    with ops.use_backend(backend):
        y = ops.linear_bn_act(x, w, b, g, be, None, None, True, 0.1, 1e-5, 0.2, 0.0, True)
    gy = torch.randn_like(y)
    c = count_work(lambda: y.backward(gy))
    launches = {k: v for k, v in c["by_op"].items() if k.startswith("triton.")}
    assert launches == {"triton._bwd_kernel": 1}, c["by_op"]
    assert all(t.grad is not None for t in (w, b, g, be)) and (x.grad is not None) == x_grad


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
