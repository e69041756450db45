"""gather_scale, ``out[i] = images[idx[i]] * scale + shift``: every backend on CPU (Triton under
the interpreter) is bit-identical to the torch ops the engine ran before the op (a gather, a
multiply that converts the uint8 values, an add), on odd shapes, strided rows, both data ranges
and float32/float64; the custom ops' schemas and fakes; the Triton kernel rounds the product and
the sum separately (no FMA in its sm_90 code)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest
import torch

from fastgan import ops
from ops_harness import HAS_EXT, INTERP, available, custom_op_namespaces, need_gpu_backend

BACKENDS = [pytest.param("reference", id="reference"),
            pytest.param("triton", id="triton", marks=pytest.mark.skipif(
                not available("triton", "cpu"), reason="CPU tensors need TRITON_INTERPRET=1")),
            pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
                not HAS_EXT, reason="fastgan._C is not available"))]
# (images shape, batch): one pixel, odd sizes, more pixels than one block, a batch of one
SHAPES = [((5,), 3), ((9, 1, 5, 3), 7), ((4, 1100), 5), ((30, 3, 7, 7), 1)]
RANGES = [(2.0 / 255.0, -1.0), (1.0 / 255.0, 0.0), (0.37, 0.125)]


def today(images, idx, scale, shift, out):
    """The engine's code before the op: index_select into a uint8 buffer, mul, add_."""
    u8 = torch.empty((idx.numel(),) + tuple(images.shape[1:]), dtype=torch.uint8)
    torch.index_select(images, 0, idx, out=u8)
    torch.mul(u8.view(out.shape), scale, out=out)
    if shift:
        out.add_(shift)
    return out


def _case(images_shape, n, gen):
    images = torch.randint(0, 256, images_shape, dtype=torch.uint8, generator=gen)
    images.view(-1)[:2] = torch.tensor([0, 255], dtype=torch.uint8)   # both ends of the range
    idx = torch.randint(0, images_shape[0], (n,), generator=gen)
    return images, idx


