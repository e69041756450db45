"""The parity harness shared by tests/ops (one file per op) and tests/backends.

Every backend is compared against the reference backend evaluated in float64 on the upcast
inputs, forward and every gradient, errors relative (||out - ref|| / ||ref||), every comparison
preceded by an isfinite check (the per-backend poison fills each allocation with NaN first, so an
element a kernel forgets to write fails). Fresh random inputs each run; FASTGAN_TEST_SEED replays
a failure (every failure message prints its seed). FASTGAN_PARITY_LOG=FILE appends one JSON line
per comparison (test id, name, rel_err, tol), to check that a change of the harness keeps the
numbers.

Two comparison policies exist, one per origin of the cases (the case lists are still per backend):
``check`` (relative, optionally against a ``scale``; the Triton cases) and ``check_floored``
(a floor under the denominator, the cuda cases). Both use the one ``rel_err``.
"""
from __future__ import annotations

import contextlib
import json
import os

import pytest
import torch

from fastgan import ops

HAS_CUDA = torch.cuda.is_available()
INTERP = os.environ.get("TRITON_INTERPRET", "0") == "1"   # set by tests/conftest.py without a GPU
SLOPES = [None, 0.0, 0.01, 0.2]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]

try:
    import triton  # noqa: F401
    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the install
    HAS_TRITON = False

# The cuda backend (the compiled extension fastgan._C). Without it its cases skip -- unless
# FASTGAN_REQUIRE_EXT=1 (``make test``), where a missing extension is a failure.
HAS_EXT = ops.ensure_loaded("cuda")
if not HAS_EXT and os.environ.get("FASTGAN_REQUIRE_EXT", "") not in ("", "0"):
    raise ImportError(f"fastgan._C is not available: {ops.load_error('cuda')}")
HAS_CUDA_KERNELS = HAS_EXT and ops.has_impl("bias_act", "cuda", "cuda")

_GPU = [pytest.mark.gpu]
_AVAILABLE = {
    ("triton", "cpu"): (HAS_TRITON and INTERP, "CPU tensors need TRITON_INTERPRET=1"),
    ("triton", "cuda"): (HAS_TRITON and HAS_CUDA and not INTERP,
                         "needs CUDA without the interpreter"),
    ("cuda", "cpu"): (HAS_EXT, "fastgan._C is not available"),
    ("cuda", "cuda"): (HAS_CUDA and HAS_CUDA_KERNELS, "needs a GPU and the CUDA kernels"),
}


def available(backend, device):
    return _AVAILABLE[(backend, device)][0]


def backend_devices(*backends):
    """``backend,device`` parameters: every device of each backend, GPU ones marked ``gpu``."""
    out = []
    for b in backends:
        for d in ("cpu", "cuda"):
            ok, why = _AVAILABLE[(b, d)]
            marks = (_GPU if d == "cuda" else []) + [pytest.mark.skipif(not ok, reason=why)]
            out.append(pytest.param(b, d, marks=marks, id=f"{b}-{d}"))
    return out


def only(backend):
    """``backend`` as a parameter (a test without a device axis), skipped where it is absent."""
    ok = HAS_TRITON if backend == "triton" else HAS_EXT
    return [pytest.param(backend, marks=pytest.mark.skipif(not ok, reason=f"no {backend}"),
                         id=backend)]


# The Triton kernels' gradchecks use fast_mode (random projections of the Jacobian: a few calls per
# input instead of one per element), which the interpreter can afford.
GC = dict(fast_mode=True, atol=1e-6, rtol=1e-4)


def interp_only():
    if not INTERP:
        pytest.skip("float64 gradcheck of the kernels runs in the interpreter")


class _Reference:
    """The reference backend through the public registry (``R.linear_act(...)``)."""

    def __getattr__(self, op):
        return lambda x, *a: ops.lookup(op, x.device.type, "reference")(x, *a)


R = _Reference()


# ------------------------------------------------------------------------------ comparisons

def tolerance(backend: str, device: str, dtype: torch.dtype, matmul: bool = False) -> float:
    """Today's tolerance of each backend's cases."""
    if backend == "cuda":
        return {torch.float32: 1e-5, torch.bfloat16: 5e-3, torch.float64: 1e-10}[dtype]
    if dtype == torch.bfloat16:
        # Triton 3.8's interpreter rounds fp32 -> bf16 toward zero (create_fp_trunc without
        # RTNE): up to 2^-7 relative per element, biased; the GPU rounds to nearest even.
        return 1.2e-2 if device == "cpu" else 5e-3
    if device == "cuda" and matmul:
        from fastgan.kernels import config as KC
        if KC.uses_tf32(dtype):
            return 5e-3
    return 1e-5


