"""Host cost per op call, per backend: what a fused op costs the CPU that issues it.

    pytest bench/test_op_overhead.py --benchmark-group-by=param:op,param:mode --benchmark-columns=median,rounds

Eagerly, a fused op only pays off if issuing it costs the host no more than the PyTorch ops it
replaces (the reference backend *is* those ops). So every op runs on the smallest tensors (the
device work is negligible) in a loop of ``CALLS`` calls with no synchronisation inside it: on a
GPU the host enqueues faster than the GPU drains only if the host is the bottleneck, which it is
at these sizes; one synchronize ends the loop. The median time per call (µs) is in each row's
``extra_info["host_us_per_call"]`` and, in the table, as the time of ``CALLS`` calls. On a machine
without CUDA the reference and the C++ kernels run on CPU tensors (their kernels forced on, as on
a GPU); the Triton interpreter is left out (a test tool).
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from fastgan import ops
from fastgan.benchmark.kernel_count import gpu_like_cpu_kernels

pytest.importorskip("pytest_benchmark")

CUDA = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1"
DEVICE = "cuda" if CUDA else "cpu"
TINY = os.environ.get("FASTGAN_BENCH_TINY") == "1"
CALLS = 20 if TINY else 200
BACKENDS = [b for b in ops.available_backends(DEVICE) if CUDA or b != "triton"]
# triton with direct launches of its compiled kernels (kernels/launch.py, off by default)
BACKENDS += ["triton-cached"] if "triton" in BACKENDS else []


def _cases():
    """op -> (make inputs, call): inputs are leaves that need grad, the call returns a tensor."""
    d = DEVICE

    def leaf(*shape):
        return torch.randn(*shape, device=d).requires_grad_()
    return {
        "linear_act": (lambda: (leaf(4, 8), leaf(8, 8), leaf(8)),
                       lambda x, w, b: ops.linear_act(x, w, b, 0.2)),
        "bias_act": (lambda: (leaf(4, 8, 2, 2), leaf(8)),
                     lambda x, b: ops.bias_act(x, b, 0.2, 1)),
        "bn_act": (lambda: (leaf(4, 8), leaf(8), leaf(8)),
                   lambda x, w, b: ops.bn_act(x, w, b, None, None, True, 0.1, 1e-5, 0.0)),
        "gan_loss": (lambda: (leaf(4, 1),), lambda z: ops.gan_loss(z, 1.0, "bce", "mean")),
        # the fused ops issue 20 added, each against the reference's sequence of ops
        "linear_act_head": (lambda: (leaf(4, 8), leaf(8, 8), leaf(8), leaf(1, 8), leaf(1)),
                            lambda x, w, b, hw, hb: ops.linear_act_head(x, w, b, 0.2, hw, hb)),
        "linear_bn_act": (lambda: (leaf(4, 8), leaf(8, 8), leaf(8), leaf(8), leaf(8)),
                          lambda x, w, b, g, c: ops.linear_bn_act(
                              x, w, b, g, c, None, None, True, 0.1, 1e-5, 0.2, None, True)),
        "gan_loss_stats": (lambda: (leaf(4, 1),),
                           lambda z: ops.gan_loss_stats(z, 1.0, "bce", "mean", 1.0, _STATS,
                                                        _ONE, z.detach(), z.detach())),
        "gan_stats": (lambda: (torch.randn(4, 1, device=d),),   # no grad: forward only
                      lambda z: ops.gan_stats(_STATS, _ONE, _ONE, z, z)),
        "gather_scale": (lambda: (torch.randint(0, 255, (16, 1, 4, 4), dtype=torch.uint8,
                                                device=d),
                                  torch.randint(0, 16, (4,), device=d),
                                  torch.empty(4, 1, 4, 4, device=d)),
                         lambda im, i, out: ops.gather_scale(im, i, 2 / 255, -1.0, out)),
    }


_STATS = torch.zeros(5, device=DEVICE)   # gan_stats' accumulator, and its loss scalars
_ONE = torch.ones((), device=DEVICE)
NO_GRAD = ("gan_stats", "gather_scale")   # in-place ops of the engine, never differentiated


CASES = _cases()


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", list(CASES))
def test_host_cost_per_call(benchmark, op, backend, mode):
    if mode == "fwd_bwd" and op in NO_GRAD:
        pytest.skip(f"{op} has no backward")
    make, call = CASES[op]
    inputs = make()
    grad = None

    def loop():
        for _ in range(CALLS):
            y = call(*inputs)
            if mode == "fwd_bwd":
                y.backward(torch.ones_like(y) if grad is None else grad)
        if CUDA:
            torch.cuda.synchronize()

    from fastgan.kernels import launch
    cached = backend.endswith("-cached")
    backend = backend.split("-")[0]
    old = launch.set_enabled(cached)
    try:
        with gpu_like_cpu_kernels(), ops.use_backend(backend):
            loop()      # warm-up: JIT, autotune, first-call caches
            if TINY:
                benchmark.pedantic(loop, rounds=3, iterations=1)
            else:
                benchmark.pedantic(loop, rounds=20, iterations=1, warmup_rounds=1)
    finally:
        launch.set_enabled(old)
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(op=op, backend=backend + ("-cached" if cached else ""), mode=mode,
                                device=DEVICE, calls=CALLS,
                                host_us_per_call=median / CALLS * 1e6)
    if os.environ.get("FASTGAN_OVERHEAD_JSONL"):   # gpu-check: each row as it is measured
        with open(os.environ["FASTGAN_OVERHEAD_JSONL"], "a") as f:
            f.write(json.dumps({"step": "overhead", **benchmark.extra_info}) + "\n")
    # What was timed computes the op: the same output as the reference's.
    with torch.no_grad(), gpu_like_cpu_kernels():
        _STATS.zero_()    # gan_stats accumulates into it: one call from zero each
        with ops.use_backend(backend):
            y = call(*inputs).clone()   # gather_scale writes into its input's buffer
        _STATS.zero_()
        with ops.use_backend("reference"):
            want = call(*inputs)
    torch.testing.assert_close(y, want, rtol=1e-4, atol=1e-5)
