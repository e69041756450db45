"""gan_loss_stats = gan_loss, then gan_stats with that loss as the G loss: the G step's loss and
the iteration's metrics as one op. Every backend against the float64 reference (loss and
gradient) and against its own two ops (loss, gradient and stats, bit for bit: the Triton form
runs the same arithmetic in one launch); every kind, both reductions, the three target forms, one
and several blocks, empty logits; NaN; bad arguments; the traced (torch.compile) form; the
engine's use of it (the same training and metrics as the two ops)."""
from __future__ import annotations

import warnings

import pytest
import torch

from fastgan import ops
from fastgan.benchmark.kernel_count import count_work
from ops_harness import (HAS_EXT, R, available, check, gan_loss_scale, leaf, need_gpu_backend,
                         tolerance)

BACKENDS = [pytest.param("reference", id="reference"),
            pytest.param("triton", id="triton", marks=pytest.mark.skipif(
                not available("triton", "cpu"), reason="CPU tensors need TRITON_INTERPRET=1")),
            pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
                not HAS_EXT, reason="fastgan._C is not available"))]
KINDS = ["bce", "lsgan", "hinge", "linear"]


def _inputs(n, gen, dtype=torch.float32, stats_dtype=torch.float32):
    z = (torch.randn(n, 1, generator=gen) * 4).to(dtype)
    both = torch.randn(2 * 7, 1, generator=gen) * 3       # D's [real; fake] logits
    loss_d = torch.rand((), generator=gen) + 0.5
    stats = (torch.rand(5, generator=gen) * 10).to(stats_dtype)
    return z, both[:7], both[7:], loss_d, stats


def _target(form, n, gen):
    if form == "float":
        return 0.9
    if form == "tensor":
        return torch.tensor(1.0)
    return torch.randint(0, 2, (n, 1), generator=gen).float()   # per-element targets


def _two_ops(logits, target, kind, reduction, weight, stats, loss_d, real, fake):
    loss = ops.gan_loss(logits, target, kind, reduction, weight)
    with torch.no_grad():
        ops.gan_stats(stats, loss_d, loss.detach(), real, fake)
    return loss


def _run(fn, backend, z0, target, kind, reduction, weight, stats, loss_d, real, fake, go):
    z = leaf(z0)
    with ops.use_backend(backend):
        loss = fn(z, target, kind, reduction, weight, stats, loss_d, real, fake)
        loss.backward(go)
    return loss.detach(), z.grad


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("n,form", [(1, "float"), (7, "tensor"), (64, "per"), (3000, "per"),
                                    (3000, "float")], ids=lambda v: str(v))
def test_equals_its_two_ops_and_the_reference(backend, kind, reduction, n, form, seed):
    gen = torch.Generator().manual_seed(seed)
    z0, real, fake, loss_d, stats0 = _inputs(n, gen)
    target = _target(form, n, gen)
    go = torch.rand((), generator=gen) + 0.5       # a grad_output that is not 1
    fused_stats, two_stats = stats0.clone(), stats0.clone()
    loss, grad = _run(ops.gan_loss_stats, backend, z0, target, kind, reduction, 0.5, fused_stats,
                      loss_d, real, fake, go)
    loss2, grad2 = _run(_two_ops, backend, z0, target, kind, reduction, 0.5, two_stats, loss_d,
                        real, fake, go)
    # the same arithmetic as the backend's two ops, bit for bit
    assert torch.equal(loss, loss2) and torch.equal(grad, grad2), (loss, loss2)
    assert torch.equal(fused_stats, two_stats), (fused_stats, two_stats)
    # and the float64 reference
    zr = leaf(z0.double())
    tr = target.double() if torch.is_tensor(target) else target
    lr = R.gan_loss(zr, tr, kind, reduction, 0.5)
    lr.backward(go.double())
    tol = tolerance(backend, "cpu", torch.float32)
    scale = gan_loss_scale(kind, zr, tr, reduction, 0.5)
    check("loss", loss, lr, tol, seed, scale=scale)
    # a gradient element near zero (s ~ t) is a difference of O(weight * go / n) terms: held
    # relative to that size (seed 4233655483: lsgan, one logit, 1.4e-3 of a tiny gradient)
    gsize = 0.5 * go.item() * (1.0 / n if reduction == "mean" else 1.0) * n ** 0.5
    check("dlogits", grad, zr.grad, tol, seed, scale=gsize)
    sig = torch.sigmoid(torch.cat([real, fake], 1).double()).mean(0)
    want = stats0.double() + torch.cat([loss_d.double().view(1), lr.detach().view(1), sig,
                                        torch.ones(1, dtype=torch.float64)])
    check("stats", fused_stats, want, 1e-5, seed)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,stats_dtype", [(torch.bfloat16, torch.float32),
                                               (torch.float64, torch.float64)], ids=str)