def rel_err(out: torch.Tensor, ref: torch.Tensor, floor: float = 0.0, tiny: float = 0.0) -> float:
    """||out - ref|| / max(||ref||, floor); a difference at or below ``tiny`` counts as zero."""
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    assert out.shape == ref.shape, (out.shape, ref.shape)
    num = (out - ref).norm().item()
    if num <= tiny:
        return 0.0
    den = max(ref.norm().item(), floor)
    return num / den if den > 0 else num


def _log(name, e, tol):
    path = os.environ.get("FASTGAN_PARITY_LOG")
    if path:
        test = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "name": name, "rel_err": e, "tol": tol}) + "\n")


def check(name, out, ref, tol, seed, scale=None):
    """Relative error below ``tol``; differences below 1e-30 (far under fp32's normal range, e.g.
    a BCE of exp(-100)) count as zero. With ``scale``, relative to max(|ref|, scale): for outputs
    that are small differences of larger terms (BN's dx over a handful of samples), whose fp32
    rounding is set by the terms, not by the result."""
    assert torch.isfinite(out).all(), "non-finite values in the output (element never written?)"
    assert torch.isfinite(ref).all()
    e = rel_err(out, ref, tiny=1e-30)
    if scale is not None and e > 0:
        e = e * ref.detach().double().norm().item() / max(ref.detach().double().norm().item(),
                                                          scale)
    _log(name, e, tol)
    assert e < tol, f"{name}: relative error {e:.3g} >= {tol:g} (seed {seed})"


def gan_loss_scale(kind, zr, tr, reduction, weight):
    """The size a gan_loss's fp32 rounding is set by, where its result can be far smaller (for
    ``check``'s scale): linear's signed terms (+-z) can cancel in the sum; lsgan's (s - t)^2
    with s = sigmoid(z) ~ t rounds with |s| + |t| (seed 1786188517: s ~ 0.9, 5e-5); None for
    the others, whose terms are positive and rounded relative to themselves."""
    if kind not in ("linear", "lsgan"):
        return None
    z = zr.detach()
    t = tr if torch.is_tensor(tr) else torch.tensor(float(tr), dtype=torch.float64)
    t = t.to(z.device, torch.float64)
    if kind == "linear":
        per = ((1 - 2 * t) * z).abs()
    else:
        s = torch.sigmoid(z)
        per = (s - t).abs() * (s.abs() + t.abs()) + (s - t) ** 2
    per = per.expand_as(z)
    return abs(weight) * (per.mean() if reduction == "mean" else per.sum()).item()


def check_floored(name, out, ref, tol, seed, floor=None):
    """Relative error below tol. The data are O(1): a reference whose RMS is below 1e-6 is
    rounding noise around an exact zero, and is compared against that floor instead."""
    assert torch.isfinite(out).all(), f"{name}: non-finite values (seed={seed})"
    assert torch.isfinite(ref).all(), f"{name}: non-finite reference (seed={seed})"
    if floor is None:
        floor = 1e-6 * max(1, ref.numel()) ** 0.5
    if out.dtype == torch.bfloat16 and out.numel() < 16 and tol == 5e-3:
        # a handful of bf16 values has no averaging: two or three roundings of 2^-9 each (the
        # activation gradient, then a bf16 matmul) can reach 5e-3 on one element
        tol = 1e-2
    e = rel_err(out, ref, floor)
    _log(name, e, tol)
    assert e < tol, f"{name}: relative error {e:.3g} >= {tol} (seed={seed})"


# ----------------------------------------------------------------------------------- inputs

def leaf(t: torch.Tensor, dtype=None, device=None, requires_grad=True) -> torch.Tensor:
    return t.to(device=device, dtype=dtype).detach().requires_grad_(requires_grad)


def noncontig(t: torch.Tensor, how: str) -> torch.Tensor:
    """The same values as ``t`` (2-D) in a non-contiguous layout."""
    if how == "t":        # a transposed buffer (dense, permuted strides)
        return t.t().contiguous().t()
    if how == "slice":    # every other column of a wider buffer (not dense)
        big = torch.empty(t.shape[0], 2 * t.shape[1], dtype=t.dtype, device=t.device)
        big[:, ::2] = t
        return big[:, ::2]
    raise ValueError(how)


