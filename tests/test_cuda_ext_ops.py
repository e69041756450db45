"""Parity of the ``cuda`` backend (the compiled extension fastgan._C) against the reference.

Every op, forward and every gradient, on odd shapes (1-row, 1-column, sizes that are multiples of
no block), non-contiguous and channels_last inputs, slopes None / 0 / 0.01 / 0.2, float32,
bfloat16 and float64. The reference runs in float64 on the upcast inputs; errors are relative
(||out - ref|| / ||ref||): < 1e-5 for float32, < 5e-3 for bfloat16. Fresh random inputs each run
(the seed is printed: pytest shows it for a failing test). While the tests run, every output and
workspace the ops allocate is filled with NaN first (fastgan._C._set_debug_poison), and every
comparison is preceded by an isfinite check, so an element a kernel forgets to write fails.

The CPU kernels run everywhere; the same tests on CUDA tensors are marked ``gpu``. Also here:
torch.library.opcheck on each operator, gradcheck / gradgradcheck in float64, torch.compile
(aot_eager) tracing, determinism, argument errors, and the nn layers under ``use_backend('cuda')``.

If the extension is not built these tests skip -- unless FASTGAN_REQUIRE_EXT=1 (``make test``),
where a missing extension is a failure.
"""
from __future__ import annotations

import os

import pytest
import torch

from fastgan import ops
from fastgan.backends import reference as R

try:
    from fastgan.backends import cuda as CB
    from fastgan.backends.cuda import _cpu_policy as CP
except ImportError as e:  # pragma: no cover - depends on the build
    if os.environ.get("FASTGAN_REQUIRE_EXT", "") not in ("", "0"):
        raise
    pytest.skip(f"fastgan._C is not available: {e}", allow_module_level=True)

from fastgan import _C  # noqa: E402

FG = torch.ops.fastgan
HAS_CUDA = torch.cuda.is_available()

DEVICES = [
    pytest.param("cpu"),
    pytest.param("cuda", marks=[pytest.mark.gpu,
                                pytest.mark.skipif(not (HAS_CUDA and CB.HAS_CUDA_KERNELS),
                                                   reason="needs a GPU and the CUDA kernels")]),
]
SLOPES = [None, 0.0, 0.01, 0.2]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]
TOL = {torch.float32: 1e-5, torch.bfloat16: 5e-3, torch.float64: 1e-10}


# ----------------------------------------------------------------------------------- fixtures

