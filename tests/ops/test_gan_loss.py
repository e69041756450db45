"""gan_loss = BCE-with-logits, LSGAN on sigmoid(logits), hinge or linear, mean or sum: parity of every backend
against the float64 reference, the loss and its gradient (the harness: ops_harness.py). The case
lists are per backend (the Triton interpreter is slow)."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import (DTYPES, GC, INTERP, R, backend_devices, check, gan_loss_scale,
                         interp_only, leaf, noncontig, only, run_pair, tolerance)

TRITON = backend_devices("triton")
CUDA = backend_devices("cuda")


# ------------------------------------------------------------------------------ Triton cases

KINDS = ["bce", "lsgan", "hinge", "linear"]


def _logits(shape, device, dtype):
    z = torch.randn(*shape, device=device) * 8
    flat = z.view(-1)
    flat[0] = 100.0          # the stability range of the contract
    if flat.numel() > 1:
        flat[1] = -100.0
    if flat.numel() > 3:
        flat[2], flat[3] = 30.0, -30.0
    if flat.numel() > 6:
        flat[4], flat[5], flat[6] = 1.0, -1.0, 0.5   # hinge's kinks and its margin
    return z.to(dtype)


GAN_TARGETS = [0.0, 1.0, 0.9, "tensor0.9", "tensor0.0"]


def gan_loss_case(backend, device, dtype, shape, kind, reduction, target, seed, layout=None,
                  weight=1.0):
    z0 = _logits(shape, device, dtype)
    if layout:
        z0 = noncontig(z0, layout)
    if isinstance(target, str):
        t, tr = torch.tensor(float(target[6:]), device=device), torch.tensor(float(target[6:]), dtype=torch.float64)
    else:
        t, tr = target, target
    z = leaf(z0)
    with ops.use_backend(backend):
        loss = ops.gan_loss(z, t, kind, reduction, weight)
    assert loss.shape == () and loss.dtype == dtype
    go = torch.rand((), device=device) + 0.5       # a grad_output that is not 1
    loss.backward(go.to(dtype))
    zr = leaf(z0.double().cpu())
    lr = R.gan_loss(zr, tr, kind, reduction, weight)
    lr.backward(go.double().cpu())
    tol = tolerance(backend, device, dtype)
    scale = gan_loss_scale(kind, zr, tr, reduction, weight)
    check("loss", loss, lr, tol, seed, scale=scale)
    check("dlogits", z.grad, zr.grad, tol, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("target", GAN_TARGETS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1,), (7, 1), (3000,)], ids=lambda s: "x".join(map(str, s)))
def test_gan_loss(backend, device, shape, kind, reduction, target, seed):
    gan_loss_case(backend, device, torch.float32, shape, kind, reduction, target, seed)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("kind", KINDS)
def test_gan_loss_bf16(backend, device, kind, seed):
    gan_loss_case(backend, device, torch.bfloat16, (64, 1), kind, "mean", 0.9, seed)


WEIGHTS = [0.25, 3.0, -1.5]


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(7, 1), (3000,)], ids=lambda s: "x".join(map(str, s)))
def test_gan_loss_weight(backend, device, shape, kind, reduction, weight, seed):
    # (3000,) takes the finalize kernel's path: the weight is in both scales
    gan_loss_case(backend, device, torch.float32, shape, kind, reduction, "tensor0.9", seed,
                  weight=weight)


@pytest.mark.parametrize("backend,device", TRITON)
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("kind", KINDS)
def test_gan_loss_weight_bf16(backend, device, kind, weight, seed):
    gan_loss_case(backend, device, torch.bfloat16, (64, 1), kind, "mean", 0.9, seed, weight=weight)


@pytest.mark.parametrize("backend,device", TRITON)
def test_gan_loss_noncontiguous(backend, device, seed):
    gan_loss_case(backend, device, torch.float32, (20, 30), "bce", "mean", 1.0, seed, layout="t")


@pytest.mark.parametrize("backend", only("triton"))
def test_gan_loss_per_element_target(backend, seed):
    if not INTERP:
        pytest.skip("interpreter run")
    z, t = torch.randn(5, 3), torch.rand(5, 3)
    with ops.use_backend(backend):
        loss = ops.gan_loss(leaf(z), t, "bce", "sum")
    check("loss", loss, R.gan_loss(z.double(), t.double(), "bce", "sum"), 1e-5, seed)


@pytest.mark.parametrize("backend", only("triton"))
def test_gan_loss_bad_args(backend):
    with ops.use_backend(backend):
        with pytest.raises(ValueError, match="kind"):
            ops.gan_loss(torch.randn(4), 1.0, "wasserstein", "mean")
        with pytest.raises(ValueError, match="reduction"):
            ops.gan_loss(torch.randn(4), 1.0, "bce", "max")


@pytest.mark.parametrize("backend", only("triton"))
def test_gradcheck_gan_loss(backend):
    interp_only()
    z = (torch.randn(7, dtype=torch.float64) * 3).requires_grad_()
    with ops.use_backend(backend):
        for kind in KINDS:
            for red in ("mean", "sum"):
                assert torch.autograd.gradcheck(lambda a: ops.gan_loss(a, 0.9, kind, red), (z,), **GC)


# -------------------------------------------------------------------------------- cuda cases

LOSS_SHAPES = [(1,), (64, 1), (7, 3, 5), (33,), (2, 1, 30, 30)]


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("target", ["one", "zero", "0.9", "tensor0d", "tensor_full"])
def test_gan_loss_dtypes(backend, device, dtype, kind, reduction, shape, target, seed):
    logits = leaf(torch.randn(shape) * 3, dtype, device)
    if target == "one":
        t = 1.0
    elif target == "zero":
        t = 0.0
    elif target == "0.9":
        t = 0.9
    elif target == "tensor0d":
        t = torch.tensor(0.9, device=device)
    else:
        t = torch.rand(shape, device=device)
    t_ref = t.double().cpu() if isinstance(t, torch.Tensor) else t
    run_pair(backend, lambda l: ops.gan_loss(l, t, kind, reduction),
             lambda l: R.gan_loss(l, t_ref, kind, reduction),
             [logits], dtype, device, seed, ["logits"])


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("target", ["0.9", "tensor_full"])
def test_gan_loss_weight_dtypes(backend, device, dtype, kind, reduction, weight, target, seed):
    shape = (7, 3, 5)
    logits = leaf(torch.randn(shape) * 3, dtype, device)
    t = 0.9 if target == "0.9" else torch.rand(shape, device=device)
    t_ref = t.double().cpu() if isinstance(t, torch.Tensor) else t
    run_pair(backend, lambda l: ops.gan_loss(l, t, kind, reduction, weight),
             lambda l: R.gan_loss(l, t_ref, kind, reduction, weight),
             [logits], dtype, device, seed, ["logits"])


@pytest.mark.parametrize("backend,device", CUDA)
@pytest.mark.parametrize("kind", KINDS)
def test_gan_loss_extreme_logits(backend, device, kind, seed):
    logits = leaf(torch.cat([torch.randn(61) * 3, torch.tensor([-100.0, 100.0, 0.0, 88.0, -88.0,
                                                                1.0, -1.0])]),   # hinge's kinks
                  torch.float32, device)
    for t in (0.0, 1.0):
        run_pair(backend, lambda l: ops.gan_loss(l, t, kind, "mean"),
                 lambda l: R.gan_loss(l, t, kind, "mean"),
                 [logits], torch.float32, device, seed, ["logits"])


@pytest.mark.parametrize("backend", only("cuda"))
def test_gan_loss_empty_mean_is_nan(backend):
    with ops.use_backend(backend):
        assert torch.isnan(ops.gan_loss(torch.randn(0), 1.0, "bce", "mean"))
        assert ops.gan_loss(torch.randn(0), 1.0, "bce", "sum").item() == 0.0


@pytest.mark.parametrize("backend", only("cuda"))
def test_gan_loss_double_backward(backend, seed):
    # create_graph through the loss recomputes the gradient with differentiable ops
    l = torch.randn(9, dtype=torch.float64, requires_grad=True)
    with ops.use_backend(backend):
        for kind in KINDS:
            torch.autograd.gradgradcheck(lambda x: ops.gan_loss(x, 0.3, kind, "mean"), (l,))
            # the weight is in the recomputed gradient too
            torch.autograd.gradgradcheck(lambda x: ops.gan_loss(x, 0.3, kind, "sum", -1.5), (l,))
            x = l.detach().requires_grad_()
            (g,) = torch.autograd.grad(ops.gan_loss(x, 0.3, kind, "mean", 3.0), x,
                                       create_graph=True)
            (gr,) = torch.autograd.grad(R.gan_loss(x, 0.3, kind, "mean", 3.0), x,
                                        create_graph=True)
            torch.testing.assert_close(g, gr, rtol=1e-12, atol=1e-15)


# ------------------------------------------------------------------- hinge / linear, every backend

ALL = only("triton") + only("cuda") + [pytest.param("reference", id="reference")]


def _away_from_kinks(n, scale=3.0):
    # finite differences across relu's kink are not its subgradient: keep |l +- 1| > 1e-2
    l = torch.randn(n, dtype=torch.float64) * scale
    return torch.where((l.abs() - 1).abs() < 1e-2, l + 0.1, l)


@pytest.mark.parametrize("backend", ALL)
def test_hinge_formulas(backend, seed):
    """The StyleGAN2/StudioGAN hinge: D real mean(relu(1 - l)), D fake mean(relu(1 + l)), a 0/1
    target tensor picks per row, G -mean(l) (kind linear, target 1); written out, not via R."""
    if backend == "triton":
        interp_only()
    l = torch.tensor([[-3.0], [-1.0], [-0.25], [0.0], [0.5], [1.0], [2.5]], dtype=torch.float64)
    rows = torch.tensor([[1.0], [0.0], [1.0], [1.0], [0.0], [0.0], [1.0]], dtype=torch.float64)
    expect_rows = torch.where(rows > 0.5, torch.relu(1 - l), torch.relu(1 + l))
    with ops.use_backend(backend):
        for got, want in [(ops.gan_loss(l, 1.0, "hinge", "mean"), torch.relu(1 - l).mean()),
                          (ops.gan_loss(l, 0.0, "hinge", "mean"), torch.relu(1 + l).mean()),
                          (ops.gan_loss(l, 0.0, "hinge", "sum"), torch.relu(1 + l).sum()),
                          (ops.gan_loss(l, rows, "hinge", "mean"), expect_rows.mean()),
                          (ops.gan_loss(l, 1.0, "linear", "mean"), -l.mean()),
                          (ops.gan_loss(l, torch.tensor(0.0), "linear", "sum"), l.sum())]:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", ["hinge", "linear"])
def test_hinge_gradients_float64(backend, kind, reduction, seed):
    """gradcheck and gradgradcheck in float64, odd shape, scalar, 0-d and per-row targets."""
    if backend == "triton":
        interp_only()
    l = _away_from_kinks(13).reshape(13, 1).requires_grad_()
    rows = (torch.rand(13, 1) > 0.5).double()
    with ops.use_backend(backend):
        for t in (1.0, 0.0, 0.3, torch.tensor(1.0, dtype=torch.float64), rows):
            f = lambda x: ops.gan_loss(x, t, kind, reduction)  # noqa: E731
            assert torch.autograd.gradcheck(f, (l,))
            if backend != "triton":   # the Triton backward is not differentiable (no R1 there)
                assert torch.autograd.gradgradcheck(f, (l,))


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_gan_loss_nan_propagates(backend, kind, reduction):
    if backend == "triton":
        interp_only()
    l = torch.tensor([0.5, float("nan"), -2.0, 3.0])
    with ops.use_backend(backend):
        for t in (1.0, 0.0, torch.tensor([1.0, 0.0, 1.0, 0.0])):
            assert torch.isnan(ops.gan_loss(l, t, kind, reduction)), (kind, t)


def test_hinge_helper():
    from fastgan.nn import losses
    l = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(losses.hinge(l, 1.0), torch.relu(1 - l).mean())
    torch.testing.assert_close(losses.hinge(l, 0.0, "sum"), torch.relu(1 + l).sum())
    torch.testing.assert_close(losses.hinge(l, 1.0, generator=True), -l.mean())


@pytest.mark.parametrize("backend", only("cuda") + only("triton"))
def test_hinge_opcheck(backend):
    ops.ensure_loaded(backend)
    if backend == "triton":
        interp_only()
        op, extra = torch.ops.fastgan_triton.gan_loss.default, (True,)
        tests = ("test_schema", "test_autograd_registration", "test_faketensor")
    else:
        from fastgan import _C
        _C._set_debug_poison(False)   # opcheck compares eager runs
        op, extra = torch.ops.fastgan.gan_loss.default, ()
        tests = ("test_schema", "test_autograd_registration", "test_faketensor",
                 "test_aot_dispatch_dynamic")
    rows = (torch.rand(8, 1) > 0.5).float()
    for args in [(torch.randn(8, 1, requires_grad=True), None, 1.0, "hinge", "mean"),
                 (torch.randn(8, 1, requires_grad=True), rows, 0.0, "hinge", "sum"),
                 (torch.randn(8, requires_grad=True), torch.tensor(1.0), 0.0, "linear", "mean")]:
        torch.library.opcheck(op, args + extra, test_utils=tests)
    # the weight argument (the last, after the triton op's need_grad)
    torch.library.opcheck(op, (torch.randn(8, 1, requires_grad=True), rows, 0.0, "lsgan", "mean")
                          + extra + (-1.5,), test_utils=tests)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("kind", KINDS)
def test_gan_loss_weight_power_of_two_is_exact(backend, kind, reduction):
    """weight = 2^k inside the op equals 2^k times the unweighted loss bit for bit, loss and
    gradient (the variants' 2 * bce, / 2, / 4 became weights on that ground); a NaN logit stays
    NaN; the empty mean is NaN whatever the weight."""
    if backend == "triton":
        interp_only()
    l0 = torch.randn(13, 1) * 4
    t = (torch.rand(13, 1) > 0.5).float()
    with ops.use_backend(backend):
        for w in (2.0, 0.5, 0.25):
            a, b = l0.clone().requires_grad_(), l0.clone().requires_grad_()
            la = ops.gan_loss(a, t, kind, reduction, w)
            lb = w * ops.gan_loss(b, t, kind, reduction)
            la.backward()
            lb.backward()
            assert torch.equal(la, lb), (w, la.item(), lb.item())
            assert torch.equal(a.grad, b.grad), w
        assert torch.isnan(ops.gan_loss(torch.tensor([0.5, float("nan")]), 1.0, kind, reduction,
                                        0.25))
        empty = ops.gan_loss(torch.randn(0), 1.0, kind, reduction, 3.0)
        assert torch.isnan(empty) if reduction == "mean" else empty.item() == 0.0


@pytest.mark.parametrize("backend", ALL)
def test_loss_helpers_pass_the_weight(backend):
    from fastgan.nn import losses
    if backend == "triton":
        interp_only()
    l = torch.randn(9, 1, dtype=torch.float64)
    with ops.use_backend(backend):
        for f, kw in [(losses.bce, {}), (losses.lsgan, {}), (losses.hinge, {}),
                      (losses.hinge, {"generator": True})]:
            torch.testing.assert_close(f(l, 1.0, weight=-1.5, **kw), -1.5 * f(l, 1.0, **kw),
                                       rtol=1e-12, atol=1e-12)
        with losses.override("hinge", generator=False):
            torch.testing.assert_close(losses.bce(l, 0.0, weight=3.0),
                                       3.0 * torch.relu(1 + l).mean(), rtol=1e-12, atol=1e-12)
