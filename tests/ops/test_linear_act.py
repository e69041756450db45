"""linear_act = act(x @ weight.T + bias): parity of every backend against the float64 reference,
forward and every gradient (the harness: ops_harness.py). The case lists are per backend (the
Triton interpreter is slow: its list covers each launch path with few shapes)."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import (DTYPES, GC, R, SLOPES, available, backend_devices, check, check_floored,
                         interp_only, leaf, make_layout, noncontig, only, run_pair, tolerance)

TRITON = backend_devices("triton")
CUDA = backend_devices("cuda")
_ids = lambda s: "x".join(map(str, s))  # noqa: E731


# ------------------------------------------------------------------------------ Triton cases

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


def linear_case(backend, device, dtype, N, K, M, slope, has_bias, layout, seed, need_x_grad=True):
    x0 = torch.randn(N, K, device=device).to(dtype)
    w0 = (torch.randn(M, K, device=device) / K ** 0.5).to(dtype)
    b0 = torch.randn(M, device=device).to(dtype) if has_bias else None
    g0 = torch.randn(N, M, device=device).to(dtype)
    x = leaf(noncontig(x0, layout) if layout else x0).requires_grad_(need_x_grad)
    w = leaf(noncontig(w0, layout) if layout else w0)
    b = leaf(b0) if has_bias else None
    g = noncontig(g0, "t") if layout else g0
    with ops.use_backend(backend):
        y = ops.linear_act(x, w, b, slope)
    assert y.dtype == dtype and y.shape == (N, M)
    y.backward(g)
    xr, wr = leaf(x0.double()).requires_grad_(need_x_grad), leaf(w0.double())
    br = leaf(b0.double()) if has_bias else None
    yr = R.linear_act(xr, wr, br, slope)
    yr.backward(g0.double())
    tol = tolerance(backend, device, dtype, matmul=True)
    check("y", y, yr, tol, seed)
    if need_x_grad:
        check("dx", x.grad, xr.grad, tol, seed)
    else:
        assert x.grad is None
    check("dw", w.grad, wr.grad, tol, seed)
    if has_bias:
        # db is a sum over the N rows: with M = 1 a single number that can cancel to near zero
        # (seed 861740715: 1.8e-5 of itself). fp32 rounds it relative to the sum of its terms'
        # magnitudes, so that is the scale it is held to.
        check("db", b.grad, br.grad, tol, seed, scale=g0.double().abs().sum(0).norm().item())


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("shape", LINEAR_SHAPES, ids=_ids)
def test_linear_act_fp32(backend, device, shape, slope, seed):
    N, K, M = shape
    linear_case(backend, device, torch.float32, N, K, M, slope, True, None, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("shape", [(7, 33, 65), (65, 70, 33), (40, 65, 1)], ids=_ids)
def test_linear_act_no_bias(backend, device, shape, slope, seed):
    linear_case(backend, device, torch.float32, *shape, slope, False, None, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("layout", ["t", "slice"])
@pytest.mark.parametrize("shape", [(7, 33, 65), (65, 70, 33), (40, 65, 1)], ids=_ids)
def test_linear_act_noncontiguous(backend, device, shape, layout, seed):
    linear_case(backend, device, torch.float32, *shape, 0.2, True, layout, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
@pytest.mark.parametrize("shape", [(7, 33, 65), (65, 70, 33), (40, 65, 1)], ids=_ids)
def test_linear_act_bf16(backend, device, shape, slope, seed):
    linear_case(backend, device, torch.bfloat16, *shape, slope, True, None, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("shape", [(65, 70, 33), (40, 65, 1)], ids=_ids)
def test_linear_act_input_without_grad(backend, device, shape, has_bias, seed):
    """The first layer: no dX is computed, dW (and db) still are."""
    linear_case(backend, device, torch.float32, *shape, 0.2, has_bias, None, seed, need_x_grad=False)


@pytest.mark.parametrize("backend,device", TRITON)
def test_linear_act_3d_input(backend, device, seed):
    x = torch.randn(2, 5, 33, device=device)
    w = torch.randn(20, 33, device=device)
    with ops.use_backend(backend):
        y = ops.linear_act(x, w, None, 0.2)
    check("y", y, R.linear_act(x.double(), w.double(), None, 0.2),
          tolerance(backend, device, torch.float32, True), seed)


@pytest.mark.parametrize("backend", only("triton"))
@pytest.mark.parametrize("slope", [None, 0.2])
@pytest.mark.parametrize("shape", [(5, 4, 3), (40, 6, 35), (3, 5, 1)], ids=_ids)
def test_gradcheck_linear_act(backend, shape, slope):
    """float64 through the real kernels (the interpreter's tl.dot supports float64)."""
    interp_only()
    N, K, M = shape
    x = torch.randn(N, K, dtype=torch.float64, requires_grad=True)
    w = torch.randn(M, K, dtype=torch.float64, requires_grad=True)
    b = torch.randn(M, dtype=torch.float64, requires_grad=True)
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda *a: ops.linear_act(*a, slope), (x, w, b), **GC)


