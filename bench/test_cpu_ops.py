"""CPU throughput of the cuda backend's C++ kernels against the reference, at the variants' shapes.

Each case is one op at a shape the seed variants really run (docs/VARIANTS.md), timed
forward + backward (what a training step does), once with ``--backend reference`` and once with
the C++ kernels (``cuda`` backend on CPU tensors). pytest-benchmark groups the two per case, so
the table reads as a side-by-side comparison:

    pytest bench/test_cpu_ops.py                         # full shapes
    FASTGAN_BENCH_TINY=1 pytest bench/test_cpu_ops.py    # tiny batches, few rounds (smoke test)
    pytest bench/test_cpu_ops.py --benchmark-columns=min,median,rounds -k bn_act

On a shared or busy machine, time with one thread (OMP_NUM_THREADS=1): with two, both backends'
OpenMP regions wait for a descheduled thread and the timings become multiples of the scheduler
tick. Compare the `min` column.

Requires the extension (fastgan._C); skipped without it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Tuple

import pytest
import torch

from fastgan import ops

try:
    from fastgan.backends import cuda  # noqa: F401
except ImportError as e:  # pragma: no cover
    pytest.skip(f"fastgan._C is not available: {e}", allow_module_level=True)

TINY = os.environ.get("FASTGAN_BENCH_TINY", "") not in ("", "0")


@dataclass
class Case:
    variant: str
    op: str
    make: Callable[[int], Tuple]   # batch -> args (tensors that require grad where trained)
    batch: int
    note: str = ""

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.op}-{self.note}"


def _t(*shape, grad=True):
    return torch.randn(*shape).requires_grad_(grad)


def lin(k, m, slope, bias=True):
    def make(n):
        return (_t(n, k), (torch.randn(m, k) / k ** 0.5).requires_grad_(), _t(m) if bias else None,
                slope)
    return make


def bias_act(shape, slope):
    def make(n):
        return (_t(n, *shape), _t(shape[0]), slope, 1)
    return make


def bn(shape, slope, momentum=0.1, eps=1e-5, affine=True):
    def make(n):
        c = shape[0]
        w = (torch.rand(c) + 0.5).requires_grad_() if affine else None
        return (_t(n, *shape), w, _t(c), torch.zeros(c), torch.ones(c), True, momentum, eps, slope)
    return make


def loss(shape, target, kind, reduction):
    def make(n):
        return (_t(n, *shape), target, kind, reduction)
    return make


CASES = [
    # mlp (seed 001), batch 64: Linear -> lrelu(0.2) -> BN (momentum 0.2, eps 1e-3), BCE
    Case("mlp", "linear_act", lin(100, 256, 0.2), 64, "G1-100x256"),
    Case("mlp", "linear_act", lin(512, 1024, 0.2), 64, "G3-512x1024"),
    Case("mlp", "linear_act", lin(784, 1024, 0.2), 64, "D1-784x1024"),
    Case("mlp", "linear_act", lin(1024, 784, None), 64, "G4-1024x784-noact"),
    Case("mlp", "bn_act", bn((256,), None, 0.2, 1e-3), 64, "256"),
    Case("mlp", "bn_act", bn((1024,), None, 0.2, 1e-3), 64, "1024"),
    Case("mlp", "gan_loss", loss((1,), 1.0, "bce", "mean"), 64, "bce"),
    # bigan (seed 000), batch 32: Linear -> ReLU
    Case("bigan", "linear_act", lin(848, 128, 0.0), 32, "D1-848x128-relu"),
    # gancls (seed 002), batch 10 (D sees 30): BN + ReLU, conv + lrelu(0.01), LSGAN sum
    Case("gancls", "bn_act", bn((6272,), 0.0, 0.001, 1e-3, affine=False), 10, "6272-relu"),
    Case("gancls", "bn_act", bn((64, 14, 14), 0.0, 0.001, 1e-3, affine=False), 10, "64x14x14-relu"),
    Case("gancls", "bias_act", bias_act((64, 14, 14), 0.01), 30, "D-conv1-64x14x14"),
    Case("gancls", "linear_act", lin(6272, 1024, 0.01), 30, "D-6272x1024"),
    Case("gancls", "gan_loss", loss((1,), 1.0, "lsgan", "sum"), 30, "lsgan-sum"),
    # dcgan (seed 003, PyTorch example), batch 128: deconv -> BN -> ReLU, conv -> BN -> lrelu(0.2)
    Case("dcgan", "bn_act", bn((512, 4, 4), 0.0), 128, "G-512x4x4-relu"),
    Case("dcgan", "bn_act", bn((128, 16, 16), 0.0), 128, "G-128x16x16-relu"),
    Case("dcgan", "bn_act", bn((64, 32, 32), 0.0), 128, "G-64x32x32-relu"),
    Case("dcgan", "bn_act", bn((256, 8, 8), 0.2), 128, "D-256x8x8-lrelu"),
    Case("dcgan", "bias_act", bias_act((64, 32, 32), 0.2), 128, "D-conv1-64x32x32"),
    Case("dcgan", "gan_loss", loss((1, 1, 1), 1.0, "bce", "mean"), 128, "bce"),
    # convgan (seed 004), batch 16: conv -> BN -> ReLU on 56x56, conv + lrelu(0.2)
    Case("convgan", "bn_act", bn((1, 56, 56), 0.0), 16, "G-1x56x56-relu"),
    Case("convgan", "bn_act", bn((50, 56, 56), 0.0), 16, "G-50x56x56-relu"),
    Case("convgan", "bias_act", bias_act((32, 28, 28), 0.2), 16, "D-conv1-32x28x28"),
    Case("convgan", "linear_act", lin(3136, 1024, 0.2), 16, "D-3136x1024"),
]


def _grad_inputs(args):
    return [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]


@pytest.mark.parametrize("backend", ["reference", "cuda"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cpu_op(benchmark, monkeypatch, case: Case, backend: str):
    # the C++ kernels themselves, whatever the size (the registry's CPU entries pick the
    # reference below fastgan.backends.cuda.CPU_MIN_NUMEL: what this benchmark measures)
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    torch.manual_seed(0)
    batch = min(case.batch, 4) if TINY else case.batch
    args = case.make(batch)
    fn = getattr(ops, case.op)
    ins = _grad_inputs(args)
    with ops.use_backend(backend):
        out = fn(*args)
    gy = torch.randn_like(out)

    def step():
        with ops.use_backend(backend):
            y = fn(*args)
            return torch.autograd.grad(y, ins, gy)

    benchmark.group = case.id
    benchmark.extra_info.update(variant=case.variant, op=case.op, batch=batch, backend=backend,
                                threads=torch.get_num_threads())
    if TINY:
        benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(step)
