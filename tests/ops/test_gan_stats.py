"""gan_stats, ``stats += [loss_d, loss_g, mean sigmoid(real), mean sigmoid(fake), 1]``: every
backend on CPU (Triton under the interpreter) against the torch ops the engine ran before the op
(losses and count exactly, the means to float32 rounding), odd shapes, adjacent and separate
logit sets of equal or different sizes, bf16/float64 logits, float64 stats; NaN propagates, an
empty set's mean is NaN; the custom ops' schemas and fakes."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from ops_harness import HAS_EXT, INTERP, available, custom_op_namespaces, need_gpu_backend

BACKENDS = [pytest.param("reference", id="reference"),
            pytest.param("triton", id="triton", marks=pytest.mark.skipif(
                not available("triton", "cpu"), reason="CPU tensors need TRITON_INTERPRET=1")),
            pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
                not HAS_EXT, reason="fastgan._C is not available"))]


def today(stats, loss_d, loss_g, real, fake):
    """The engine's code before the op (both means through one sigmoid where sizes match), with
    float64 kept in float64 (it rounded every value to float32: ``.float()`` where ``acc`` is):
    the same ops for float32 and bfloat16."""
    def acc(t):
        return t.double() if t.dtype == torch.float64 else t.float()
    k = real.numel()
    if fake.numel() != k:
        probs = torch.stack([torch.sigmoid(acc(real)).mean(), torch.sigmoid(acc(fake)).mean()])
    else:
        probs = torch.sigmoid(acc(torch.stack([real.reshape(k), fake.reshape(k)]))).mean(1)
    dt = stats.dtype
    one = torch.ones(1, dtype=dt)
    return stats.add_(torch.cat([loss_d.view(1).to(dt), loss_g.view(1).to(dt), probs.to(dt), one]))


def _check(got, want):
    assert torch.isfinite(got).all(), got
    assert torch.equal(got[[0, 1, 4]], want[[0, 1, 4]]), (got, want)   # exact
    rtol = 1e-13 if want.dtype == torch.float64 else 2e-6
    torch.testing.assert_close(got[2:4], want[2:4], rtol=rtol, atol=0)


def _logits(n, gen, dtype=torch.float32):
    z = torch.randn(n, generator=gen) * 4
    z[:2] = torch.tensor([30.0, -30.0])[: min(2, n)]
    return z.to(dtype)


# (real shape, fake shape): one logit, odd sizes, patch maps, different sizes, many blocks
SHAPES = [((1,), (1,)), ((7, 1), (7, 1)), ((3, 1, 5, 5), (3, 1, 5, 5)), ((5,), (9,)),
          ((4100,), (4100,))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shapes", SHAPES, ids=str)
@pytest.mark.parametrize("adjacent", [False, True])
def test_matches_the_torch_ops(backend, shapes, adjacent, seed):
    gen = torch.Generator().manual_seed(seed)
    rs, fs = shapes
    if adjacent:   # [real; fake] of one D pass: fake right after real in memory
        both = _logits(torch.Size(rs).numel() + torch.Size(fs).numel(), gen)
        real, fake = both[:torch.Size(rs).numel()].view(rs), both[torch.Size(rs).numel():].view(fs)
    else:
        real, fake = _logits(torch.Size(rs).numel(), gen).view(rs), \
            _logits(torch.Size(fs).numel(), gen).view(fs)
    ld, lg = torch.rand((), generator=gen) * 3, torch.rand((), generator=gen)
    start = torch.rand(5, generator=gen)
    stats = start.clone()
    with ops.use_backend(backend):
        assert ops.gan_stats(stats, ld, lg, real, fake) is stats
        ops.gan_stats(stats, lg, ld, fake, real)                  # it accumulates
    want = today(today(start.clone(), ld, lg, real, fake), lg, ld, fake, real)
    _check(stats, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("logit_dtype", [torch.bfloat16, torch.float64])
def test_logit_and_loss_dtypes(backend, logit_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    real, fake = _logits(33, gen, logit_dtype), _logits(33, gen, logit_dtype)[:31]
    ld = torch.rand((), generator=gen, dtype=torch.float64) * 3       # rounded to float32 first
    lg = torch.rand((1,), generator=gen).to(logit_dtype)
    stats = torch.zeros(5)
    with ops.use_backend(backend):
        ops.gan_stats(stats, ld, lg, real, fake)
    _check(stats, today(torch.zeros(5), ld, lg, real, fake))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_stats(backend, seed):
    """Engine.stats follows the default dtype: float32 values added in float64."""
    gen = torch.Generator().manual_seed(seed)
    real, fake = _logits(8, gen, torch.float64), _logits(8, gen, torch.float64)
    ld, lg = torch.rand((), dtype=torch.float64, generator=gen), torch.rand((), dtype=torch.float64)
    start = torch.rand(5, dtype=torch.float64, generator=gen) * 100
    stats = start.clone()
    with ops.use_backend(backend):
        ops.gan_stats(stats, ld, lg, real, fake)
    _check(stats, today(start.clone(), ld, lg, real, fake))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_propagates_and_empty_mean_is_nan(backend):
    z = torch.randn(6)
    bad = z.clone()
    bad[3] = float("nan")
    one = torch.ones(())
    with ops.use_backend(backend):
        s = ops.gan_stats(torch.zeros(5), one, one, bad, z)
        assert torch.isnan(s[2]) and torch.isfinite(s[[0, 1, 3, 4]]).all(), s
        s = ops.gan_stats(torch.zeros(5), one, one, z, bad[:5])
        assert torch.isnan(s[3]) and torch.isfinite(s[[0, 1, 2, 4]]).all(), s
        s = ops.gan_stats(torch.zeros(5), torch.tensor(float("nan")), one, z, z)
        assert torch.isnan(s[0]) and torch.isfinite(s[1:]).all(), s
        s = ops.gan_stats(torch.zeros(5), one, one, z, z[:0])
        assert torch.isnan(s[3]) and s[4] == 1, s
        s = ops.gan_stats(torch.zeros(5), one, one, torch.tensor([float("inf"), -float("inf")]), z)
        assert s[2] == 0.5, s


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments(backend):
    z, one = torch.randn(4), torch.ones(())
    with ops.use_backend(backend):
        with pytest.raises(ValueError, match="5 elements"):
            ops.gan_stats(torch.zeros(4), one, one, z, z)
        with pytest.raises(ValueError, match="5 elements"):
            ops.gan_stats(torch.zeros(10)[::2], one, one, z, z)
        with pytest.raises(ValueError, match="loss_g must have one element"):
            ops.gan_stats(torch.zeros(5), one, z, z, z)
        with pytest.raises(TypeError, match="real_logits must be floating"):
            ops.gan_stats(torch.zeros(5), one, one, z.long(), z)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_kernel(backend):
    from fastgan.benchmark.kernel_count import count_work
    z = torch.randn(16)
    stats, one = torch.zeros(5), torch.ones(())
    with ops.use_backend(backend):
        ops.gan_stats(stats, one, one, z[:8], z[8:])      # the reference's constant 1 is made
        by_op = count_work(lambda: ops.gan_stats(stats, one, one, z[:8], z[8:]))["by_op"]
    want = {"reference": {"aten.sigmoid": 1, "aten.mean": 1, "aten.cat": 1, "aten.add_": 1},
            "cuda": {"fastgan.gan_stats.default": 1},
            "triton": {"triton._gan_stats_kernel": 1}}[backend]
    assert by_op == want


def test_opcheck_custom_ops():
    from torch.library import opcheck
    z = torch.randn(12)
    args = (torch.zeros(5), torch.ones(()), torch.ones(()), z[:6], z[6:])
    for ns in custom_op_namespaces():
        opcheck(getattr(torch.ops, ns).gan_stats.default, args,
                test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_traces_the_op(backend, seed):
    """fullgraph torch.compile (aot_eager: the fakes and functionalization, no codegen)."""
    gen = torch.Generator().manual_seed(seed)
    z, ld, lg = _logits(10, gen), torch.rand(()), torch.rand(())
    stats = torch.zeros(5)

    def fn(stats, ld, lg, z):
        return ops.gan_stats(stats, ld, lg, z[:5], z[5:])

    torch._dynamo.reset()
    with ops.use_backend(backend):
        torch.compile(fn, backend="aot_eager", fullgraph=True)(stats, ld, lg, z)
    _check(stats, today(torch.zeros(5), ld, lg, z[:5], z[5:]))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"])
def test_cuda_graph_capture(backend, seed):
    """Captured once, replayed twice on new logits: it accumulates on the device."""
    need_gpu_backend(backend, "gan_stats")
    z, ld, lg = torch.randn(64, device="cuda"), torch.rand((), device="cuda"), torch.ones((), device="cuda")
    stats = torch.zeros(5, device="cuda")
    with ops.use_backend(backend):
        ops.gan_stats(stats, ld, lg, z[:32], z[32:])                # warm-up (compiles)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            ops.gan_stats(stats, ld, lg, z[:32], z[32:])
    stats.zero_()
    want = torch.zeros(5)
    for _ in range(2):
        z.copy_(torch.randn(64, device="cuda"))
        g.replay()
        today(want, ld.cpu(), lg.cpu(), z[:32].cpu(), z[32:].cpu())
    _check(stats.cpu(), want)