@pytest.fixture
def seed():
    # FASTGAN_TEST_SEED replays a failure (every failure message prints its seed)
    s = int(os.environ.get("FASTGAN_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    torch.manual_seed(s)
    print(f"seed={s}")
    return s


@pytest.fixture(autouse=True)
def cpu_kernels_always(monkeypatch):
    """The registry's CPU entries pick the reference for small tensors (faster there); the layer
    tests here must run the C++ kernels whatever the size."""
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")


@pytest.fixture(autouse=True)
def poison():
    _C._set_debug_poison(True)
    yield
    _C._set_debug_poison(False)


# ----------------------------------------------------------------------------------- helpers

def rel_err(out: torch.Tensor, ref: torch.Tensor, floor: float = 0.0) -> float:
    """||out - ref|| / ||ref||; `floor` bounds the denominator for references that are zero in
    exact arithmetic (e.g. the gradient of a bias followed by batch norm)."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    den = max(ref.norm().item(), floor)
    num = (out - ref).norm().item()
    return num / den if den > 0 else num


def check(name, out, ref, tol, seed, floor=None):
    """Relative error below tol. The data are O(1): a reference whose RMS is below 1e-6 is
    rounding noise around an exact zero, and is compared against that floor instead."""
    assert torch.isfinite(out).all(), f"{name}: non-finite values (seed={seed})"
    assert torch.isfinite(ref).all(), f"{name}: non-finite reference (seed={seed})"
    if floor is None:
        floor = 1e-6 * max(1, ref.numel()) ** 0.5
    if out.dtype == torch.bfloat16 and out.numel() < 16 and tol == TOL[torch.bfloat16]:
        # a handful of bf16 values has no averaging: two or three roundings of 2^-9 each (the
        # activation gradient, then a bf16 matmul) can reach 5e-3 on one element
        tol = 1e-2
    e = rel_err(out, ref, floor)
    assert e < tol, f"{name}: relative error {e:.3g} >= {tol} (seed={seed})"


def leaf(t: torch.Tensor, dtype, device, requires_grad=True) -> torch.Tensor:
    return t.to(device=device, dtype=dtype).detach().requires_grad_(requires_grad)


def as_ref(t):
    """The float64 copy of an input on the CPU (the reference never depends on a GPU kernel)."""
    if t is None:
        return None
    return t.detach().cpu().double().requires_grad_(t.requires_grad)


def grads(out, inputs, gy):
    ins = [t for t in inputs if t is not None and t.requires_grad]
    gs = torch.autograd.grad(out, ins, gy, allow_unused=False)
    it = iter(gs)
    return [next(it) if (t is not None and t.requires_grad) else None for t in inputs]


def run_pair(fn_fast, fn_ref, inputs, dtype, device, seed, names, tol=None, gy=None, pre_act=None,
             grad_floors=None, out_floor=None):
    """Run the cuda backend on `inputs` and the reference on their float64 copies; compare the
    output and the gradient of every input that requires grad.

    pre_act: the reference pre-activation (the op with slope None). The activation's derivative
    jumps at 0, and an element within rounding distance of 0 may land on either side in float32:
    the incoming gradient of those few elements (|z| < 1e-5) is set to zero on both sides.
    grad_floors(refs, gy) -> {name: floor}: for gradients that are sums whose terms may cancel,
    the size of the terms (the sum of their magnitudes), which is what their rounding scales with;
    out_floor, the same for the output."""
    tol = tol or TOL[dtype]
    refs = [as_ref(t) for t in inputs]
    out = fn_fast(*inputs)
    ref = fn_ref(*refs)
    check("forward", out, ref, tol, seed, floor=out_floor)
    if not any(t is not None and t.requires_grad for t in inputs):
        return out
    if gy is None:
        gy = torch.randn(out.shape, device=device, dtype=torch.float64)
    if pre_act is not None:
        with torch.no_grad():
            z = pre_act(*[None if t is None else t.detach() for t in refs]).to(gy.device)
        gy = torch.where(z.abs() < 1e-5, torch.zeros_like(gy), gy)
    gy = gy.to(out.dtype)  # the reference sees the same (rounded) incoming gradient
    g_fast = grads(out, inputs, gy)
    g_ref = grads(ref, refs, gy.double().cpu())
    floors = grad_floors([None if t is None else t.detach() for t in refs], gy.double().cpu()) \
        if grad_floors else {}
    for name, a, b in zip(names, g_fast, g_ref):
        if a is None and b is None:
            continue
        assert a is not None and b is not None, f"grad {name}: one side missing (seed={seed})"
        assert a.dtype == inputs[names.index(name)].dtype, f"grad {name}: dtype {a.dtype}"
        check(f"grad {name}", a, b, tol, seed, floor=floors.get(name))
    return out


def make_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """contiguous | channels_last | noncontig (a strided view of a bigger tensor)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "noncontig":
        big = torch.empty((*t.shape[:-1], t.shape[-1] * 2), dtype=t.dtype, device=t.device)
        big.fill_(float("nan"))
        v = big[..., ::2]
        v.copy_(t)
        return v
    raise ValueError(layout)


# ----------------------------------------------------------------------------------- bias_act

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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("shape,dim,layout", BIAS_ACT_CASES)
def test_bias_act(device, dtype, slope, shape, dim, layout, seed):
    x = leaf(make_layout(torch.randn(shape), layout) if layout != "noncontig" else torch.randn(shape),
             dtype, device)
    if layout == "noncontig":
        x = make_layout(x.detach(), "noncontig").requires_grad_(True)
    elif layout == "channels_last":
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    b = leaf(torch.randn(shape[dim]), dtype, device)
    run_pair(lambda x, b: CB.bias_act(x, b, slope, dim), lambda x, b: R.bias_act(x, b, slope, dim),
             [x, b], dtype, device, seed, ["x", "bias"],
             pre_act=lambda x, b: R.bias_act(x, b, None, dim))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_bias_act_no_bias(device, slope, seed):
    x = leaf(torch.randn(3, 5, 7), torch.float32, device)
    run_pair(lambda x: CB.bias_act(x, None, slope, 1), lambda x: R.bias_act(x, None, slope, 1),
             [x], torch.float32, device, seed, ["x"])
    y = torch.randn(4, 3, device=device)
    assert CB.bias_act(y, None, None, 1) is y  # identity, like the reference


@pytest.mark.parametrize("device", DEVICES)
def test_bias_act_grad_only_bias(device, seed):
    x = leaf(torch.randn(6, 9, 5), torch.float32, device, requires_grad=False)
    b = leaf(torch.randn(9), torch.float32, device)
    run_pair(lambda x, b: CB.bias_act(x, b, 0.2, 1), lambda x, b: R.bias_act(x, b, 0.2, 1),
             [x, b], torch.float32, device, seed, ["x", "bias"])


@pytest.mark.parametrize("device", DEVICES)
def test_bias_act_large_reduction(device, seed):
    # long rows / many rows: several reduction chunks and splits
    for shape in [(3, 2, 181, 191), (4099, 37), (2, 1, 300, 300)]:
        x = leaf(torch.randn(shape), torch.float32, device)
        b = leaf(torch.randn(shape[1]), torch.float32, device)
        run_pair(lambda x, b: CB.bias_act(x, b, 0.2, 1), lambda x, b: R.bias_act(x, b, 0.2, 1),
                 [x, b], torch.float32, device, seed, ["x", "bias"])


# ----------------------------------------------------------------------------------- linear_act

LINEAR_CASES = [
    (1, 1, 1), (7, 13, 5), (3, 1, 9), (1, 17, 1), (64, 100, 256), (10, 48, 33), (5, 31, 8),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("n,k,m", LINEAR_CASES)
@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_act(device, dtype, slope, n, k, m, has_bias, seed):
    x = leaf(torch.randn(n, k), dtype, device)
    w = leaf(torch.randn(m, k) / k ** 0.5, dtype, device)
    b = leaf(torch.randn(m), dtype, device) if has_bias else None
    # A dot product of a few terms can cancel (k = 17: a sum of 0.007 from terms of 0.25): each
    # result's rounding is measured against the sum of its terms' magnitudes.
    xa, wa = x.detach().double().cpu().abs(), w.detach().double().cpu().abs()
    ba = b.detach().double().cpu().abs() if has_bias else 0.0
    out_floor = (xa @ wa.t() + ba).norm().item()

    def term_sizes(refs, gy):
        ga = gy.abs()
        return {"x": (ga @ wa).norm().item(), "weight": (ga.t() @ xa).norm().item(),
                "bias": ga.sum(0).norm().item()}

    run_pair(lambda x, w, b: CB.linear_act(x, w, b, slope),
             lambda x, w, b: R.linear_act(x, w, b, slope),
             [x, w, b], dtype, device, seed, ["x", "weight", "bias"],
             pre_act=lambda x, w, b: R.linear_act(x, w, b, None),
             grad_floors=term_sizes, out_floor=out_floor)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", [None, 0.2])
def test_linear_act_noncontig_and_3d(device, slope, seed):
    x = leaf(torch.randn(9, 12), torch.float32, device)
    xt = torch.randn(12, 9, device=device).t().requires_grad_(True)  # transposed view
    w = make_layout(torch.randn(7, 12, device=device), "noncontig").requires_grad_(True)
    b = leaf(torch.randn(7), torch.float32, device)
    for xi in (x, xt):
        run_pair(lambda x, w, b: CB.linear_act(x, w, b, slope),
                 lambda x, w, b: R.linear_act(x, w, b, slope),
                 [xi, w, b], torch.float32, device, seed, ["x", "weight", "bias"])
    x3 = leaf(torch.randn(2, 5, 12), torch.float32, device)
    run_pair(lambda x, w, b: CB.linear_act(x, w, b, slope),
             lambda x, w, b: R.linear_act(x, w, b, slope),
             [x3, w, b], torch.float32, device, seed, ["x", "weight", "bias"])


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_CUDA and CB.HAS_CUDA_KERNELS), reason="needs a GPU and the CUDA kernels")
@pytest.mark.parametrize("n,k,m", [(64, 100, 256), (10, 48, 33), (128, 784, 1)])
def test_linear_act_tf32(n, k, m, seed):
    """With TF32 on (fastgan's default for fp32 on a GPU) cuBLAS rounds the operands to 10-bit
    mantissas: each result within ~1e-3 of the size of its terms, never NaN."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        x = leaf(torch.randn(n, k), torch.float32, "cuda")
        w = leaf(torch.randn(m, k) / k ** 0.5, torch.float32, "cuda")
        b = leaf(torch.randn(m), torch.float32, "cuda")
        xa, wa = x.detach().double().cpu().abs(), w.detach().double().cpu().abs()

        def term_sizes(refs, gy):
            ga = gy.abs()
            return {"x": (ga @ wa).norm().item(), "weight": (ga.t() @ xa).norm().item(),
                    "bias": ga.sum(0).norm().item()}

        run_pair(lambda x, w, b: CB.linear_act(x, w, b, 0.2),
                 lambda x, w, b: R.linear_act(x, w, b, 0.2),
                 [x, w, b], torch.float32, "cuda", seed, ["x", "weight", "bias"], tol=2e-3,
                 pre_act=lambda x, w, b: R.linear_act(x, w, b, None), grad_floors=term_sizes,
                 out_floor=(xa @ wa.t() + b.detach().double().cpu().abs()).norm().item())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


# ----------------------------------------------------------------------------------- bn_act

BN_CASES = [
    ((2, 1), "contiguous"),
    ((7, 13), "contiguous"),
    ((64, 256), "contiguous"),
    ((3, 1, 5, 7), "contiguous"),
    ((3, 5, 7, 9), "contiguous"),
    ((3, 5, 7, 9), "channels_last"),
    ((1, 3, 1, 2), "contiguous"),
    ((4, 8, 4, 4), "channels_last"),
    ((2, 6, 4, 3), "noncontig"),
    ((5, 16, 8, 8), "contiguous"),
    ((2, 3, 4, 5, 3), "contiguous"),  # [N, C, D, H, W]
]
AFFINES = ["gamma_beta", "beta", "none"]


def _bn_inputs(shape, layout, dtype, device, affine):
    c = shape[1]
    count = 1
    for n in shape:
        count *= n
    count //= c
    # With 2-4 values per channel and var >> eps, d(out)/dx cancels almost exactly (the outputs
    # are pinned near +-1): float32 BN, torch's included, loses ~1e-3 there. Keep var ~ eps.
    scale = 0.03 if count <= 4 else 2.0
    x = (torch.randn(shape) + 0.5) * scale
    x = leaf(x, dtype, device)
    if layout != "contiguous":
        x = make_layout(x.detach(), layout).requires_grad_(True)
    w = leaf(torch.rand(c) + 0.5, dtype, device) if affine == "gamma_beta" else None
    b = leaf(torch.randn(c), dtype, device) if affine != "none" else None
    return x, w, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("shape,layout", BN_CASES)
@pytest.mark.parametrize("affine", AFFINES)
def test_bn_act_training(device, dtype, slope, shape, layout, affine, seed):
    x, w, b = _bn_inputs(shape, layout, dtype, device, affine)
    c = shape[1]
    sdt = torch.float64 if dtype == torch.float64 else torch.float32
    rm0 = torch.randn(c, device=device, dtype=sdt)
    rv0 = torch.rand(c, device=device, dtype=sdt) + 0.5
    rm, rv = rm0.clone(), rv0.clone()
    rm_ref, rv_ref = rm0.double().cpu(), rv0.double().cpu()
    mom, eps = 0.2, 1e-3

    # Conditioning with few samples per channel (shape (2, 1): 2 values, maybe close): x - mean
    # cancels, so xhat carries a rounding of ~eps32 * |x| * rstd (``cond`` below) on top of |xhat|,
    # and the sums over a channel (dgamma = sum(g' * xhat), dbeta = sum(g')) and dx's
    # projection gamma*rstd*(g' - mean(g') - xhat*mean(g'*xhat)) may cancel. Each result's
    # rounding is measured against the size of its terms, not its (possibly tiny) value.
    def sizes(xr, wr):
        red = [d for d in range(xr.dim()) if d != 1]
        rstd = (xr.var(red, unbiased=False, keepdim=True) + eps).rsqrt()
        xhat = (xr - xr.mean(red, keepdim=True)) * rstd
        gamma = wr.view([-1 if d == 1 else 1 for d in range(xr.dim())]).abs() \
            if wr is not None else 1.0
        return red, rstd, gamma, xhat.abs() + xr.abs() * rstd

    def term_sizes(refs, gy):
        red, rstd, gamma, cond = sizes(refs[0], refs[1])
        return {"x": (gy.abs() * rstd * gamma * (1 + cond)).norm().item(),
                "weight": (gy.abs() * cond).sum(red).norm().item(),
                "bias": gy.abs().sum(red).norm().item()}

    _, _, gamma, cond = sizes(x.detach().double().cpu(),
                              None if w is None else w.detach().double().cpu())
    out_floor = (gamma * cond).norm().item()

    run_pair(lambda x, w, b: CB.bn_act(x, w, b, rm, rv, True, mom, eps, slope),
             lambda x, w, b: R.bn_act(x, w, b, rm_ref, rv_ref, True, mom, eps, slope),
             [x, w, b], dtype, device, seed, ["x", "weight", "bias"],
             pre_act=lambda x, w, b: R.bn_act(x, w, b, None, None, True, mom, eps, None),
             grad_floors=term_sizes, out_floor=out_floor)
    tol = 1e-5 if dtype == torch.bfloat16 else TOL[dtype]  # stats are fp32 math on bf16 inputs
    check("running_mean", rm, rm_ref, tol, seed)
    check("running_var", rv, rv_ref, tol, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("slope", [None, 0.0, 0.2])
@pytest.mark.parametrize("shape,layout", [((7, 13), "contiguous"), ((3, 5, 7, 9), "channels_last"),
                                          ((4, 6, 5, 5), "contiguous")])
def test_bn_act_eval(device, dtype, slope, shape, layout, seed):
    x, w, b = _bn_inputs(shape, layout, dtype, device, "gamma_beta")
    c = shape[1]
    rm, rv = torch.randn(c, device=device), torch.rand(c, device=device) + 0.5
    rm_c, rv_c = rm.clone(), rv.clone()
    run_pair(lambda x, w, b: CB.bn_act(x, w, b, rm, rv, False, 0.1, 1e-5, slope),
             lambda x, w, b: R.bn_act(x, w, b, rm.double().cpu(), rv.double().cpu(), False, 0.1, 1e-5, slope),
             [x, w, b], dtype, device, seed, ["x", "weight", "bias"],
             pre_act=lambda x, w, b: R.bn_act(x, w, b, rm.double().cpu(), rv.double().cpu(), False, 0.1, 1e-5, None))
    assert torch.equal(rm, rm_c) and torch.equal(rv, rv_c), "eval mode changed the running stats"


@pytest.mark.parametrize("device", DEVICES)
def test_bn_act_no_running_stats_and_big_channels(device, seed):
    # no running statistics; one channel with many values (splits); many rows (chunks)
    for shape in [(16, 1, 56, 56), (3000, 5), (2, 3, 130, 129)]:
        x, w, b = _bn_inputs(shape, "contiguous", torch.float32, device, "gamma_beta")
        run_pair(lambda x, w, b: CB.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.0),
                 lambda x, w, b: R.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.0),
                 [x, w, b], torch.float32, device, seed, ["x", "weight", "bias"])


@pytest.mark.parametrize("device", DEVICES)
def test_bn_act_mixed_param_dtypes(device, seed):
    # bf16 activations with fp32 parameters and running stats (autocast-style)
    x = leaf(torch.randn(8, 6, 5, 5), torch.bfloat16, device)
    w = leaf(torch.rand(6) + 0.5, torch.float32, device)
    b = leaf(torch.randn(6), torch.float32, device)
    rm, rv = torch.zeros(6, device=device), torch.ones(6, device=device)
    y = CB.bn_act(x, w, b, rm, rv, True, 0.1, 1e-5, 0.2)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    assert w.grad.dtype == torch.float32 and b.grad.dtype == torch.float32
    assert x.grad.dtype == torch.bfloat16
    ref = R.bn_act(x.detach().double(), w.detach().double(), b.detach().double(), None, None,
                   True, 0.1, 1e-5, 0.2)
    check("forward", y, ref, 5e-3, seed)


def test_bn_act_errors():
    with pytest.raises(RuntimeError, match="more than 1 value per channel"):
        CB.bn_act(torch.randn(1, 4), None, None, None, None, True, 0.1, 1e-5, None)
    with pytest.raises(RuntimeError, match="fastgan::bn_stats.*running_mean"):
        CB.bn_act(torch.randn(3, 4), None, None, torch.zeros(5), torch.ones(4), True, 0.1, 1e-5, None)
    with pytest.raises(RuntimeError, match="required when training=False"):
        CB.bn_act(torch.randn(3, 4), None, None, None, None, False, 0.1, 1e-5, None)
    with pytest.raises(RuntimeError, match="fastgan::bn_act.*weight"):
        CB.bn_act(torch.randn(3, 4), torch.ones(3), None, None, None, True, 0.1, 1e-5, None)


# ----------------------------------------------------------------------------------- gan_loss

LOSS_SHAPES = [(1,), (64, 1), (7, 3, 5), (33,), (2, 1, 30, 30)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", LOSS_SHAPES)
@pytest.mark.parametrize("target", ["one", "zero", "0.9", "tensor0d", "tensor_full"])
def test_gan_loss(device, dtype, kind, reduction, shape, target, seed):
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
    run_pair(lambda l: CB.gan_loss(l, t, kind, reduction),
             lambda l: R.gan_loss(l, t_ref, kind, reduction),
             [logits], dtype, device, seed, ["logits"])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["bce", "lsgan"])
def test_gan_loss_extreme_logits(device, kind, seed):
    logits = leaf(torch.cat([torch.randn(61) * 3, torch.tensor([-100.0, 100.0, 0.0, 88.0, -88.0])]),
                  torch.float32, device)
    for t in (0.0, 1.0):
        run_pair(lambda l: CB.gan_loss(l, t, kind, "mean"), lambda l: R.gan_loss(l, t, kind, "mean"),
                 [logits], torch.float32, device, seed, ["logits"])


def test_gan_loss_errors():
    with pytest.raises(ValueError, match="kind"):
        CB.gan_loss(torch.randn(3), 1.0, "hinge", "mean")
    with pytest.raises(ValueError, match="reduction"):
        CB.gan_loss(torch.randn(3), 1.0, "bce", "none")
    with pytest.raises(RuntimeError, match="fastgan::gan_loss: unknown kind"):
        FG.gan_loss(torch.randn(3), None, 1.0, "hinge", "mean")
    with pytest.raises(RuntimeError, match="fastgan::gan_loss: logits must be float32"):
        FG.gan_loss(torch.ones(3, dtype=torch.int32), None, 1.0, "bce", "mean")


def test_gan_loss_empty_mean_is_nan():
    assert torch.isnan(CB.gan_loss(torch.randn(0), 1.0, "bce", "mean"))
    assert CB.gan_loss(torch.randn(0), 1.0, "bce", "sum").item() == 0.0


def test_gan_loss_double_backward(seed):
    # create_graph through the loss recomputes the gradient with differentiable ops
    l = torch.randn(9, dtype=torch.float64, requires_grad=True)
    for kind in ("bce", "lsgan"):
        torch.autograd.gradgradcheck(lambda x: CB.gan_loss(x, 0.3, kind, "mean"), (l,))


# ----------------------------------------------------------------------------------- argument errors

def test_argument_errors_name_op_and_argument():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="fastgan::bias_act: bias must be 1-D with 3"):
        FG.bias_act(x, torch.randn(4), 0.2, 1)
    with pytest.raises(RuntimeError, match="fastgan::bias_act: x must be float32, bfloat16 or float64"):
        FG.bias_act(torch.ones(4, 3, dtype=torch.int64), None, 0.2, 1)
    with pytest.raises(RuntimeError, match="fastgan::bias_act: slope"):
        FG.bias_act(x, None, -0.5, 1)
    with pytest.raises(RuntimeError, match="fastgan::linear_act: x has 3 features"):
        FG.linear_act(x, torch.randn(5, 4), None, 0.2)
    with pytest.raises(RuntimeError, match="fastgan::linear_act: weight is"):
        FG.linear_act(x, torch.randn(5, 3, dtype=torch.float64), None, 0.2)
    with pytest.raises(RuntimeError, match="fastgan::bias_act_backward: grad has shape"):
        FG.bias_act_backward(torch.randn(3, 3), x, 0.2, 1, True)


# ----------------------------------------------------------------------------------- opcheck

def _opcheck_samples(device):
    d = dict(device=device)
    x4 = torch.randn(3, 5, 4, 3, **d, requires_grad=True)
    x4cl = torch.randn(3, 5, 4, 3, **d).contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x2 = torch.randn(6, 7, **d, requires_grad=True)
    b5 = torch.randn(5, **d, requires_grad=True)
    b7 = torch.randn(7, **d, requires_grad=True)
    w = torch.randn(7, 6, **d, requires_grad=True)
    mean, invstd = FG.bn_stats(x4.detach(), None, None, True, 0.1, 1e-5)
    y = FG.bias_act(x2.detach(), b7.detach(), 0.2, 1)
    return [
        (FG.bias_act.default, (x4, b5, 0.2, 1)),
        (FG.bias_act.default, (x4cl, b5, 0.0, 1)),
        (FG.bias_act.default, (x2, None, 0.01, 1)),
        (FG.bias_act_backward.default, (torch.randn(6, 7, **d), y, 0.2, 1, True)),
        (FG.bias_act_backward.default, (torch.randn(6, 7, **d), y, 0.2, 1, False)),
        (FG.linear_act.default, (torch.randn(4, 6, **d, requires_grad=True), w, b7, 0.2)),
        (FG.linear_act.default, (torch.randn(4, 6, **d, requires_grad=True), w, b7, None)),
        (FG.linear_act.default, (torch.randn(2, 4, 6, **d, requires_grad=True), w, None, 0.0)),
        (FG.bn_stats.default, (x4.detach(), torch.zeros(5, **d), torch.ones(5, **d), True, 0.1, 1e-5)),
        (FG.bn_stats.default, (x4cl.detach(), torch.zeros(5, **d), torch.ones(5, **d), False, 0.1, 1e-5)),
        (FG.bn_act.default, (x4, torch.rand(5, **d, requires_grad=True), b5, mean, invstd, 0.2, True)),
        (FG.bn_act.default, (x4cl, None, None, mean, invstd, None, False)),
        (FG.bn_act_backward.default, (torch.randn(3, 5, 4, 3, **d), x4.detach(), None, b5.detach(),
                                      mean, invstd, 0.0, True)),
        (FG.gan_loss.default, (torch.randn(8, 1, **d, requires_grad=True), None, 1.0, "bce", "mean")),
        (FG.gan_loss.default, (torch.randn(8, **d, requires_grad=True), torch.tensor(0.9, **d), 0.0,
                               "lsgan", "sum")),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    _C._set_debug_poison(False)  # opcheck compares eager runs; poison is irrelevant there
    for op, args in _opcheck_samples(device):
        torch.library.opcheck(op, args)


# ----------------------------------------------------------------------------------- gradcheck

def test_gradcheck_float64(seed):
    d = dict(dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, 3, 2, **d)
    b = torch.randn(4, **d)
    w = torch.rand(4, **d) + 0.5
    xl, wl, bl = torch.randn(6, 5, **d), torch.randn(3, 5, **d), torch.randn(3, **d)
    for slope in SLOPES:
        torch.autograd.gradcheck(lambda x, b: CB.bias_act(x, b, slope, 1), (x, b))
        torch.autograd.gradcheck(lambda x, w, b: CB.linear_act(x, w, b, slope), (xl, wl, bl))
        torch.autograd.gradcheck(lambda x, w, b: CB.bn_act(x, w, b, None, None, True, 0.1, 1e-5, slope),
                                 (x, w, b))
    torch.autograd.gradcheck(lambda l: CB.gan_loss(l, 0.7, "bce", "mean"), (torch.randn(7, **d),))
    torch.autograd.gradcheck(lambda l: CB.gan_loss(l, 0.7, "lsgan", "sum"), (torch.randn(7, **d),))


def test_double_backward_linear_and_bias_act(seed):
    # gradient penalties (R1, WGAN-GP) differentiate the discriminator's gradient
    d = dict(dtype=torch.float64, requires_grad=True)
    xl, wl, bl = torch.randn(4, 5, **d), torch.randn(3, 5, **d), torch.randn(3, **d)
    x, b = torch.randn(2, 3, 4, **d), torch.randn(3, **d)
    for slope in (None, 0.2):
        torch.autograd.gradgradcheck(lambda x, w, b: CB.linear_act(x, w, b, slope), (xl, wl, bl))
        torch.autograd.gradgradcheck(lambda x, b: CB.bias_act(x, b, slope, 1), (x, b))


# ----------------------------------------------------------------------------------- compile, determinism

def test_torch_compile_traces_ops(seed):
    torch._dynamo.reset()
    lin_w, lin_b = torch.randn(8, 6, requires_grad=True), torch.randn(8, requires_grad=True)
    g, bb = torch.rand(8, requires_grad=True), torch.randn(8, requires_grad=True)
    rm, rv = torch.zeros(8), torch.ones(8)

    def f(x):
        h = CB.linear_act(x, lin_w, lin_b, 0.2)
        h = CB.bn_act(h, g, bb, rm, rv, True, 0.1, 1e-5, 0.0)
        h = CB.bias_act(h, bb, 0.2, 1)
        return CB.gan_loss(h.sum(1), 1.0, "bce", "mean")

    x = torch.randn(5, 6)
    eager = f(x)
    eager.backward()
    ge = [t.grad.clone() for t in (lin_w, lin_b, g, bb)]
    rm_e = rm.clone()
    for t in (lin_w, lin_b, g, bb):
        t.grad = None
    rm.zero_(), rv.fill_(1.0)
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    out.backward()
    check("compiled loss", out, eager, 1e-6, seed)
    for a, t in zip(ge, (lin_w, lin_b, g, bb)):
        check("compiled grad", t.grad, a, 1e-6, seed)
    check("compiled running_mean", rm, rm_e, 1e-6, seed)


def test_cpu_results_are_deterministic(seed):
    x = torch.randn(32, 24, 9, 9, requires_grad=True)
    w, b = torch.rand(24, requires_grad=True), torch.randn(24, requires_grad=True)
    gy = torch.randn(32, 24, 9, 9)
    outs = []
    for _ in range(2):
        y = CB.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.2)
        gx, gw, gb = torch.autograd.grad(y, (x, w, b), gy)
        outs.append((y, gx, gw, gb))
    for a, c in zip(*outs):
        assert torch.equal(a, c)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1 = CB.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.2)
    finally:
        torch.set_num_threads(n)
    assert torch.equal(y1, outs[0][0]), "result depends on the thread count"


# ----------------------------------------------------------------------------------- registry, build

def test_registry_uses_extension_on_cpu(monkeypatch):
    with ops.use_backend("cuda"):
        for op in ops.OPS:
            impl = ops.lookup(op, "cpu")
            assert impl is getattr(CB, op + "_cpu") and impl.fast is getattr(CB, op)
            if CB.HAS_CUDA_KERNELS:
                assert ops.lookup(op, "cuda") is getattr(CB, op)
    assert "cuda" in ops.available_backends("cpu")
    assert ops.auto_backend("cpu") == "cuda"
    info = CB.build_info()
    assert info["cuda"] == CB.HAS_CUDA_KERNELS
    assert info["torch_version"].split(".")[:2] == torch.__version__.split(".")[:2]


def test_cpu_size_policy(monkeypatch):
    """The cuda backend on CPU runs the C++ kernels on large tensors, the reference on small ones
    (the faster of the two, measured), and FASTGAN_CPU_KERNELS overrides the choice."""
    calls = []
    small, big = torch.randn(4, 3), torch.randn(4, CB.CPU_MIN_NUMEL["bias_act"] // 4 + 1)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "auto")
    real_fast, real_ref = CB.bias_act, R.bias_act
    wrapped = CP._cpu_pick("bias_act", lambda *a: calls.append("fast") or real_fast(*a),
                           lambda *a: calls.append("ref") or real_ref(*a), lambda x, *a: x.numel())
    wrapped(small, None, 0.2, 1)
    wrapped(big, None, 0.2, 1)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    wrapped(small, None, 0.2, 1)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "never")
    wrapped(big, None, 0.2, 1)
    assert calls == ["ref", "fast", "fast", "ref"]


def test_poison_is_active():
    # the NaN fill really happens: a bias_act with zero elements allocates nothing, a real one
    # overwrites every element (checked by the isfinite in every parity test)
    assert _C._debug_poison()


# ----------------------------------------------------------------------------------- layers

def _copy_module(m):
    import copy
    return copy.deepcopy(m)


def _layer_parity(module, make_input, loss_fn, device, seed, tol=1e-5, steps=2):
    """Forward/backward of `module` with the cuda backend vs the reference backend (float64 copy),
    for a few SGD steps so that running statistics and updated weights are compared too."""
    fast = module.to(device)
    ref = _copy_module(module).double()
    opt_f = torch.optim.SGD(fast.parameters(), lr=0.1)
    opt_r = torch.optim.SGD(ref.parameters(), lr=0.1)
    for _ in range(steps):
        x = make_input().to(device)
        with ops.use_backend("cuda"):
            lf = loss_fn(fast(x))
        with ops.use_backend("reference"):
            lr = loss_fn(ref(x.double()))
        check("layer loss", lf, lr, tol, seed)
        opt_f.zero_grad(), opt_r.zero_grad()
        lf.backward(), lr.backward()
        # a bias feeding batch norm has a gradient that is zero in exact arithmetic: compare it
        # against the scale of the other gradients
        floor = 0.1 * max(p.grad.norm().item() for p in ref.parameters())
        for (n, pf), (_, pr) in zip(fast.named_parameters(), ref.named_parameters()):
            check(f"grad {n}", pf.grad, pr.grad, tol, seed, floor=floor)
        opt_f.step(), opt_r.step()
    for (n, bf), (_, br) in zip(fast.named_buffers(), ref.named_buffers()):
        check(f"buffer {n}", bf, br, tol, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("slope", SLOPES)
def test_layer_fused_linear_act(device, slope, seed):
    from fastgan.nn import FusedLinearAct
    m = torch.nn.Sequential(FusedLinearAct(37, 19, slope), FusedLinearAct(19, 1, None))
    _layer_parity(m, lambda: torch.randn(11, 37), lambda y: y.square().mean(), device, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("affine", AFFINES)
def test_layer_batchnorm_act(device, affine, seed):
    from fastgan.nn import BatchNormAct
    m = torch.nn.Sequential(torch.nn.Linear(10, 24), BatchNormAct(24, 0.2, 0.2, 1e-3, affine))
    _layer_parity(m, lambda: torch.randn(9, 10), lambda y: y.square().mean(), device, seed)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transposed,bn,slope", [(False, False, 0.2), (False, True, 0.2),
                                                 (True, True, 0.0), (True, False, None),
                                                 (False, False, 0.01)])
def test_layer_conv_bn_act(device, transposed, bn, slope, seed):
    from fastgan.nn import ConvBNAct
    m = ConvBNAct(3, 6, 4, 2, 1, transposed=transposed, bn=bn, slope=slope)
    _layer_parity(m, lambda: torch.randn(5, 3, 9, 9), lambda y: y.square().mean(), device, seed)
    m.eval()
    x = torch.randn(4, 3, 9, 9, device=device)
    with ops.use_backend("cuda"):
        yf = m(x)
    with ops.use_backend("reference"):
        yr = _copy_module(m).double()(x.double())
    check("eval forward", yf, yr, 1e-5, seed)


@pytest.mark.parametrize("device", DEVICES)
def test_layer_losses(device, seed):
    from fastgan.nn import bce, lsgan
    logits = torch.randn(16, 1, device=device, requires_grad=True)
    for fn in (bce, lsgan):
        for t in (0.0, 1.0, torch.tensor(1.0, device=device)):
            with ops.use_backend("cuda"):
                lf = fn(logits, t)
            lr_in = logits.detach().double().requires_grad_(True)
            with ops.use_backend("reference"):
                lr = fn(lr_in, t.double() if isinstance(t, torch.Tensor) else t)
            check("loss", lf, lr, 1e-5, seed)
            (gf,) = torch.autograd.grad(lf, logits)
            (gr,) = torch.autograd.grad(lr, lr_in)
            check("loss grad", gf, gr, 1e-5, seed)


# ----------------------------------------------------------------------------------- GPU only

@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_CUDA and CB.HAS_CUDA_KERNELS), reason="needs a GPU and the CUDA kernels")
def test_cuda_graph_capture_matches_eager(seed):
    from fastgan.nn import BatchNormAct, FusedLinearAct, ConvBNAct
    dev = "cuda"
    net = torch.nn.Sequential(FusedLinearAct(32, 6 * 8 * 8, 0.2), torch.nn.Unflatten(1, (6, 8, 8)),
                              ConvBNAct(6, 8, 3, 1, 1, bn=True, slope=0.0),
                              ConvBNAct(8, 4, 3, 1, 1, bn=False, slope=0.2), torch.nn.Flatten(),
                              BatchNormAct(4 * 8 * 8, None)).to(dev)
    x = torch.randn(16, 32, device=dev)
    params = list(net.parameters())

    def step():
        with ops.use_backend("cuda"):
            loss = CB.gan_loss(net(x).sum(1), 1.0, "bce", "mean")
        grads = torch.autograd.grad(loss, params)
        return loss, grads

    state = {k: v.clone() for k, v in net.state_dict().items()}
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(s)
    net.load_state_dict(state)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        loss_g, grads_g = step()
    net.load_state_dict(state)
    g.replay()
    torch.cuda.synchronize()
    buf_g = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    loss_e, grads_e = step()
    check("graph loss", loss_g, loss_e, 1e-6, seed)
    for a, b in zip(grads_g, grads_e):
        check("graph grad", a, b, 1e-6, seed)
    for k, v in net.state_dict().items():
        check(f"graph buffer {k}", buf_g[k], v, 1e-6, seed)
