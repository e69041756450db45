"""Parity of the Triton backend (kernels/, fastgan/backends/triton) against the reference, forward and every gradient.

On CPU the kernels run in Triton's interpreter (TRITON_INTERPRET=1, set by conftest.py when there
is no GPU); on a GPU the same tests run on CUDA tensors (marked ``gpu``) with the tf32/bf16
tolerance where tensor cores are used. The reference is evaluated in float64 on the upcast
inputs. Fresh random inputs each run: the seed is printed in every failure message. Every
``torch.empty``-style allocation made by the kernels' launchers is filled with NaN during the
tests (fixture ``poison``), so an output element (or partial sum) a kernel forgets to write
fails the ``isfinite`` check that precedes every comparison.
"""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from fastgan import ops  # noqa: E402
from fastgan.backends import reference as R  # noqa: E402
from fastgan.backends import triton as TB  # noqa: E402
from fastgan.backends.triton import _policy as TP  # noqa: E402

from fastgan.kernels import config as KC  # noqa: E402
from fastgan.kernels import bn_act as BN  # noqa: E402
from fastgan.kernels import linear_act as LA  # noqa: E402

INTERP = KC.INTERPRET
HAS_CUDA = torch.cuda.is_available()

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not INTERP, reason="CPU tensors need TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not HAS_CUDA or INTERP,
                                                   reason="needs CUDA without the interpreter")]),
]
SLOPES = [None, 0.0, 0.01, 0.2]


# ----------------------------------------------------------------------------------- fixtures

