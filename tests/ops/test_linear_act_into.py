"""linear_act(..., out=): the result written into a caller's buffer (no grad), on every backend:
the same values as linear_act itself (the float64 reference within each backend's tolerance),
into non-contiguous rows of a bigger buffer, nothing outside them written, the Triton epilogue
writing it in one launch; bad calls are one-line ValueErrors."""
from __future__ import annotations

import pytest
import torch

from fastgan import ops
from fastgan.benchmark.kernel_count import count_work
from ops_harness import R, backend_devices, check, tolerance

ALL = backend_devices("triton", "cuda") + [pytest.param("reference", "cpu", id="reference-cpu")]
SLOPES = [None, 0.0, 0.2, "tanh", "sigmoid"]


@pytest.mark.parametrize("slope", SLOPES)
@pytest.mark.parametrize("shape", [(1, 3, 1), (7, 33, 19), (40, 70, 65)])
@pytest.mark.parametrize("backend,device", ALL)
def test_out_equals_linear_act(backend, device, shape, slope, seed):
    n, k, m = shape
    x = torch.randn(n, k, device=device)
    w = torch.randn(m, k, device=device) / k ** 0.5
    b = torch.randn(m, device=device)
    buf = torch.full((2 * n + 1, m + 3), 7.0, device=device)
    out = buf[n + 1:, 1:m + 1]                    # rows of a bigger buffer, not contiguous
    with ops.use_backend(backend), torch.no_grad():
        got = ops.linear_act(x, w, b, slope, out=out)
    assert got.data_ptr() == out.data_ptr()
    ref = R.linear_act(x.double(), w.double(), b.double(), slope)
    check("out", out, ref, tolerance(backend, device, torch.float32, matmul=True), seed)
    untouched = torch.ones_like(buf, dtype=torch.bool)
    untouched[n + 1:, 1:m + 1] = False
    assert (buf[untouched] == 7.0).all(), "linear_act(out=) wrote outside out"


@pytest.mark.parametrize("backend,device", ALL)
def test_out_of_another_dtype_is_cast(backend, device, seed):
    """Under bf16 autocast the fakes go into D's fp32 input buffer."""
    x = torch.randn(9, 20, device=device).bfloat16()
    w = torch.randn(11, 20, device=device).bfloat16()
    out = torch.full((9, 11), float("nan"), device=device)
    with ops.use_backend(backend), torch.no_grad():
        ops.linear_act(x, w, None, "tanh", out=out)
    ref = R.linear_act(x.double(), w.double(), None, "tanh")
    check("out", out, ref, tolerance(backend, device, torch.bfloat16), seed)


@pytest.mark.parametrize("backend,device", backend_devices("triton"))
def test_triton_writes_out_in_one_launch(backend, device):
    x, w = torch.randn(8, 30, device=device), torch.randn(40, 30, device=device)
    out = torch.empty(8, 40, device=device)
    with ops.use_backend(backend), torch.no_grad():
        c = count_work(lambda: ops.linear_act(x, w, None, "tanh", out=out))
    assert c["kernels"] == 1, c["by_op"]


def test_bad_out_calls_are_clear_errors():
    x, w = torch.randn(4, 6), torch.randn(5, 6, requires_grad=True)
    with pytest.raises(ValueError, match="inference only.*torch.no_grad"):
        ops.linear_act(x, w, None, "tanh", out=torch.empty(4, 5))
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"out must be .* shape \(4, 5\)"):
            ops.linear_act(x, w, None, "tanh", out=torch.empty(5, 4))
        with pytest.raises(ValueError, match="out must be a floating-point"):
            ops.linear_act(x, w, None, "tanh", out=torch.empty(4, 5, dtype=torch.long))
        with pytest.raises(ValueError, match="bn_eval or out, not both"):
            m = torch.zeros(5)
            ops.linear_act(x, w, None, None, (m, m + 1, None, None, 1e-3), torch.empty(4, 5))