def test_dtypes(backend, dtype, stats_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    z0, real, fake, loss_d, stats0 = _inputs(33, gen, dtype, stats_dtype)
    real, fake = real.to(dtype), fake.to(dtype)
    go = torch.ones((), dtype=dtype)
    a, b = stats0.clone(), stats0.clone()
    out = _run(ops.gan_loss_stats, backend, z0, 1.0, "bce", "mean", 1.0, a, loss_d, real, fake, go)
    want = _run(_two_ops, backend, z0, 1.0, "bce", "mean", 1.0, b, loss_d, real, fake, go)
    assert out[0].dtype == dtype and a.dtype == stats_dtype
    assert all(torch.equal(x, y) for x, y in zip(out, want)) and torch.equal(a, b), (a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_grad_and_empty_logits(backend, seed):
    gen = torch.Generator().manual_seed(seed)
    z, real, fake, loss_d, stats0 = _inputs(9, gen)
    for logits in (z, z[:0]):
        a, b = stats0.clone(), stats0.clone()
        with torch.no_grad(), ops.use_backend(backend):
            loss = ops.gan_loss_stats(logits, 1.0, "bce", "mean", 1.0, a, loss_d, real, fake)
            want = _two_ops(logits, 1.0, "bce", "mean", 1.0, b, loss_d, real, fake)
        assert torch.equal(loss, want) or (loss.isnan() and want.isnan())
        assert torch.equal(a[[0, 2, 3, 4]], b[[0, 2, 3, 4]])
        assert torch.equal(a[1], b[1]) or (a[1].isnan() and b[1].isnan())
    assert a[1].isnan() and torch.isfinite(a[[0, 2, 3, 4]]).all()   # the mean over no logits


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_goes_where_it_belongs(backend):
    z, one = torch.randn(8, 1), torch.ones(())
    bad = z.clone()
    bad[3] = float("nan")
    with ops.use_backend(backend):
        s = torch.zeros(5)
        loss = ops.gan_loss_stats(bad, 1.0, "bce", "mean", 1.0, s, one, z[:4], z[4:])
        assert loss.isnan() and s[1].isnan() and torch.isfinite(s[[0, 2, 3, 4]]).all(), s
        s = torch.zeros(5)
        loss = ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, s, one, bad[:4], z[4:])
        assert torch.isfinite(loss) and s[2].isnan() and torch.isfinite(s[[0, 1, 3, 4]]).all()
        s = torch.zeros(5)
        ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, s, torch.tensor(float("nan")), z, z)
        assert s[0].isnan() and torch.isfinite(s[1:]).all(), s


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(backend):
    z, one = torch.randn(4, 1), torch.ones(())
    with ops.use_backend(backend):
        with pytest.raises(ValueError, match="5 elements"):
            ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, torch.zeros(4), one, z, z)
        with pytest.raises(ValueError, match="loss_d must have one element"):
            ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, torch.zeros(5), z, z, z)
        with pytest.raises(ValueError, match="kind"):
            ops.gan_loss_stats(z, 1.0, "wasserstein", "mean", 1.0, torch.zeros(5), one, z, z)


@pytest.mark.parametrize("backend", BACKENDS)
def test_launches(backend):
    """Triton: the loss kernel adds the metrics (one launch; the finalize kernel adds them when
    the logits take several blocks); cuda: its one operator; the reference: its two ops."""
    one = torch.ones(())
    for n, want_triton in ((64, {"triton._gan_loss_kernel": 1}),
                           (3000, {"triton._gan_loss_kernel": 1,
                                   "triton._gan_loss_finalize_kernel": 1})):
        z = torch.randn(n, 1).requires_grad_()
        s = torch.zeros(5)

        def call():
            ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, s, one, z[:8].detach(), z[8:].detach())
        with ops.use_backend(backend):
            call()
            by_op = count_work(call)["by_op"]
        by_op.pop("aten.fill_", None)   # the harness's NaN poison of allocations
        if backend == "triton":
            assert by_op == want_triton
        elif backend == "cuda":   # the loss kernel adds the metrics (csrc/cuda/gan_loss.cu)
            assert by_op == {"fastgan.gan_loss_stats.default": 1}
        else:
            with ops.use_backend(backend):
                two = count_work(lambda: _two_ops(z, 1.0, "bce", "mean", 1.0, s, one,
                                                  z[:8].detach(), z[8:].detach()))["by_op"]
            two.pop("aten.fill_", None)
            assert by_op == two