@pytest.mark.parametrize("backend", only("triton"))
@pytest.mark.parametrize("M", [5, 1])
def test_gradcheck_linear_act_full(backend, M):
    """Full (element by element) gradcheck on a tiny problem, matmul and small-M paths."""
    interp_only()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(M, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(M, dtype=torch.float64, requires_grad=True)
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda *a: ops.linear_act(*a, 0.2), (x, w, b))


# ------------------------------------- the backward's dX and dW (+ db) in one launch (Triton)

# (N, K, M): every pairing of the two problems' orientations (linear_act._swap: s transposed,
# n natural), odd sizes across the 32-wide interpreter tiles, and more than GROUP_P (8) row
# blocks in either problem (the tile order of the second problem starts at an offset)
PAIR_SHAPES = {
    (7, 33, 20): "ss", (37, 97, 45): "ss",
    (9, 70, 130): "sn", (7, 33, 65): "sn",
    (67, 101, 35): "ns", (65, 70, 33): "ns",
    (99, 37, 45): "nn", (270, 20, 40): "nn", (70, 20, 270): "nn",
}
ACTS = [None, 0.0, 0.2, "tanh", "sigmoid"]


@pytest.mark.parametrize("backend", only("triton"))
def test_one_launch_keeps_each_orientation(backend, monkeypatch):
    """The one launch gets dX and dW each in the orientation it takes alone (PAIR_SHAPES says
    which), and the list covers all four pairings. Only the launch's arguments are looked at."""
    from fastgan.kernels import linear_act as LA
    seen = []
    monkeypatch.setattr(LA, "mm_grad_pair", lambda px, pw, *a: seen.append((px, pw)))
    for (N, K, M), want in PAIR_SHAPES.items():
        x, w, g = torch.randn(N, K), torch.randn(M, K), torch.randn(N, M)
        LA.linear_act_backward(g, x, w, g, 2, 0.2, True, True, True)
        px, pw = seen.pop()
        assert "".join("s" if p.grad == 2 else "n" for p in (px, pw)) == want, (N, K, M)
        assert (px.P, px.Q, px.K) == ((K, N, M) if want[0] == "s" else (N, K, M))
        assert (pw.P, pw.Q, pw.K) == ((K, M, N) if want[1] == "s" else (M, K, N))
    assert set(PAIR_SHAPES.values()) == {"ss", "sn", "ns", "nn"}


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", list(PAIR_SHAPES), ids=_ids)
def test_linear_act_one_launch_backward(backend, device, shape, act, dtype, seed):
    linear_case(backend, device, dtype, *shape, act, True, None, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("layout", ["t", "slice"])
@pytest.mark.parametrize("shape", [(37, 97, 45), (9, 70, 130), (67, 101, 35), (99, 37, 45)],
                         ids=_ids)
def test_linear_act_one_launch_noncontiguous(backend, device, shape, layout, seed):
    linear_case(backend, device, torch.float32, *shape, "tanh", True, layout, seed)


def _subset_case(device, dtype, N, K, M, act, need):
    """The op with only the inputs in ``need`` ("x", "w", "b") requiring grad; returns its
    backward's Triton launches and checks each gradient against the float64 reference."""
    from fastgan.benchmark.kernel_count import count_work
    x0, w0 = torch.randn(N, K).to(dtype), (torch.randn(M, K) / K ** 0.5).to(dtype)
    b0, g0 = torch.randn(M).to(dtype), torch.randn(N, M).to(dtype)
    ins = [leaf(t, device=device, requires_grad=n in need) for t, n in ((x0, "x"), (w0, "w"),
                                                                       (b0, "b"))]
    with ops.use_backend("triton"):
        ops.linear_act(*ins, act).backward(g0.to(device))   # warm-up: autotuning on a GPU
        for t in ins:
            t.grad = None
        y = ops.linear_act(*ins, act)
    work = count_work(lambda: y.backward(g0.to(device)))
    refs = [leaf(t.double(), requires_grad=n in need) for t, n in ((x0, "x"), (w0, "w"),
                                                                   (b0, "b"))]
    R.linear_act(*refs, act).backward(g0.double())
    return work, ins, refs


_NEEDS = ["xwb", "xw", "xb", "wb", "x", "w", "b"]


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("need", _NEEDS)
@pytest.mark.parametrize("shape", [(7, 33, 20), (67, 101, 35), (99, 37, 45)], ids=_ids)
def test_linear_act_backward_launches(backend, device, shape, need, seed):
    """Whatever subset of dX, dW, db is asked for: one Triton launch, every asked gradient
    right (db without dW runs the dW problem into a scratch buffer), none of the others."""
    dtype = torch.float64 if device == "cpu" else torch.float32
    work, ins, refs = _subset_case(device, dtype, *shape, 0.2, need)
    launches = {k: v for k, v in work["by_op"].items() if k.startswith("triton.")}
    assert sum(launches.values()) == 1, launches
    tol = tolerance(backend, device, dtype, matmul=True)
    for name, t, r in zip("xwb", ins, refs):
        if name in need:
            check("d" + name, t.grad, r.grad, tol, seed)
        else:
            assert t.grad is None


REAL_LINEAR = [(64, 100, 256), (64, 1024, 784), (64, 784, 1024), (64, 256, 1), (32, 848, 128),
               (30, 48, 1024), (30, 1024, 6272), (16, 3136, 1024), (16, 1024, 1), (4096, 1024, 784)]
_TRITON_GPU = pytest.mark.skipif(not available("triton", "cuda"), reason="needs CUDA")


@pytest.mark.gpu
@_TRITON_GPU
@pytest.mark.parametrize("backend", ["triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", REAL_LINEAR, ids=_ids)
def test_gpu_linear_act_real_shapes(backend, shape, dtype, seed):
    linear_case(backend, "cuda", dtype, *shape, 0.2, True, None, seed)


@pytest.mark.gpu
@_TRITON_GPU
@pytest.mark.parametrize("shape", [(64, 1024, 784), (30, 1024, 6272), (16, 3136, 1024), (64, 256, 1)],
                         ids=_ids)
@pytest.mark.parametrize("backend", ["triton"])
def test_gpu_linear_act_ieee_fp32(backend, shape, seed, monkeypatch):
    """With DOT_PRECISION='ieee' (no tf32) the GPU matmuls meet the fp32 tolerance."""
    from fastgan.kernels import config as KC
    monkeypatch.setattr(KC, "DOT_PRECISION", "ieee")
    linear_case(backend, "cuda", torch.float32, *shape, 0.2, True, None, seed)


# -------------------------------------------------------------------------------- cuda cases

LINEAR_CASES = [
    (1, 1, 1), (7, 13, 5), (3, 1, 9), (1, 17, 1), (64, 100, 256), (10, 48, 33), (5, 31, 8),
]


def term_sizes_of(xa, wa):
    def term_sizes(refs, gy):
        ga = gy.abs()
        return {"x": (ga @ wa).norm().item(), "weight": (ga.t() @ xa).norm().item(),
                "bias": ga.sum(0).norm().item()}
    return term_sizes


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("n,k,m", LINEAR_CASES)
@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_act(backend, device, dtype, slope, n, k, m, has_bias, seed):
    x = leaf(torch.randn(n, k), dtype, device)
    w = leaf(torch.randn(m, k) / k ** 0.5, dtype, device)
    b = leaf(torch.randn(m), dtype, device) if has_bias else None
    # A dot product of a few terms can cancel (k = 17: a sum of 0.007 from terms of 0.25): each
    # result's rounding is measured against the sum of its terms' magnitudes.
    xa, wa = x.detach().double().cpu().abs(), w.detach().double().cpu().abs()
    ba = b.detach().double().cpu().abs() if has_bias else 0.0
    out_floor = (xa @ wa.t() + ba).norm().item()
    run_pair(backend, lambda x, w, b: ops.linear_act(x, w, b, slope),
             lambda x, w, b: R.linear_act(x, w, b, slope),
             [x, w, b], dtype, device, seed, ["x", "weight", "bias"],
             pre_act=lambda x, w, b: R.linear_act(x, w, b, None),
             grad_floors=term_sizes_of(xa, wa), out_floor=out_floor)


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("slope", [None, 0.2])
def test_linear_act_noncontig_and_3d(backend, device, slope, seed):
    x = leaf(torch.randn(9, 12), torch.float32, device)
    xt = torch.randn(12, 9, device=device).t().requires_grad_(True)  # transposed view
    w = make_layout(torch.randn(7, 12, device=device), "noncontig").requires_grad_(True)
    b = leaf(torch.randn(7), torch.float32, device)
    for xi in (x, xt):
        run_pair(backend, lambda x, w, b: ops.linear_act(x, w, b, slope),
                 lambda x, w, b: R.linear_act(x, w, b, slope),
                 [xi, w, b], torch.float32, device, seed, ["x", "weight", "bias"])
    x3 = leaf(torch.randn(2, 5, 12), torch.float32, device)
    run_pair(backend, lambda x, w, b: ops.linear_act(x, w, b, slope),
             lambda x, w, b: R.linear_act(x, w, b, slope),
             [x3, w, b], torch.float32, device, seed, ["x", "weight", "bias"])


# ------------------------------------------------------- output activations (tanh, sigmoid)

OUT_ACTS = ["tanh", "sigmoid"]
BOTH = backend_devices("triton", "cuda")
# every Triton launch path (swapped / plain / small-M) and the cuda rows kernel, odd sizes
OUT_SHAPES = [(7, 33, 65), (65, 70, 33), (40, 65, 1), (3, 17, 4), (5, 31, 8), (1, 17, 1)]


def _linear_pair(backend, device, dtype, n, k, m, act, seed, scale=1.0, has_bias=True):
    x = leaf(torch.randn(n, k) * scale, dtype, device)
    w = leaf(torch.randn(m, k) / k ** 0.5, dtype, device)
    b = leaf(torch.randn(m) * scale, dtype, device) if has_bias else None
    xa, wa = x.detach().double().cpu().abs(), w.detach().double().cpu().abs()
    ba = b.detach().double().cpu().abs() if has_bias else 0.0
    tol = tolerance(backend, device, dtype, matmul=True)
    run_pair(backend, lambda x, w, b: ops.linear_act(x, w, b, act),
             lambda x, w, b: R.linear_act(x, w, b, act),
             [x, w, b], dtype, device, seed, ["x", "weight", "bias"], tol=tol,
             grad_floors=term_sizes_of(xa, wa), out_floor=(xa @ wa.t() + ba).norm().item())


@pytest.mark.parametrize("backend,device", BOTH)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", OUT_ACTS)
@pytest.mark.parametrize("shape", OUT_SHAPES, ids=_ids)
@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_act_out_act(backend, device, dtype, act, shape, has_bias, seed):
    _linear_pair(backend, device, dtype, *shape, act, seed, has_bias=has_bias)


@pytest.mark.parametrize("backend,device", BOTH)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", OUT_ACTS)
@pytest.mark.parametrize("shape", [(7, 33, 65), (40, 65, 1)], ids=_ids)
def test_linear_act_out_act_saturated(backend, device, dtype, act, shape, seed):
    """|z| up to ~50: y within rounding of its limits, act' read off y ~0 as in the reference
    (bf16 left out: 1 - y^2 of a bf16-rounded y near 1 has no correct digits)."""
    _linear_pair(backend, device, dtype, *shape, act, seed, scale=12.0)


@pytest.mark.parametrize("backend,device", BOTH)
@pytest.mark.parametrize("act", OUT_ACTS)
@pytest.mark.parametrize("shape", [(7, 33, 65), (40, 65, 1)], ids=_ids)
def test_linear_act_out_act_nan(backend, device, act, shape):
    """A NaN in x gives NaN exactly in its row of y and of dX, as in the reference."""
    n, k, m = shape
    x0, w0, b0 = torch.randn(n, k), torch.randn(m, k) / k ** 0.5, torch.randn(m)
    x0[2, 5] = float("nan")
    x, w, b = (leaf(t, torch.float32, device) for t in (x0, w0, b0))
    with ops.use_backend(backend):
        y = ops.linear_act(x, w, b, act)
    xr, wr, br = (leaf(t.double()) for t in (x0, w0, b0))
    yr = R.linear_act(xr, wr, br, act)
    g = torch.randn(n, m)
    y.backward(g.to(device))
    yr.backward(g.double())
    for name, a, r in (("y", y, yr), ("dx", x.grad, xr.grad)):
        a = a.detach().double().cpu()
        assert torch.equal(a.isnan(), r.isnan()), name
        ok = ~r.isnan()
        assert torch.allclose(a[ok], r[ok].detach(), rtol=1e-4, atol=1e-5), name
    assert w.grad.isnan().all() and b.grad.isnan().all()  # every dW, db sums over the NaN row


@pytest.mark.parametrize("backend", ["reference"] + only("triton") + only("cuda"))
def test_linear_act_bad_activation(backend):
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    with ops.use_backend(backend):
        with pytest.raises(ValueError, match="'tanh' or 'sigmoid'"):
            ops.linear_act(x, w, None, "gelu")
        if backend != "reference":  # the reference's F.leaky_relu takes any slope
            for bad in (-0.2, float("nan"), float("inf")):
                with pytest.raises(ValueError, match="'tanh' or 'sigmoid'"):
                    ops.linear_act(x, w, None, bad)


@pytest.mark.parametrize("backend", only("cuda") + only("triton"))
@pytest.mark.parametrize("act", OUT_ACTS)
@pytest.mark.parametrize("M", [5, 1])
def test_gradcheck_linear_act_out_act(backend, act, M):
    if backend == "triton":
        interp_only()
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(M, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(M, dtype=torch.float64, requires_grad=True)
    f = lambda *a: ops.linear_act(*a, act)  # noqa: E731
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(f, (x, w, b))
        if backend == "cuda":
            assert torch.autograd.gradgradcheck(f, (x, w, b))


# ------------------------------------------- inference-mode batch norm folded in (bn_eval)

def _bn_params(m, dtype, device, affine=True):
    mean, var = torch.randn(m), torch.rand(m) + 0.1
    w, b = (torch.randn(m), torch.randn(m)) if affine else (None, None)
    return tuple(None if t is None else t.to(device) for t in (mean, var, w, b)) + (1e-3,)


@pytest.mark.parametrize("backend,device", BOTH)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", [None, 0.2, "tanh"])
@pytest.mark.parametrize("shape", [(7, 33, 65), (65, 70, 33), (40, 65, 1), (5, 31, 8)], ids=_ids)
@pytest.mark.parametrize("affine", [True, False])
def test_linear_act_bn_eval(backend, device, dtype, slope, shape, affine, seed):
    """act(x @ W.T + b) then batch_norm(eval) in one op, against the two reference ops."""
    n, k, m = shape
    x = torch.randn(n, k).to(device=device, dtype=dtype)
    w = (torch.randn(m, k) / k ** 0.5).to(device=device, dtype=dtype)
    b = torch.randn(m).to(device=device, dtype=dtype)
    bn = _bn_params(m, dtype, device, affine)
    with torch.no_grad(), ops.use_backend(backend):
        y = ops.linear_act(x, w, b, slope, bn_eval=bn)
    dbl = lambda t: None if t is None else t.double().cpu()  # noqa: E731
    yr = torch.nn.functional.batch_norm(R.linear_act(dbl(x), dbl(w), dbl(b), slope),
                                        *map(dbl, bn[:4]), False, 0.0, bn[4])
    assert y.dtype == dtype and y.shape == (n, m)
    check_floored("y", y, yr, tolerance(backend, device, dtype, matmul=True), seed)


@pytest.mark.parametrize("backend", ["reference"] + only("triton") + only("cuda"))
def test_linear_act_bn_eval_refuses_grad(backend):
    x, w = torch.randn(3, 4), torch.randn(5, 4, requires_grad=True)
    with ops.use_backend(backend), pytest.raises(ValueError, match="inference only"):
        ops.linear_act(x, w, None, 0.2, bn_eval=_bn_params(5, torch.float32, "cpu"))