@pytest.fixture
def seed():
    # FASTGAN_TEST_SEED replays a failure (every failure message prints its seed)
    s = int(os.environ.get("FASTGAN_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    torch.manual_seed(s)
    return s


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Allocations of floating tensors come back full of NaN, so unwritten elements show."""
    real_empty, real_empty_like, real_new_empty = torch.empty, torch.empty_like, torch.Tensor.new_empty

    def fill(t):
        if t.is_floating_point() and t.numel():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_empty_like(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty",
                        lambda self, *a, **k: fill(real_new_empty(self, *a, **k)))
    yield


@pytest.fixture(autouse=True)
def crossing_tiles(monkeypatch):
    """Keep the interpreter's small tiles for every shape here, so the small test shapes cross
    block edges as they would on a GPU (the interpreter otherwise switches to whole-layer tiles
    above ``config.INTERPRET_BIG_*``; test_interpreter_whole_layer_tiles covers that path)."""
    if not INTERP:                  # on a GPU: the autotuned tiles, kept across tests
        yield
        return
    monkeypatch.setattr(KC, "INTERPRET_BIG_WORK", 1 << 62)
    monkeypatch.setattr(KC, "INTERPRET_BIG_SWEEP", 1 << 62)
    LA.mm_kernel.cache.clear()      # tile picks are cached per shape
    yield
    LA.mm_kernel.cache.clear()


@pytest.fixture
def triton_backend():
    with ops.use_backend("triton"):
        yield


# ------------------------------------------------------------------------------------ helpers

def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref||; differences below 1e-30 (far under fp32's normal range, e.g. a
    BCE of exp(-100)) count as zero."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert torch.isfinite(out).all(), "non-finite values in the output (element never written?)"
    assert torch.isfinite(ref).all()
    den = ref.norm().item()
    num = (out - ref).norm().item()
    if num <= 1e-30:
        return 0.0
    return num if den == 0 else num / den


def check(name, out, ref, tol, seed, scale=None):
    """Relative error below ``tol``; with ``scale``, relative to max(|ref|, scale): for outputs
    that are small differences of larger terms (BN's dx over a handful of samples), whose fp32
    rounding is set by the terms, not by the result."""
    e = rel_err(out, ref)
    if scale is not None and e > 0:
        e = e * ref.detach().double().norm().item() / max(ref.detach().double().norm().item(),
                                                          scale)
    assert e < tol, f"{name}: relative error {e:.3g} >= {tol:g} (seed {seed})"


def tol_for(device: str, dtype: torch.dtype, matmul: bool = False) -> float:
    if dtype == torch.bfloat16:
        # Triton 3.8's interpreter rounds fp32 -> bf16 toward zero (create_fp_trunc without
        # RTNE): up to 2^-7 relative per element, biased; the GPU rounds to nearest even.
        return 1.2e-2 if device == "cpu" else 5e-3
    if device == "cuda" and matmul and KC.uses_tf32(dtype):
        return 5e-3
    return 1e-5


def leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_(True)


def noncontig(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values as ``t`` in a non-contiguous layout."""
    if how == "t":        # a transposed buffer (dense, permuted strides)
        return t.t().contiguous().t()
    if how == "slice":    # every other column of a wider buffer (not dense)
        big = torch.empty(t.shape[0], 2 * t.shape[1], dtype=t.dtype, device=t.device)
        big[:, ::2] = t
        return big[:, ::2]
    raise ValueError(how)


# --------------------------------------------------------------------------------- linear_act

LINEAR_SHAPES = [  # (N, K, M): every launch path (swapped or not, small-M) and block crossings
    (7, 33, 65),    # fwd swapped, dX swapped, dW plain
    (65, 70, 33),   # fwd plain, dX plain, dW swapped
    (70, 20, 40),   # all plain
    (1, 40, 17),    # 1 row
    (33, 1, 20),    # K = 1
    (40, 65, 1),    # 1 column: the 1-logit layer (small-M path)
    (3, 17, 4),     # small-M path, M = 4
    (64, 64, 64),   # multiples of the block
]


def _linear_case(device, dtype, N, K, M, slope, has_bias, layout, seed, need_x_grad=True):
    x0 = torch.randn(N, K, device=device).to(dtype)
    w0 = (torch.randn(M, K, device=device) / K ** 0.5).to(dtype)
    b0 = torch.randn(M, device=device).to(dtype) if has_bias else None
    g0 = torch.randn(N, M, device=device).to(dtype)
    x = leaf(noncontig(x0, layout) if layout else x0).requires_grad_(need_x_grad)
    w = leaf(noncontig(w0, layout) if layout else w0)
    b = leaf(b0) if has_bias else None
    g = noncontig(g0, "t") if layout else g0
    with ops.use_backend("triton"):
        y = ops.linear_act(x, w, b, slope)
    assert y.dtype == dtype and y.shape == (N, M)
    y.backward(g)
    xr, wr = leaf(x0.double()).requires_grad_(need_x_grad), leaf(w0.double())
    br = leaf(b0.double()) if has_bias else None
    yr = R.linear_act(xr, wr, br, slope)
    yr.backward(g0.double())
    tol = tol_for(device, dtype, matmul=True)
    check("y", y, yr, tol, seed)
    if need_x_grad:
        check("dx", x.grad, xr.grad, tol, seed)
    else:
        assert x.grad is None
    check("dw", w.grad, wr.grad, tol, seed)
    if has_bias:
        check("db", b.grad, br.grad, tol, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_act_fp32(device, shape, slope, seed):
    N, K, M = shape
    _linear_case(device, torch.float32, N, K, M, slope, True, None, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("shape", [(7, 33, 65), (65, 70, 33), (40, 65, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_linear_act_no_bias(device, shape, slope, seed):
    _linear_case(device, torch.float32, *shape, slope, False, None, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["t", "slice"])
@pytest.mark.parametrize("shape", [(7, 33, 65), (65, 70, 33), (40, 65, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_linear_act_noncontiguous(device, shape, layout, seed):
    _linear_case(device, torch.float32, *shape, 0.2, True, layout, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
@pytest.mark.parametrize("shape", [(7, 33, 65), (65, 70, 33), (40, 65, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_linear_act_bf16(device, shape, slope, seed):
    _linear_case(device, torch.bfloat16, *shape, slope, True, None, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("shape", [(65, 70, 33), (40, 65, 1)], ids=lambda s: "x".join(map(str, s)))
def test_linear_act_input_without_grad(device, shape, has_bias, seed):
    """The first layer: no dX is computed, dW (and db) still are."""
    _linear_case(device, torch.float32, *shape, 0.2, has_bias, None, seed, need_x_grad=False)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_act_3d_input(device, seed, triton_backend):
    x = torch.randn(2, 5, 33, device=device)
    w = torch.randn(20, 33, device=device)
    y = ops.linear_act(x, w, None, 0.2)
    check("y", y, R.linear_act(x.double(), w.double(), None, 0.2), tol_for(device, torch.float32, True), seed)


# ------------------------------------------------------------------------------------ bias_act

BIAS_CASES = [  # (shape, dim, layout)
    ((5, 6, 7, 3), 1, "nchw"),
    ((5, 6, 7, 3), 1, "channels_last"),
    ((70, 3, 9, 9), 1, "nchw"),          # several programs share a channel (split db)
    ((33, 7), 1, "nchw"),
    ((4, 5, 6), 2, "nchw"),
    ((4, 5, 6), -1, "nchw"),
    ((1, 1, 1, 1), 1, "nchw"),
    ((6, 10, 4, 4), 1, "slice"),         # not dense: a contiguous copy is made
]


def _make_4d(shape, layout, device, dtype):
    if layout == "slice":
        big = torch.randn(shape[0], 2 * shape[1], *shape[2:], device=device).to(dtype)
        return big[:, ::2]
    x = torch.randn(*shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("case", BIAS_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-d{c[1]}-{c[2]}")
def test_bias_act(device, case, slope, seed):
    shape, dim, layout = case
    _bias_act_case(device, torch.float32, shape, dim, layout, slope, True, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_bias_act_no_bias(device, slope, seed):
    _bias_act_case(device, torch.float32, (5, 6, 7, 3), 1, "channels_last", slope, False, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, 0.2])
def test_bias_act_bf16(device, slope, seed):
    _bias_act_case(device, torch.bfloat16, (70, 3, 9, 9), 1, "nchw", slope, True, seed)


def _bias_act_case(device, dtype, shape, dim, layout, slope, has_bias, seed):
    x0 = _make_4d(shape, layout, device, dtype)
    C = x0.shape[dim]
    b0 = torch.randn(C, device=device).to(dtype) if has_bias else None
    x, b = leaf(x0), (leaf(b0) if has_bias else None)
    with ops.use_backend("triton"):
        y = ops.bias_act(x, b, slope, dim)
    assert y.shape == x0.shape and y.dtype == dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y)
    y.backward(g)
    xr, br = leaf(x0.double()), (leaf(b0.double()) if has_bias else None)
    yr = R.bias_act(xr, br, slope, dim)
    yr.backward(g.double())
    tol = tol_for(device, dtype)
    check("y", y, yr, tol, seed)
    check("dx", x.grad, xr.grad, tol, seed)
    if has_bias:
        check("db", b.grad, br.grad, tol, seed)


def test_bias_act_identity_is_a_no_op():
    x = torch.randn(3, 4)
    with ops.use_backend("triton"):
        assert ops.bias_act(x, None, None, 1) is x


# -------------------------------------------------------------------------------------- bn_act

BN_SHAPES = [  # (shape, layout)
    ((33, 7), "nchw"),
    ((3, 5), "nchw"),                     # (N = 2 would make dX = O(eps): ill-conditioned)
    ((40, 1), "nchw"),
    ((5, 6, 7, 3), "nchw"),
    ((5, 6, 7, 3), "channels_last"),
    ((17, 5, 4, 4), "nchw"),
    ((2, 3, 9, 9), "channels_last"),
    ((6, 10, 4, 4), "slice"),
    ((30, 70), "t"),                      # [N, C] with N-contiguous (transposed) storage
]


def _bn_case(device, dtype, shape, layout, slope, training, affine, seed, wdtype=torch.float32,
             momentum=0.1, eps=1e-5):
    if layout == "t":
        x0 = torch.randn(shape[1], shape[0], device=device).to(dtype).t()
    else:
        x0 = _make_4d(shape, layout, device, dtype)
    x0 = x0 * 2 + 0.5       # a mean away from zero and a std away from one
    C = x0.shape[1]
    w0 = (torch.rand(C, device=device) + 0.5).to(wdtype) if affine == "gamma_beta" else None
    b0 = torch.randn(C, device=device).to(wdtype) if affine != "none" else None
    rm0 = torch.randn(C, device=device)
    rv0 = torch.rand(C, device=device) + 0.5
    x = leaf(x0)
    w = leaf(w0) if w0 is not None else None
    b = leaf(b0) if b0 is not None else None
    rm, rv = rm0.clone(), rv0.clone()
    with ops.use_backend("triton"):
        y = ops.bn_act(x, w, b, rm, rv, training, momentum, eps, slope)
    assert y.shape == x0.shape and y.dtype == dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y)
    y.backward(g)
    xr = leaf(x0.double())
    wr = leaf(w0.double()) if w0 is not None else None
    br = leaf(b0.double()) if b0 is not None else None
    rmr, rvr = rm0.double(), rv0.double()
    yr = R.bn_act(xr, wr, br, rmr, rvr, training, momentum, eps, slope)
    yr.backward(g.double())
    tol = tol_for(device, dtype)
    check("y", y, yr, tol, seed)
    # dx = gamma*rstd*(g' - mean(g') - xhat*mean(g'*xhat)): with few samples per channel the
    # projection cancels most of g', so its rounding is measured against gamma*rstd*|g|.
    red = [d for d in range(x0.dim()) if d != 1]
    rstd = (xr.detach().var(dim=red, unbiased=False, keepdim=True) + eps).rsqrt() \
        if training else (rvr.view([-1 if d == 1 else 1 for d in range(x0.dim())]) + eps).rsqrt()
    gam = wr.detach().view([-1 if d == 1 else 1 for d in range(x0.dim())]) if wr is not None \
        else 1.0
    check("dx", x.grad, xr.grad, tol, seed, scale=(g.double() * rstd * gam).norm().item())
    # dgamma = sum(g' * xhat), dbeta = sum(g') per channel: sums whose terms may cancel (40
    # samples summing to 0.04), measured against the sum of the terms' magnitudes (|g'| <= |g|).
    xhat = (xr.detach() - xr.detach().mean(dim=red, keepdim=True)) * rstd if training else \
        (xr.detach() - rmr.view([-1 if d == 1 else 1 for d in range(x0.dim())])) * rstd
    if w is not None:
        check("dgamma", w.grad, wr.grad, tol, seed,
              scale=(g.double().abs() * xhat.abs()).sum(red).norm().item())
    if b is not None:
        check("dbeta", b.grad, br.grad, tol, seed, scale=g.double().abs().sum(red).norm().item())
    check("running_mean", rm, rmr, 1e-5, seed)
    check("running_var", rv, rvr, 1e-5, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("case", BN_SHAPES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-{c[1]}")
def test_bn_act_train(device, case, slope, seed):
    _bn_case(device, torch.float32, *case, slope, True, "gamma_beta", seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("split", [2, 3])
@pytest.mark.parametrize("case", [((17, 5, 4, 4), "nchw"), ((33, 7), "nchw"),
                                  ((5, 6, 7, 3), "channels_last")],
                         ids=lambda c: f"{'x'.join(map(str, c[0]))}-{c[1]}")
def test_bn_act_split_paths(device, case, split, seed, monkeypatch):
    """The two-kernel paths (partial sums combined by a second kernel), forward and backward."""
    monkeypatch.setattr(BN, "FORCE_SPLIT", split)
    _bn_case(device, torch.float32, *case, 0.2, True, "gamma_beta", seed)
    _bn_case(device, torch.float32, *case, 0.0, False, "gamma_beta", seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("case", [((33, 7), "nchw"), ((5, 6, 7, 3), "channels_last")],
                         ids=lambda c: f"{'x'.join(map(str, c[0]))}-{c[1]}")
def test_bn_act_eval(device, case, slope, seed):
    _bn_case(device, torch.float32, *case, slope, False, "gamma_beta", seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("affine", ["beta", "none"])
def test_bn_act_affine_variants(device, affine, seed):
    _bn_case(device, torch.float32, (5, 6, 7, 3), "nchw", 0.2, True, affine, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("wdtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", [((33, 7), "nchw"), ((5, 6, 7, 3), "channels_last")],
                         ids=lambda c: f"{'x'.join(map(str, c[0]))}-{c[1]}")
def test_bn_act_bf16(device, case, wdtype, seed):
    _bn_case(device, torch.bfloat16, *case, 0.2, True, "gamma_beta", seed, wdtype=wdtype)


@pytest.mark.parametrize("device", DEVICES)
def test_bn_act_without_running_stats(device, seed):
    x = leaf(torch.randn(9, 4, device=device))
    with ops.use_backend("triton"):
        y = ops.bn_act(x, None, None, None, None, True, 0.1, 1e-5, 0.0)
    y.sum().backward()
    xr = leaf(x.detach().double())
    yr = R.bn_act(xr, None, None, None, None, True, 0.1, 1e-5, 0.0)
    yr.sum().backward()
    check("y", y, yr, 1e-5, seed)
    check("dx", x.grad, xr.grad, 1e-5, seed)


def test_bn_act_rejects_single_value_per_channel():
    with ops.use_backend("triton"), pytest.raises(ValueError, match="more than 1 value"):
        ops.bn_act(torch.randn(1, 3), None, None, None, None, True, 0.1, 1e-5, None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_linear_then_bn_mlp_order(device, slope, seed):
    """mlp's order: linear_act(slope) then bn (no activation after the BN)."""
    N, K, M = 33, 20, 40
    x0, w0, b0 = torch.randn(N, K, device=device), torch.randn(M, K, device=device), torch.randn(M, device=device)
    gm0, bt0 = torch.rand(M, device=device) + 0.5, torch.randn(M, device=device)
    ts = [leaf(t) for t in (x0, w0, b0, gm0, bt0)]
    rs = [leaf(t.double()) for t in (x0, w0, b0, gm0, bt0)]
    rm, rv = torch.zeros(M, device=device), torch.ones(M, device=device)
    rmr, rvr = rm.double(), rv.double()
    with ops.use_backend("triton"):
        y = ops.bn_act(ops.linear_act(ts[0], ts[1], ts[2], slope), ts[3], ts[4], rm, rv, True, 0.1, 1e-5, None)
    g = torch.randn_like(y)
    y.backward(g)
    yr = R.bn_act(R.linear_act(rs[0], rs[1], rs[2], slope), rs[3], rs[4], rmr, rvr, True, 0.1, 1e-5, None)
    yr.backward(g.double())
    tol = tol_for(device, torch.float32, matmul=True)
    check("y", y, yr, tol, seed)
    for name, a, r in zip(("dx", "dw", "db", "dgamma", "dbeta"), ts, rs):
        check(name, a.grad, r.grad, tol, seed)
    check("running_mean", rm, rmr, tol, seed)
    check("running_var", rv, rvr, tol, seed)


# ------------------------------------------------------------------------------------ gan_loss

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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("target", GAN_TARGETS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
@pytest.mark.parametrize("shape", [(1,), (7, 1), (3000,)], ids=lambda s: "x".join(map(str, s)))
def test_gan_loss(device, shape, kind, reduction, target, seed):
    _gan_loss_case(device, torch.float32, shape, kind, reduction, target, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
def test_gan_loss_bf16(device, kind, seed):
    _gan_loss_case(device, torch.bfloat16, (64, 1), kind, "mean", 0.9, seed)


@pytest.mark.parametrize("device", DEVICES)
def test_gan_loss_noncontiguous(device, seed):
    _gan_loss_case(device, torch.float32, (20, 30), "bce", "mean", 1.0, seed, layout="t")


def _gan_loss_case(device, dtype, shape, kind, reduction, target, seed, layout=None):
    z0 = _logits(shape, device, dtype)
    if layout:
        z0 = noncontig(z0, layout)
    if isinstance(target, str):
        t, tr = torch.tensor(float(target[6:]), device=device), torch.tensor(float(target[6:]), dtype=torch.float64)
    else:
        t, tr = target, target
    z = leaf(z0)
    with ops.use_backend("triton"):
        loss = ops.gan_loss(z, t, kind, reduction)
    assert loss.shape == () and loss.dtype == dtype
    go = torch.rand((), device=device) + 0.5       # a grad_output that is not 1
    loss.backward(go.to(dtype))
    zr = leaf(z0.double().cpu())
    lr = R.gan_loss(zr, tr, kind, reduction)
    lr.backward(go.double().cpu())
    tol = tol_for(device, dtype)
    check("loss", loss, lr, tol, seed)
    check("dlogits", z.grad, zr.grad, tol, seed)


@pytest.mark.parametrize("device", DEVICES)
def test_gan_loss_no_grad_needed_skips_the_gradient(device):
    z = torch.randn(10, device=device)
    loss, g = torch.ops.fastgan_triton.gan_loss(z, None, 1.0, "bce", "mean", False)
    assert g.numel() == 0
    assert torch.isfinite(loss)


def test_gan_loss_per_element_target(seed):
    if not INTERP:
        pytest.skip("interpreter run")
    z, t = torch.randn(5, 3), torch.rand(5, 3)
    with ops.use_backend("triton"):
        loss = ops.gan_loss(leaf(z), t, "bce", "sum")
    check("loss", loss, R.gan_loss(z.double(), t.double(), "bce", "sum"), 1e-5, seed)


def test_gan_loss_bad_args():
    with ops.use_backend("triton"):
        with pytest.raises(ValueError, match="kind"):
            ops.gan_loss(torch.randn(4), 1.0, "hinge", "mean")
        with pytest.raises(ValueError, match="reduction"):
            ops.gan_loss(torch.randn(4), 1.0, "bce", "max")


# ------------------------------------------------------------------------ determinism, gradcheck

@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device, monkeypatch):
    """Two runs give bitwise-equal results: no atomics in any reduction."""
    monkeypatch.setattr(BN, "FORCE_SPLIT", 3)
    x = torch.randn(17, 5, 4, 4, device=device, requires_grad=True)
    z = torch.randn(3000, device=device, requires_grad=True)
    a = torch.randn(40, 65, device=device, requires_grad=True)
    w = torch.randn(1, 65, device=device, requires_grad=True)
    outs = []
    for _ in range(2):
        for t in (x, z, a, w):
            t.grad = None
        with ops.use_backend("triton"):
            y = ops.bn_act(x, None, None, None, None, True, 0.1, 1e-5, 0.2)
            l1 = ops.gan_loss(z, 0.9, "bce", "mean")
            l2 = ops.linear_act(a, w, None, 0.2)
        (y.square().sum() + l1 + l2.sum()).backward()
        outs.append([t.detach().clone() for t in (y, l1, l2, x.grad, z.grad, a.grad, w.grad)])
    for p, q in zip(*outs):
        assert torch.equal(p, q)


def _interp_only():
    if not INTERP:
        pytest.skip("float64 gradcheck of the kernels runs in the interpreter")


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


# The kernels' gradchecks use fast_mode (random projections of the Jacobian: a few calls per
# input instead of one per element), which the interpreter can afford.
GC = dict(fast_mode=True, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("shape", [(5, 4, 3), (40, 6, 35), (3, 5, 1)], ids=lambda s: "x".join(map(str, s)))
def test_gradcheck_linear_act(shape, slope):
    """float64 through the real kernels (the interpreter's tl.dot supports float64)."""
    _interp_only()
    N, K, M = shape
    x = torch.randn(N, K, dtype=torch.float64, requires_grad=True)
    w = torch.randn(M, K, dtype=torch.float64, requires_grad=True)
    b = torch.randn(M, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: TB.linear_act(*a, slope), (x, w, b), **GC)


@pytest.mark.parametrize("M", [5, 1])
def test_gradcheck_linear_act_full(M):
    """Full (element by element) gradcheck on a tiny problem, matmul and small-M paths."""
    _interp_only()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(M, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(M, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: TB.linear_act(*a, 0.2), (x, w, b))


def test_gradcheck_bias_act():
    _interp_only()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    for slope in (None, 0.2):
        assert torch.autograd.gradcheck(lambda a, c: TB.bias_act(a, c, slope, 1), (x, b), **GC)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_bn_act(training, monkeypatch):
    _interp_only()
    x = torch.randn(4, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    g = (torch.rand(3, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for split in (None, 2):
        monkeypatch.setattr(BN, "FORCE_SPLIT", split)
        assert torch.autograd.gradcheck(
            lambda *a: TB.bn_act(*a, None if training else rm, None if training else rv,
                                 training, 0.1, 1e-5, 0.2), (x, g, b), **GC)


def test_gradcheck_gan_loss():
    _interp_only()
    z = (torch.randn(7, dtype=torch.float64) * 3).requires_grad_()
    for kind in ("bce", "lsgan"):
        for red in ("mean", "sum"):
            assert torch.autograd.gradcheck(lambda a: TB.gan_loss(a, 0.9, kind, red), (z,), **GC)


# ---------------------------------------------------------------------- torch.library wiring

def test_opcheck_custom_ops():
    """Schema, fake (meta) functions and autograd registration of the custom ops."""
    _interp_only()
    from torch.library import opcheck
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    x, w, b = torch.randn(9, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True), torch.randn(6, requires_grad=True)
    opcheck(torch.ops.fastgan_triton.linear_act.default, (x, w, b, 0.2), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.linear_act.default, (x, w[:1], None, None), test_utils=tests)
    x4 = torch.randn(2, 3, 4, 4, requires_grad=True)
    opcheck(torch.ops.fastgan_triton.bias_act.default, (x4, torch.randn(3, requires_grad=True), 0.2, 1), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.gan_loss.default, (torch.randn(8, 1, requires_grad=True), None, 1.0, "bce", "mean", True), test_utils=tests)
    opcheck(torch.ops.fastgan_triton.bn_act_forward.default,
            (x4.detach(), torch.rand(3), torch.randn(3), torch.zeros(3), torch.ones(3), True, 0.1, 1e-5, 0.2),
            test_utils=("test_schema", "test_faketensor"))


@pytest.fixture
def custom_op_path(monkeypatch):
    """Route eager calls through the torch.library custom ops (the torch.compile path)."""
    monkeypatch.setattr(TP, "EAGER_FAST_PATH", False)


@pytest.mark.parametrize("device", DEVICES)
def test_custom_op_path_parity(device, seed, custom_op_path, monkeypatch):
    """The same parity checks through the custom ops (the eager default is an autograd.Function
    over the same launchers): every op, both backward kinds."""
    for shape in [(7, 33, 65), (65, 70, 33), (40, 65, 1)]:
        _linear_case(device, torch.float32, *shape, 0.2, True, None, seed)
    _linear_case(device, torch.float32, 40, 65, 1, None, False, None, seed, need_x_grad=False)
    _bias_act_case(device, torch.float32, (70, 3, 9, 9), 1, "nchw", 0.2, True, seed)
    _bias_act_case(device, torch.float32, (5, 6, 7, 3), 1, "channels_last", None, True, seed)
    _bn_case(device, torch.float32, (5, 6, 7, 3), "channels_last", 0.2, True, "gamma_beta", seed)
    _bn_case(device, torch.float32, (33, 7), "nchw", 0.0, False, "beta", seed)
    monkeypatch.setattr(BN, "FORCE_SPLIT", 3)
    _bn_case(device, torch.float32, (17, 5, 4, 4), "nchw", 0.01, True, "gamma_beta", seed)
    for kind in ("bce", "lsgan"):
        _gan_loss_case(device, torch.float32, (3000,), kind, "mean", "tensor0.9", seed)


@pytest.mark.gpucheck
def test_torch_compile_graph(seed):
    """torch.compile traces the custom ops through their fake implementations (aot_eager: no
    codegen) and matches eager, running stats included."""
    dev = "cpu" if INTERP else "cuda"
    torch._dynamo.reset()
    x = torch.randn(33, 20, device=dev)
    w1 = torch.randn(40, 20, device=dev, requires_grad=True)
    g1, b1 = torch.ones(40, device=dev, requires_grad=True), torch.zeros(40, device=dev, requires_grad=True)
    w2 = torch.randn(1, 40, device=dev, requires_grad=True)
    img, cb = torch.randn(2, 3, 4, 4, device=dev), torch.randn(3, device=dev, requires_grad=True)

    def f(rm, rv):
        with ops.use_backend("triton"):
            h = ops.linear_act(x, w1, None, 0.2)
            h = ops.bn_act(h, g1, b1, rm, rv, True, 0.1, 1e-5, 0.0)
            loss = ops.gan_loss(ops.linear_act(h, w2, None, None), 0.9, "bce", "mean")
            return loss + ops.bias_act(img, cb, 0.2, 1).square().mean()

    params = (w1, g1, b1, w2, cb)
    res = []
    for fn in (f, torch.compile(f, backend="aot_eager", fullgraph=False)):
        rm, rv = torch.zeros(40, device=dev), torch.ones(40, device=dev)
        for p in params:
            p.grad = None
        loss = fn(rm, rv)
        loss.backward()
        res.append([loss.detach().clone(), rm, rv] + [p.grad.clone() for p in params])
    for a, b in zip(*res):
        check("compiled vs eager", a, b, 1e-6, seed)


def test_registry_has_triton_everywhere_it_should():
    dev = "cpu" if INTERP else "cuda"
    assert "triton" in ops.available_backends(dev)
    assert TB.DEVICE_TYPES == (("cuda", "cpu") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",))


# ------------------------------------------------------------------------------- layer level

@pytest.mark.parametrize("device", DEVICES)
def test_layers_match_reference(device, seed, monkeypatch):
    """FusedLinearAct, BatchNormAct, ConvBNAct (BN and bias epilogue, transposed) and the losses
    under use_backend('triton') against the same modules under the reference backend (fp32
    matmuls on both sides: the convolutions are the same cuDNN calls in both)."""
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
    for name, net, backend in (("ref", ref, "reference"), ("tri", tri, "triton")):
        with ops.use_backend(backend):
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


# ---------------------------------------------------------------------------------- GPU only

REAL_LINEAR = [(64, 100, 256), (64, 1024, 784), (64, 784, 1024), (64, 256, 1), (32, 848, 128),
               (30, 48, 1024), (30, 1024, 6272), (16, 3136, 1024), (16, 1024, 1), (4096, 1024, 784)]


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERP, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", REAL_LINEAR, ids=lambda s: "x".join(map(str, s)))
def test_gpu_linear_act_real_shapes(shape, dtype, seed):
    _linear_case("cuda", dtype, *shape, 0.2, True, None, seed)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERP, reason="needs CUDA")
@pytest.mark.parametrize("shape", [(64, 1024, 784), (30, 1024, 6272), (16, 3136, 1024), (64, 256, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gpu_linear_act_ieee_fp32(shape, seed, monkeypatch):
    """With DOT_PRECISION='ieee' (no tf32) the GPU matmuls meet the fp32 tolerance."""
    monkeypatch.setattr(KC, "DOT_PRECISION", "ieee")
    _linear_case("cuda", torch.float32, *shape, 0.2, True, None, seed)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERP, reason="needs CUDA")
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("shape", [(128, 512, 4, 4), (128, 64, 32, 32), (16, 1, 56, 56), (16, 50, 56, 56),
                                   (64, 1024), (30, 6272)], ids=lambda s: "x".join(map(str, s)))
def test_gpu_bn_act_real_shapes(shape, layout, seed):
    if len(shape) == 2 and layout == "channels_last":
        pytest.skip("2-D")
    _bn_case("cuda", torch.float32, shape, layout, 0.2, True, "gamma_beta", seed)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA or INTERP, reason="needs CUDA")
def test_gpu_cuda_graph_capture(seed):
    """Forward + backward of every op captured in a CUDA graph and replayed: same results as
    eager (no host syncs, no value-dependent allocation)."""
    dev = "cuda"
    x = torch.randn(64, 100, device=dev)
    w1 = torch.randn(256, 100, device=dev, requires_grad=True)
    g1, b1 = torch.ones(256, device=dev, requires_grad=True), torch.zeros(256, device=dev, requires_grad=True)
    rm, rv = torch.zeros(256, device=dev), torch.ones(256, device=dev)
    w2 = torch.randn(1, 256, device=dev, requires_grad=True)
    cb = torch.randn(8, device=dev, requires_grad=True)
    img = torch.randn(16, 8, 8, 8, device=dev)
    target = torch.tensor(0.9, device=dev)
    params = (w1, g1, b1, w2, cb)

    def step():
        for p in params:
            p.grad = None
        with ops.use_backend("triton"):
            h = ops.linear_act(x, w1, None, 0.2)
            h = ops.bn_act(h, g1, b1, rm, rv, True, 0.1, 1e-5, 0.0)
            logit = ops.linear_act(h, w2, None, None)
            c = ops.bias_act(img, cb, 0.2, 1)
            loss = ops.gan_loss(logit, target, "bce", "mean") + c.square().mean()
        loss.backward()
        return loss

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):          # autotune + compile outside the capture
            step()
    torch.cuda.current_stream().wait_stream(s)
    rm.zero_(), rv.fill_(1.0)
    eager_loss = step().detach().clone()
    eager_grads = [p.grad.clone() for p in params]
    rm_e = rm.clone()
    rm.zero_(), rv.fill_(1.0)
    graph = torch.cuda.CUDAGraph()
    for p in params:
        p.grad = None
    with torch.cuda.graph(graph):
        static_loss = step()
    rm.zero_(), rv.fill_(1.0)
    graph.replay()
    torch.cuda.synchronize()
    check("loss", static_loss, eager_loss, 1e-6, seed)
    for p, g in zip(params, eager_grads):
        check("grad", p.grad, g, 1e-6, seed)
    check("running_mean", rm, rm_e, 1e-6, seed)


# ------------------------------------------------------------- interpreter whole-layer tiles

@pytest.mark.skipif(not INTERP, reason="the interpreter's tile choice")
@pytest.mark.parametrize("op", ["linear", "linear_swapped", "bn_2d", "bn_nchw", "bias_nchw"])
def test_interpreter_whole_layer_tiles(op, seed, monkeypatch):
    """The tiles the interpreter uses above config.INTERPRET_BIG_* (fitted to the whole layer,
    so one program or a few): same parity as the crossing tiles."""
    monkeypatch.setattr(KC, "INTERPRET_BIG_WORK", 0)
    monkeypatch.setattr(KC, "INTERPRET_BIG_SWEEP", 0)
    LA.mm_kernel.cache.clear()
    if op == "linear":
        _linear_case("cpu", torch.float32, 70, 300, 33, 0.2, True, None, seed)
    elif op == "linear_swapped":
        _linear_case("cpu", torch.float32, 7, 33, 1100, 0.0, True, "t", seed)
    elif op == "bn_2d":
        _bn_case("cpu", torch.float32, (33, 1100), "nchw", 0.2, True, "gamma_beta", seed)
    elif op == "bn_nchw":
        _bn_case("cpu", torch.float32, (17, 5, 4, 4), "nchw", None, True, "gamma_beta", seed)
    else:
        _bias_act_case("cpu", torch.float32, (70, 3, 9, 9), 1, "nchw", 0.2, True, seed)
    if op.startswith("linear"):
        cfgs = [c.kwargs for c in LA.mm_kernel.cache.values()]
        assert cfgs and all(c["BLOCK_P"] > LA._INTERP_CONFIG[0] or c["BLOCK_Q"] >
                            LA._INTERP_CONFIG[1] for c in cfgs), cfgs