def test_cuda_operator_schema_and_fallbacks(seed):
    """fastgan::gan_loss_stats: schema, fake, autograd; logits in another dtype than stats, and
    a target that needs grad, run the two ops."""
    if not HAS_EXT:
        pytest.skip("fastgan._C is not available")
    from torch.library import opcheck
    gen = torch.Generator().manual_seed(seed)
    z, real, fake, loss_d, stats = _inputs(12, gen)
    opcheck(torch.ops.fastgan.gan_loss_stats.default,
            (z.requires_grad_(), None, 1.0, "bce", "mean", 1.0, stats, loss_d, real, fake),
            test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
    with pytest.raises(RuntimeError, match="must have stats' dtype"):
        torch.ops.fastgan.gan_loss_stats(z.double(), None, 1.0, "bce", "mean", 1.0, stats,
                                         loss_d, real, fake)
    for logits, target in ((z.detach().double(), 1.0),
                           (z.detach(), torch.full((12, 1), 0.5, requires_grad=True))):
        a, b = stats.clone(), stats.clone()
        with ops.use_backend("cuda"), warnings.catch_warnings():
            warnings.simplefilter("ignore")   # gan_loss's one note on a target with grad
            loss = ops.gan_loss_stats(logits, target, "bce", "mean", 1.0, a, loss_d, real, fake)
            want = _two_ops(logits, target, "bce", "mean", 1.0, b, loss_d, real, fake)
        assert torch.equal(loss.detach(), want.detach()) and torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_traces_it(backend, seed):
    """fullgraph torch.compile (aot_eager): the traced form is the two custom ops."""
    gen = torch.Generator().manual_seed(seed)
    z0, real, fake, loss_d, stats0 = _inputs(10, gen)
    a, b = stats0.clone(), stats0.clone()

    def fn(z, stats):
        return ops.gan_loss_stats(z, 1.0, "lsgan", "sum", 0.5, stats, loss_d, real, fake)

    torch._dynamo.reset()
    with ops.use_backend(backend):
        z = leaf(z0)
        torch.compile(fn, backend="aot_eager", fullgraph=True)(z, a).backward()
    want = _run(_two_ops, backend, z0, 1.0, "lsgan", "sum", 0.5, b, loss_d, real, fake,
                torch.ones(()))
    torch.testing.assert_close(z.grad, want[1], rtol=1e-6, atol=0)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"])
def test_cuda_graph_capture(backend, seed):
    """Captured once, replayed twice on new logits: loss, gradient and metrics on the device."""
    need_gpu_backend(backend, "gan_stats")
    d = "cuda"
    z, both = torch.randn(64, 1, device=d, requires_grad=True), torch.randn(16, 1, device=d)
    ld, stats = torch.rand((), device=d), torch.zeros(5, device=d)
    with ops.use_backend(backend):
        def step():
            z.grad = None
            ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, stats, ld, both[:8],
                               both[8:]).backward()
        step()                                        # warm-up (compiles)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            step()
    stats.zero_()
    want = torch.zeros(5, dtype=torch.float64)
    for _ in range(2):
        with torch.no_grad():
            z.copy_(torch.randn(64, 1, device=d))
            both.copy_(torch.randn(16, 1, device=d))
        g.replay()
        zr = z.detach().double().cpu()
        lr = R.gan_loss(zr, 1.0, "bce", "mean", 1.0)
        sig = torch.sigmoid(both.double().cpu().view(2, 8)).mean(1)
        want += torch.cat([ld.double().cpu().view(1), lr.view(1), sig, torch.ones(1).double()])
    torch.testing.assert_close(stats.cpu().double(), want, rtol=1e-5, atol=0)
