"""bias_act = act(x + bias along dim), the convolutions' epilogue: parity of every backend against
the float64 reference, forward and every gradient (the harness: ops_harness.py). The case lists
are per backend (the Triton interpreter is slow)."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import (DTYPES, GC, R, SLOPES, backend_devices, check, interp_only, leaf, make_4d, make_layout,
                         only, run_pair, tolerance)

TRITON = backend_devices("triton")
CUDA = backend_devices("cuda")


# ------------------------------------------------------------------------------ Triton cases

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


def bias_act_case(backend, device, dtype, shape, dim, layout, slope, has_bias, seed):
    x0 = make_4d(shape, layout, device, dtype)
    C = x0.shape[dim]
    b0 = torch.randn(C, device=device).to(dtype) if has_bias else None
    x, b = leaf(x0), (leaf(b0) if has_bias else None)
    with ops.use_backend(backend):
        y = ops.bias_act(x, b, slope, dim)
    assert y.shape == x0.shape and y.dtype == dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(y)
    y.backward(g)
    xr, br = leaf(x0.double()), (leaf(b0.double()) if has_bias else None)
    yr = R.bias_act(xr, br, slope, dim)
    yr.backward(g.double())
    tol = tolerance(backend, device, dtype)
    check("y", y, yr, tol, seed)
    check("dx", x.grad, xr.grad, tol, seed)
    if has_bias:
        check("db", b.grad, br.grad, tol, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("case", BIAS_CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-d{c[1]}-{c[2]}")
def test_bias_act(backend, device, case, slope, seed):
    shape, dim, layout = case
    bias_act_case(backend, device, torch.float32, shape, dim, layout, slope, True, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_bias_act_no_bias(backend, device, slope, seed):
    bias_act_case(backend, device, torch.float32, (5, 6, 7, 3), 1, "channels_last", slope, False, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("slope", [None, 0.2])
def test_bias_act_bf16(backend, device, slope, seed):
    bias_act_case(backend, device, torch.bfloat16, (70, 3, 9, 9), 1, "nchw", slope, True, seed)


@pytest.mark.parametrize("backend", only("triton"))
def test_bias_act_identity_is_a_no_op(backend):
    x = torch.randn(3, 4)
    with ops.use_backend(backend):
        assert ops.bias_act(x, None, None, 1) is x


@pytest.mark.parametrize("backend", only("triton"))
def test_gradcheck_bias_act(backend):
    interp_only()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    with ops.use_backend(backend):
        for slope in (None, 0.2):
            assert torch.autograd.gradcheck(lambda a, c: ops.bias_act(a, c, slope, 1), (x, b), **GC)


# -------------------------------------------------------------------------------- cuda cases

BIAS_ACT_CASES = [
    ((1, 1), 1, "contiguous"),
    ((7, 13), 1, "contiguous"),
    ((33, 1), 1, "contiguous"),
    ((1, 65), 1, "contiguous"),
    ((5, 37), -1, "noncontig"),
    ((3, 5, 7, 9), 1, "contiguous"),
    ((3, 5, 7, 9), 1, "channels_last"),
    ((2, 6, 4, 3), 1, "noncontig"),
    ((4, 8, 4, 4), 1, "channels_last"),  # vector path along channels
    ((2, 3, 5), 2, "contiguous"),
    ((3, 4, 5), 0, "contiguous"),
    ((2, 16, 8, 8), 1, "contiguous"),    # vector path along H*W
]


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("shape,dim,layout", BIAS_ACT_CASES)
def test_bias_act_dtypes(backend, device, dtype, slope, shape, dim, layout, seed):
    x = leaf(make_layout(torch.randn(shape), layout) if layout != "noncontig" else torch.randn(shape),
             dtype, device)
    if layout == "noncontig":
        x = make_layout(x.detach(), "noncontig").requires_grad_(True)
    elif layout == "channels_last":
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    b = leaf(torch.randn(shape[dim]), dtype, device)

    def bias_floor(refs, gy):
        # db sums gy * act' over every other dim: signed terms that can cancel (seed
        # 2051078351: 1.03e-5 in float32), held relative to the sum of their sizes
        return {"bias": gy.abs().sum([d for d in range(gy.dim()) if d != dim]).norm().item()}
    run_pair(backend, lambda x, b: ops.bias_act(x, b, slope, dim),
             lambda x, b: R.bias_act(x, b, slope, dim),
             [x, b], dtype, device, seed, ["x", "bias"],
             pre_act=lambda x, b: R.bias_act(x, b, None, dim), grad_floors=bias_floor)


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_bias_act_no_bias_and_identity(backend, device, slope, seed):
    x = leaf(torch.randn(3, 5, 7), torch.float32, device)
    run_pair(backend, lambda x: ops.bias_act(x, None, slope, 1),
             lambda x: R.bias_act(x, None, slope, 1), [x], torch.float32, device, seed, ["x"])
    y = torch.randn(4, 3, device=device)
    with ops.use_backend(backend):
        assert ops.bias_act(y, None, None, 1) is y  # identity, like the reference


@pytest.mark.parametrize("backend,device", CUDA)
def test_bias_act_grad_only_bias(backend, device, seed):
    x = leaf(torch.randn(6, 9, 5), torch.float32, device, requires_grad=False)
    b = leaf(torch.randn(9), torch.float32, device)
    run_pair(backend, lambda x, b: ops.bias_act(x, b, 0.2, 1), lambda x, b: R.bias_act(x, b, 0.2, 1),
             [x, b], torch.float32, device, seed, ["x", "bias"])


@pytest.mark.parametrize("backend,device", CUDA)
def test_bias_act_large_reduction(backend, device, seed):
    # long rows / many rows: several reduction chunks and splits
    for shape in [(3, 2, 181, 191), (4099, 37), (2, 1, 300, 300)]:
        x = leaf(torch.randn(shape), torch.float32, device)
        b = leaf(torch.randn(shape[1]), torch.float32, device)
        run_pair(backend, lambda x, b: ops.bias_act(x, b, 0.2, 1),
                 lambda x, b: R.bias_act(x, b, 0.2, 1),
                 [x, b], torch.float32, device, seed, ["x", "bias"])


# ------------------------------------------------------- output activations (tanh, sigmoid)

OUT_ACTS = ["tanh", "sigmoid"]
OUT_CASES = [  # (shape, dim, layout): rows (inner 1), planar, channels_last, odd sizes
    ((7, 13), 1, "contiguous"),
    ((3, 5, 7, 9), 1, "contiguous"),
    ((3, 5, 7, 9), 1, "channels_last"),
    ((5, 37), -1, "noncontig"),
    ((4, 8, 4, 4), 1, "channels_last"),
]
BOTH = backend_devices("triton", "cuda")


def _x(shape, layout, dtype, device, scale=1.0):
    x = torch.randn(shape) * scale
    return make_layout(x, layout).to(device=device, dtype=dtype).requires_grad_(True) \
        if layout != "contiguous" else leaf(x, dtype, device)


@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize("shape,dim,layout", OUT_CASES)
@pytest.mark.parametrize("backend,device", BOTH)
@pytest.mark.parametrize("act", OUT_ACTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_act_out_act(backend, device, dtype, act, shape, dim, layout, has_bias, seed):
    x = _x(shape, layout, dtype, device)
    b = leaf(torch.randn(shape[dim]), dtype, device) if has_bias else None

    def term_sizes(refs, gy):
        # db sums gy * act'(y) over all but dim, terms of both signs: its rounding (bf16 act'
        # read off a rounded y) scales with the terms' magnitudes, not with the sum
        y = R.bias_act(refs[0], refs[1], act, dim)
        d = 1 - y * y if act == "tanh" else y * (1 - y)
        red = [i for i in range(y.dim()) if i != dim % y.dim()]
        return {"bias": (gy.abs() * d).sum(red).norm().item()}

    run_pair(backend, lambda x, b: ops.bias_act(x, b, act, dim), lambda x, b: R.bias_act(x, b, act, dim),
             [x, b], dtype, device, seed, ["x", "bias"], grad_floors=term_sizes)


@pytest.mark.parametrize("backend,device", BOTH)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", OUT_ACTS)
def test_bias_act_out_act_saturated(backend, device, dtype, act, seed):
    """|z| up to ~40: y within rounding of 0/1 (or +-1), act' read off y underflows to ~0 as in
    the reference; bf16 is left out (1 - y^2 of a bf16-rounded y near 1 has no correct digits)."""
    x = leaf(torch.randn(6, 9, 5) * 12, dtype, device)
    b = leaf(torch.randn(9), dtype, device)
    run_pair(backend, lambda x, b: ops.bias_act(x, b, act, 1), lambda x, b: R.bias_act(x, b, act, 1),
             [x, b], dtype, device, seed, ["x", "bias"])


@pytest.mark.parametrize("backend,device", BOTH)
@pytest.mark.parametrize("act", OUT_ACTS)
def test_bias_act_out_act_nan(backend, device, act):
    """A NaN input gives NaN exactly where the reference has it, forward and backward (dx, db)."""
    x0 = torch.randn(4, 6, 5)
    x0[1, 2, 3] = float("nan")
    x0[3, 0, 0] = float("nan")
    b0 = torch.randn(6)
    x, b = leaf(x0, torch.float32, device), leaf(b0, torch.float32, device)
    with ops.use_backend(backend):
        y = ops.bias_act(x, b, act, 1)
    xr, br = leaf(x0.double()), leaf(b0.double())
    yr = R.bias_act(xr, br, act, 1)
    g = torch.randn(y.shape)
    y.backward(g.to(device))
    yr.backward(g.double())
    for name, a, r in (("y", y, yr), ("dx", x.grad, xr.grad), ("db", b.grad, br.grad)):
        a = a.detach().double().cpu()
        assert torch.equal(a.isnan(), r.isnan()), name
        ok = ~r.isnan()
        assert torch.allclose(a[ok], r[ok].detach(), rtol=1e-5, atol=1e-6), name


@pytest.mark.parametrize("backend", ["reference"] + only("triton") + only("cuda"))
def test_bias_act_bad_activation(backend):
    x, b = torch.randn(3, 4), torch.randn(4)
    with ops.use_backend(backend):
        for bad in ("relu", "Tanh"):
            with pytest.raises(ValueError, match="'tanh' or 'sigmoid'"):
                ops.bias_act(x, b, bad, 1)
        if backend != "reference":  # the reference's F.leaky_relu takes any slope
            with pytest.raises(ValueError, match="'tanh' or 'sigmoid'"):
                ops.bias_act(x, b, -0.1, 1)


@pytest.mark.parametrize("backend", only("cuda") + only("triton"))
@pytest.mark.parametrize("act", OUT_ACTS)
def test_gradcheck_bias_act_out_act(backend, act):
    if backend == "triton":
        interp_only()
    x = torch.randn(3, 2, 3, 3, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)
    f = lambda a, c: ops.bias_act(a, c, act, 1)  # noqa: E731
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(f, (x, b), **GC)
        if backend == "cuda":  # bias_act_backward is differentiable (gradient penalties)
            assert torch.autograd.gradgradcheck(f, (x, b), **GC)