def _run(backend, images, idx, scale, shift, out_shape, dtype):
    out = torch.full(out_shape, float("nan"), dtype=dtype)      # an unwritten element shows
    with ops.use_backend(backend):
        got = ops.gather_scale(images, idx, scale, shift, out)
    assert got is out
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale,shift", RANGES)
@pytest.mark.parametrize("shape,n", SHAPES, ids=str)
def test_bit_identical_to_the_torch_ops(backend, shape, n, scale, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    images, idx = _case(shape, n, gen)
    for out_shape in ((n,) + shape[1:], (n, images[0].numel())):   # the variant's view too
        out = _run(backend, images, idx, scale, shift, out_shape, torch.float32)
        want = today(images, idx, scale, shift, torch.empty(out_shape))
        assert torch.equal(out, want), (seed, (out - want).abs().max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_as_the_engine_runs_it(backend, seed, float64_default):
    """Under a float64 default dtype the batch buffer is float64 and so is today's math."""
    images, idx = _case((11, 2, 3), 6, torch.Generator().manual_seed(seed))
    out = _run(backend, images, idx, 2.0 / 255.0, -1.0, (6, 6), torch.float64)
    assert torch.equal(out, today(images, idx, 2.0 / 255.0, -1.0, torch.empty(6, 6)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_float64_out_computes_in_float64(backend, seed):
    images, idx = _case((11, 2, 3), 6, torch.Generator().manual_seed(seed))
    out = _run(backend, images, idx, 2.0 / 255.0, -1.0, (6, 2, 3), torch.float64)
    assert torch.equal(out, images[idx].double() * (2.0 / 255.0) - 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_rows_and_noncontiguous_images(backend, seed):
    """The engine's slice draw: the data set seen as overlapping runs of images (row stride
    smaller than a row), one row gathered; and images whose rows are not contiguous."""
    gen = torch.Generator().manual_seed(seed)
    images, _ = _case((20, 3, 5), 1, gen)
    runs = images.as_strided((20 - 4 + 1, 4 * 15), (15, 1))
    off = torch.tensor([7])
    out = _run(backend, runs, off, 2.0 / 255.0, -1.0, (4, 15), torch.float32)
    assert torch.equal(out, today(images, torch.arange(7, 11), 2.0 / 255.0, -1.0,
                                  torch.empty(4, 15)))
    t = images.transpose(1, 2)                           # rows not contiguous: copied first
    idx = torch.randint(0, 20, (9,), generator=gen)
    out = _run(backend, t, idx, 0.5, 0.25, (9, 5, 3), torch.float32)
    assert torch.equal(out, today(t.contiguous(), idx, 0.5, 0.25, torch.empty(9, 5, 3)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_and_bad_arguments(backend):
    images = torch.zeros(4, 3, dtype=torch.uint8)
    with ops.use_backend(backend):
        out = torch.empty(0, 3)
        assert ops.gather_scale(images, torch.zeros(0, dtype=torch.long), 1.0, 0.0, out) is out
        idx = torch.tensor([1, 2])
        with pytest.raises(TypeError, match="uint8"):
            ops.gather_scale(images.float(), idx, 1.0, 0.0, torch.empty(2, 3))
        with pytest.raises(TypeError, match="int64"):
            ops.gather_scale(images, idx.int(), 1.0, 0.0, torch.empty(2, 3))
        with pytest.raises(TypeError, match="float32 or float64"):
            ops.gather_scale(images, idx, 1.0, 0.0, torch.empty(2, 3, dtype=torch.bfloat16))
        with pytest.raises(ValueError, match="contiguous with 2 x 3"):
            ops.gather_scale(images, idx, 1.0, 0.0, torch.empty(2, 4))


@pytest.mark.skipif(not HAS_EXT, reason="fastgan._C is not available")
def test_cpu_kernel_refuses_an_index_out_of_range():
    with pytest.raises(RuntimeError, match=r"idx\[1\] = 4 is out of range for 4 images"):
        torch.ops.fastgan.gather_scale(torch.zeros(4, 3, dtype=torch.uint8), torch.tensor([0, 4]),
                                       1.0, 0.0, torch.empty(2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cpu_kernels_run(backend, monkeypatch):
    """The cuda backend's CPU entry runs the C++ kernel (FASTGAN_CPU_KERNELS=never: the
    reference), the triton one the Triton kernel: each shows in the dispatch count."""
    from fastgan.benchmark.kernel_count import count_work
    images, idx = _case((6, 4), 3, torch.Generator().manual_seed(0))
    out = torch.empty(3, 4)
    with ops.use_backend(backend):
        by_op = count_work(lambda: ops.gather_scale(images, idx, 0.5, -1.0, out))["by_op"]
    want = {"reference": {"aten.index_select": 1, "aten.mul": 1, "aten.add_": 1},
            "cuda": {"fastgan.gather_scale.default": 1},
            "triton": {"triton._gather_scale_kernel": 1}}[backend]
    assert by_op == want
    if backend == "cuda":
        monkeypatch.setenv("FASTGAN_CPU_KERNELS", "never")
        with ops.use_backend(backend):
            assert "aten.mul" in count_work(
                lambda: ops.gather_scale(images, idx, 0.5, -1.0, out))["by_op"]


def test_opcheck_custom_ops():
    from torch.library import opcheck
    images, idx = _case((6, 2, 3), 4, torch.Generator().manual_seed(1))
    args = (images, idx, 2.0 / 255.0, -1.0, torch.empty(4, 6))
    for ns in custom_op_namespaces():
        opcheck(getattr(torch.ops, ns).gather_scale.default, args,
                test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


_PTX = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from fastgan.kernels.gather_scale import _gather_scale_kernel as k
sig = {"img_ptr": "*u8", "idx_ptr": "*i64", "out_ptr": "*fp32", "px": "i32", "s_row": "i64",
       "scale": "fp32", "shift": "fp32", "HAS_SHIFT": "constexpr", "BLOCK": "constexpr"}
for fusion in (False, True):
    src = ASTSource(k, sig, constexprs={"HAS_SHIFT": True, "BLOCK": 1024})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                         options={"enable_fp_fusion": fusion}).asm["ptx"]
    print(fusion, "fma." in ptx)
"""


def test_triton_kernel_has_no_fma_on_sm90():
    """Launched with enable_fp_fusion=False, the sm_90 code rounds x * scale and + shift apart
    (with fusion on, the same kernel compiles to an FMA: what this test would catch)."""
    pytest.importorskip("triton.backends.nvidia")
    src = pathlib.Path(__file__).resolve().parents[2] / "kernels" / "gather_scale.py"
    assert "enable_fp_fusion=False" in src.read_text()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(src.parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([sys.executable, "-c", _PTX], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["False", "False", "True", "True"], p.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_traces_the_op(backend, seed):
    """fullgraph torch.compile (aot_eager: the fakes and functionalization, no codegen) gives
    the eager bits."""
    images, idx = _case((9, 2, 5), 4, torch.Generator().manual_seed(seed))
    out = torch.empty(4, 10)

    def fn(images, idx, out):
        return ops.gather_scale(images, idx, 2.0 / 255.0, -1.0, out)

    torch._dynamo.reset()
    with ops.use_backend(backend):
        torch.compile(fn, backend="aot_eager", fullgraph=True)(images, idx, out)
    assert torch.equal(out, today(images, idx, 2.0 / 255.0, -1.0, torch.empty(4, 10)))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"])
def test_cuda_graph_capture(backend, seed):
    """Captured once, replayed with new indices: the replay reads idx on the device."""
    need_gpu_backend(backend, "gather_scale")
    images, idx = _case((50, 1, 28, 28), 16, torch.Generator().manual_seed(seed))
    images, idx = images.cuda(), idx.cuda()
    out = torch.empty(16, 784, device="cuda")
    with ops.use_backend(backend):
        ops.gather_scale(images, idx, 2.0 / 255.0, -1.0, out)      # warm-up (compiles)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            ops.gather_scale(images, idx, 2.0 / 255.0, -1.0, out)
    idx.copy_(torch.randint(0, 50, (16,), device="cuda"))
    g.replay()
    want = today(images.cpu(), idx.cpu(), 2.0 / 255.0, -1.0, torch.empty(16, 784))
    assert torch.equal(out.cpu(), want)
