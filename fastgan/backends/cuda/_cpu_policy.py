"""On CPU tensors the cuda backend keeps the faster implementation per op and size.

Each C++ op carries a fixed cost (the Python autograd wiring of torch.library, a second op for
the batch statistics) per forward+backward, and ATen's kernels are vectorised for the host
where ours are compiled for baseline x86-64. So the C++ kernels win on large tensors
(memory-bound, fewer passes) and lose on small ones; below :data:`CPU_MIN_NUMEL` elements the
cuda backend runs the reference code on CPU (measured with bench/test_cpu_ops.py, README: CPU
dispatch). ``FASTGAN_CPU_KERNELS=always`` forces the C++ kernels (tests), ``=never`` the
reference.
"""
from __future__ import annotations

import os

from fastgan.env_choices import word

CPU_MIN_NUMEL = {"linear_act": 4_000_000, "bias_act": 1_000_000, "bn_act": 100_000,
                 "gan_loss": 1_000_000,
                 # not measured on its own: bn_act's, the op it mostly replaces
                 "linear_bn_act": 100_000}
# The iteration's own ops (gather_scale, gan_stats) run the C++ kernels at every size: faster
# than the torch sequences they replace even on the smallest batches (measured with timeit).
ALWAYS_CPP = ("gather_scale", "gan_stats")


def _cpu_policy() -> str:
    return word("FASTGAN_CPU_KERNELS", "auto")


def _cpu_pick(op: str, fast, ref, numel_of):
    threshold = CPU_MIN_NUMEL[op]

    def impl(*args, **kwargs):
        policy = _cpu_policy()
        if policy == "always" or (policy == "auto" and numel_of(*args) >= threshold):
            return fast(*args, **kwargs)
        return ref(*args, **kwargs)

    impl.__name__ = f"{op}_cpu"
    impl.__doc__ = f"fastgan._C's {op} on large CPU tensors (>= {threshold} elements), else the reference"
    impl.fast, impl.ref = fast, ref
    return impl


def doctor_line() -> str:
    """Which implementation the cuda backend runs on CPU tensors, and why (``fastgan doctor``)."""
    policy = os.environ.get("FASTGAN_CPU_KERNELS", "auto")
    if policy in ("always", "never"):
        return (f"FASTGAN_CPU_KERNELS={policy}: "
                f"{'the C++ kernels' if policy == 'always' else 'the reference code'} for every op")
    th = ", ".join(f"{op} >= {n:,}" for op, n in CPU_MIN_NUMEL.items())
    return (f"per op and size, the faster measured (bench/test_cpu_ops.py): the C++ kernels from "
            f"{th} elements, the reference code below; {', '.join(ALWAYS_CPP)} at every size "
            f"(FASTGAN_CPU_KERNELS=always|never decides)")
