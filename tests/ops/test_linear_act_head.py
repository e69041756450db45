"""linear_act_head = linear_act(linear_act(x, W, b, slope), w, c): a hidden layer and its linear
head (a discriminator's logits) as one op. Parity of every backend against the float64
reference (the composition): forward and every gradient (dx, dW, db, dw, dc), every subset of
them, odd shapes on both sides of the matmul's orientation switch, a head of two outputs (the
unfused fallback); the Triton backward in one launch that writes no dY; NaN; bad shapes; the
module (nn.Sequential's state dict and outputs)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from fastgan import ops
from fastgan.benchmark.kernel_count import count_work
from fastgan.nn import FusedLinearAct
from fastgan.nn.linear import LinearHeadSequential
from ops_harness import R, backend_devices, check, check_floored, leaf, tolerance

ALL = backend_devices("triton", "cuda") + [pytest.param("reference", "cpu", id="reference-cpu")]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]
# (N, K, M, H): N < 64 computes the transposed products, N >= 64 the natural ones
SHAPES = [(1, 3, 1, 1), (7, 33, 70, 1), (65, 40, 19, 1), (130, 9, 66, 1), (9, 20, 30, 2)]
SLOPES = [None, 0.0, 0.2, "tanh", "sigmoid"]


def _reference(x, w, b, slope, hw, hb):
    return R.linear_act(R.linear_act(x, w, b, slope), hw, hb, None)


def case(backend, device, dtype, N, K, M, H, slope, seed, need=(True,) * 5, bias=True):
    """Compare forward and the gradients ``need`` says (x, W, b, w, c) with the reference."""
    x0 = torch.randn(N, K, device=device).to(dtype)
    w0 = (torch.randn(M, K, device=device) / K ** 0.5).to(dtype)
    b0 = (torch.randn(M, device=device) * 0.5).to(dtype)
    hw0 = (torch.randn(H, M, device=device) / M ** 0.5).to(dtype)
    hb0 = torch.randn(H, device=device).to(dtype)
    ts = [leaf(t, requires_grad=n) for t, n in zip((x0, w0, b0, hw0, hb0), need)]
    if not bias:
        ts[2] = ts[4] = None
    x, w, b, hw, hb = ts
    with ops.use_backend(backend):
        y = ops.linear_act_head(x, w, b, slope, hw, hb)
    assert y.shape == (N, H) and y.dtype == dtype
    refs = [None if t is None else leaf(t.detach().double(), requires_grad=t.requires_grad)
            for t in ts]
    ref = _reference(refs[0], refs[1], refs[2], slope, refs[3], refs[4])
    tol = tolerance(backend, device, dtype, matmul=True)
    if dtype == torch.bfloat16:   # two layers, each rounding to bf16: twice one layer's bound
        tol *= 2
    h = R.linear_act(x0.double(), w0.double(), b0.double(), slope).abs()
    # the logits held relative to the size of their terms (one logit can cancel to near zero)
    terms = h @ hw0.double().abs().t() + hb0.double().abs()
    check("y", y, ref, tol, seed, scale=terms.norm().item())
    if not any(t is not None and t.requires_grad for t in ts):
        return
    g = torch.randn(N, H, device=device).to(dtype)
    with ops.use_backend(backend):
        y.backward(g)
    ref.backward(g.double())
    # Each gradient is a sum of terms (dz = g w act'(h), |act'| <= 1): held relative to the
    # size of its terms, as rounding is (a sum that cancels has no relative digits to keep).
    a = g.double().abs()
    dz = a @ hw0.double().abs()
    scales = ((dz @ w0.double().abs()).norm(), (dz.t() @ x0.double().abs()).norm(),
              dz.sum(0).norm(), (a.t() @ h).norm(), a.sum(0).norm())
    for name, t, r, sc in zip(("dx", "dW", "db", "dw", "dc"), ts, refs, scales):
        if t is not None and t.requires_grad:
            check(name, t.grad, r.grad, tol, seed, scale=sc.item())


@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("backend,device", ALL)
def test_parity(backend, device, shape, dtype, slope, seed):
    case(backend, device, dtype, *shape, slope, seed)


@pytest.mark.parametrize("need", [n for n in itertools.product((False, True), repeat=5)
                                  if any(n)], ids=lambda n: "".join("xWbwc"[i] for i, k in
                                                                   enumerate(n) if k))
@pytest.mark.parametrize("backend,device", backend_devices("triton"))
def test_every_subset_of_gradients(backend, device, need, seed):
    """Whatever needs no gradient is neither computed nor returned; the rest exact."""
    case(backend, device, torch.float64, 65, 20, 33, 1, 0.2, seed, need=need)
    case(backend, device, torch.float64, 6, 20, 33, 1, "tanh", seed, need=need)


@pytest.mark.parametrize("backend,device", ALL)
def test_without_biases(backend, device, seed):
    case(backend, device, torch.float32, 70, 33, 65, 1, 0.2, seed, bias=False)


@pytest.mark.parametrize("backend,device", backend_devices("triton"))
def test_triton_backward_is_one_launch(backend, device):
    x = torch.randn(40, 30, device=device, requires_grad=True)
    w = torch.randn(50, 30, device=device, requires_grad=True)
    b = torch.randn(50, device=device, requires_grad=True)
    hw = torch.randn(1, 50, device=device, requires_grad=True)
    hb = torch.randn(1, device=device, requires_grad=True)
    with ops.use_backend(backend):
        y = ops.linear_act_head(x, w, b, 0.2, hw, hb)
        g = torch.randn_like(y)
        c = count_work(lambda: y.backward(g))
    launches = {k: v for k, v in c["by_op"].items() if k != "aten.fill_"}  # (the NaN poison)
    assert launches == {"triton._mm_pair_kernel": 1}, c["by_op"]


@pytest.mark.parametrize("backend,device", backend_devices("triton"))
@pytest.mark.parametrize("n", [70, 6])
def test_nan_propagates(backend, device, n):
    """A NaN in x or in the incoming gradient reaches exactly the outputs it reaches in the
    reference (never masked away, never spread further)."""
    x0 = torch.randn(n, 9, device=device)
    x0[3, 2] = float("nan")
    g = torch.randn(n, 1, device=device)
    g[1] = float("nan")
    ins = (x0, torch.randn(33, 9, device=device), torch.randn(33, device=device),
           torch.randn(1, 33, device=device), torch.randn(1, device=device))
    ts = [leaf(t) for t in ins]
    refs = [leaf(t.double()) for t in ins]
    with ops.use_backend(backend):
        y = ops.linear_act_head(*ts[:3], 0.2, *ts[3:])
        y.backward(g)
    ref = _reference(*refs[:3], 0.2, *refs[3:])
    ref.backward(g.double())
    assert torch.isnan(y[3]).all()
    assert torch.equal(torch.isnan(y), torch.isnan(ref))
    for name, t, r in zip(("dx", "dW", "db", "dw", "dc"), ts, refs):
        assert torch.isnan(r.grad).any(), name
        assert torch.equal(torch.isnan(t.grad), torch.isnan(r.grad)), name


def test_bad_shapes_are_one_line_errors():
    x, w, hw = torch.randn(4, 6), torch.randn(5, 6), torch.randn(1, 4)
    with pytest.raises(ValueError, match=r"linear_act_head: .* do not fit: \(4, 6\), \(5, 6\), "
                                         r"\(1, 4\)"):
        ops.linear_act_head(x, w, None, 0.2, hw)
    with pytest.raises(ValueError, match="do not fit"):
        ops.linear_act_head(torch.randn(4, 7), w, None, 0.2, torch.randn(1, 5))


@pytest.mark.parametrize("backend,device", ALL)
def test_module_equals_sequential(backend, device, seed):
    """LinearHeadSequential: nn.Sequential's state dict, outputs and gradients."""
    torch.manual_seed(seed)
    layers = [FusedLinearAct(20, 31, slope=0.2), FusedLinearAct(31, 17, slope=0.2),
              FusedLinearAct(17, 1)]
    seq = nn.Sequential(*layers).to(device)
    fused = LinearHeadSequential(*[FusedLinearAct(l.in_features, l.out_features, l.slope)
                                   for l in layers]).to(device)
    fused.load_state_dict(seq.state_dict())
    assert list(fused.state_dict()) == list(seq.state_dict())
    x = torch.randn(9, 20, device=device)
    with ops.use_backend(backend):
        a, b = seq(x), fused(x)
        a.sum().backward()
        b.sum().backward()
    tol = tolerance(backend, device, torch.float32, matmul=True)
    check_floored("y", b, a, tol, seed)
    for (n, p), q in zip(seq.named_parameters(), fused.parameters()):
        check_floored(n, q.grad, p.grad, tol, seed)


@pytest.mark.parametrize("backend,device", backend_devices("triton"))
def test_custom_op_path(backend, device, seed, monkeypatch):
    """The torch.library custom ops (the torch.compile path): schema, fake and autograd
    registration (opcheck), and the same parity through them."""
    from torch.library import opcheck

    from fastgan.backends.triton import _policy
    monkeypatch.setattr(_policy, "EAGER_FAST_PATH", False)
    x = torch.randn(9, 5, device=device, requires_grad=True)
    w = torch.randn(6, 5, device=device, requires_grad=True)
    hw = torch.randn(1, 6, device=device, requires_grad=True)
    tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    opcheck(torch.ops.fastgan_triton.linear_act_head.default,
            (x, w, torch.randn(6, device=device), 2, 0.2, hw, torch.randn(1, device=device)),
            test_utils=tests)
    opcheck(torch.ops.fastgan_triton.linear_act_head.default, (x, w, None, 3, 0.0, hw, None),
            test_utils=tests)
    case(backend, device, torch.float32, 70, 33, 65, 1, 0.2, seed)
    case(backend, device, torch.float32, 7, 33, 65, 1, "tanh", seed,
         need=(False,) * 3 + (True,) * 2)