def make_4d(shape, layout, device, dtype):
    """Fresh randn of ``shape``: nchw | channels_last | slice (every other channel)."""
    if layout == "slice":
        big = torch.randn(shape[0], 2 * shape[1], *shape[2:], device=device).to(dtype)
        return big[:, ::2]
    x = torch.randn(*shape, device=device).to(dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    return x


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


def run_pair(backend, fn_fast, fn_ref, inputs, dtype, device, seed, names, tol=None, gy=None,
             pre_act=None, grad_floors=None, out_floor=None):
    """Run ``fn_fast`` (calling ``ops``) under ``backend`` on ``inputs`` and the reference
    ``fn_ref`` on their float64 copies; compare the output and the gradient of every input that requires grad.

    pre_act: the reference pre-activation (the op with slope None). The activation's derivative
    jumps at 0, and an element within rounding distance of 0 may land on either side in float32:
    the incoming gradient of those few elements (|z| < 1e-5) is set to zero on both sides.
    grad_floors(refs, gy) -> {name: floor}: for gradients that are sums whose terms may cancel,
    the size of the terms (the sum of their magnitudes), which is what their rounding scales with;
    out_floor, the same for the output."""
    tol = tol or tolerance(backend, device, dtype)
    refs = [as_ref(t) for t in inputs]
    with ops.use_backend(backend):
        out = fn_fast(*inputs)
    ref = fn_ref(*refs)
    check_floored("forward", out, ref, tol, seed, floor=out_floor)
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
        check_floored(f"grad {name}", a, b, tol, seed, floor=floors.get(name))
    return out


# --------------------------------------------------------------------------- per-backend set-up

@contextlib.contextmanager
def triton_setup(monkeypatch):
    """Allocations of floating tensors come back full of NaN, so unwritten elements show; and in
    the interpreter the small tiles are kept for every shape, so the small test shapes cross block
    edges as they would on a GPU (it otherwise switches to whole-layer tiles above
    ``config.INTERPRET_BIG_*``; test_interpreter_whole_layer_tiles covers that path)."""
    real_empty, real_empty_like, real_new_empty = torch.empty, torch.empty_like, torch.Tensor.new_empty

    def fill(t):
        if t.is_floating_point() and t.numel():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_empty_like(*a, **k)))
    monkeypatch.setattr(torch.Tensor, "new_empty",
                        lambda self, *a, **k: fill(real_new_empty(self, *a, **k)))
    if not INTERP:                  # on a GPU: the autotuned tiles, kept across tests
        yield
        return
    from fastgan.kernels import config as KC
    from fastgan.kernels import linear_act as LA
    monkeypatch.setattr(KC, "INTERPRET_BIG_WORK", 1 << 62)
    monkeypatch.setattr(KC, "INTERPRET_BIG_SWEEP", 1 << 62)
    LA.mm_kernel.cache.clear()      # tile picks are cached per shape
    yield
    LA.mm_kernel.cache.clear()


@contextlib.contextmanager
def cuda_setup(monkeypatch):
    """The registry's CPU entries pick the reference for small tensors (faster there); the tests
    must run the C++ kernels whatever the size. Every output and workspace the extension allocates
    is filled with NaN first."""
    from fastgan import _C
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    _C._set_debug_poison(True)
    try:
        yield
    finally:
        _C._set_debug_poison(False)


SETUP = {"triton": triton_setup, "cuda": cuda_setup}


def make_seed():
    # FASTGAN_TEST_SEED replays a failure (every failure message prints its seed)
    s = int(os.environ.get("FASTGAN_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    torch.manual_seed(s)
    print(f"seed={s}")
    return s


def custom_op_namespaces():
    """The torch.library namespaces whose ops can run on CPU tensors here: ``fastgan`` (the
    extension) and ``fastgan_triton`` (under the interpreter); the test skips when neither."""
    names = [ns for ns, ok in (("fastgan", HAS_EXT and ops.ensure_loaded("cuda")),
                               ("fastgan_triton", INTERP and ops.ensure_loaded("triton"))) if ok]
    if not names:
        pytest.skip("neither fastgan._C nor the Triton interpreter")
    return names


def need_gpu_backend(backend, op):
    """Skip unless ``op`` of ``backend`` can run compiled on a GPU here (no interpreter)."""
    if not HAS_CUDA or INTERP:
        pytest.skip("needs a GPU without the interpreter")
    if backend != "reference" and not ops.has_impl(op, backend, "cuda"):
        pytest.skip(f"no {backend} {op} on CUDA here")
