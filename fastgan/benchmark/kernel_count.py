"""Kernels per iteration without a GPU: a dispatch-level count of the device work one training
iteration issues, the CPU proxy of the profiler's kernel count.

Counted: every ATen operator that computes or moves data (matmuls, pointwise, reductions,
copies, fills, random draws), every fused-op launch of the ``cuda`` backend
(``torch.ops.fastgan.*``, one each even where its GPU version runs two kernels, e.g. cuBLAS plus
the epilogue) and every Triton kernel launch. Not counted: views and metadata (``view``, ``t``,
``slice``, ``detach``, ...), allocations without a fill (``empty*``), profiler markers. Reads
of a device value on the host (``.item()``, ``aten._local_scalar_dense``) are counted apart as
host syncs: on a GPU each is a copy and a stall, and a CUDA graph cannot hold one.

It is a proxy: on a GPU a cuBLAS or cuDNN call may be several kernels, torch's fused Adam one
kernel per group of tensors, and CUDA graphs change nothing in the count. What it shows without a
GPU is fusion: an op that disappears from the count is a kernel less on the GPU. The cuda
backend is counted with its kernels forced on (``FASTGAN_CPU_KERNELS=always``), as it runs on a
GPU, not with the small-tensor fallback to the reference it takes on a CPU.
"""
from __future__ import annotations

import contextlib
from collections import Counter
from typing import Callable, Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_NOT_WORK = ("aten.empty", "aten.new_empty", "aten.empty_like", "aten.empty_strided",
             "aten.detach", "aten.alias", "aten.lift_fresh", "aten.sym_", "aten.is_",
             "aten.set_.", "aten._has_compatible_shallow_copy_type", "profiler.",
             "aten.resize_", "aten.result_type", "aten.promote_types", "aten.size", "aten.stride",
             "aten.is_nonzero")
_HOST_SYNC = ("aten._local_scalar_dense", "aten.item")


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter = Counter()
        self.syncs: Counter = Counter()
        self.paused = 0     # inside a Triton launch: the interpreter's own tensor copies
        self.triton: Counter = Counter()   # Triton launches, by kernel

    def launches(self) -> int:
        return sum(self.triton.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if self.paused:
            pass
        elif name.startswith(_HOST_SYNC):
            self.syncs[name] += 1
        elif name.startswith("fastgan_triton."):
            # the triton backend's custom ops: counted as the Triton kernels they launch (each
            # counted by _count_triton), or as one op when they launch none
            before = self.launches()
            out = func(*args, **(kwargs or {}))
            if self.launches() == before:
                self.ops[name] += 1
            return out
        elif not (func.is_view or name.startswith(_NOT_WORK)):
            self.ops[name.rsplit(".", 1)[0] if name.startswith("aten.") else name] += 1
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _count_triton(counter: Counter, mode: _Counter):
    """Count Triton kernel launches (JIT on a GPU, the interpreter on a CPU), and nothing of
    what the interpreter does with tensors to run one."""
    patched = []
    try:
        from triton.runtime import jit
        classes = [jit.JITFunction]
        try:
            from triton.runtime.interpreter import InterpretedFunction
            classes.append(InterpretedFunction)
        except ImportError:
            pass
    except ImportError:
        classes = []
    for cls in classes:
        orig = cls.run

        def run(self, *a, _orig=orig, **k):
            fn = getattr(self, "fn", None)
            if not mode.paused:
                counter[f"triton.{getattr(fn, '__name__', 'kernel')}"] += 1
            mode.paused += 1
            try:
                return _orig(self, *a, **k)
            finally:
                mode.paused -= 1

        cls.run = run
        patched.append((cls, "run", orig))
    # The Triton Adam's tensor table is host work on CPU tensors (on a GPU one copy to the
    # device when an address changed, none in a CUDA graph): not counted.
    try:
        from fastgan.kernels import adam
    except Exception:
        adam = None
    try:   # direct (cached) launches bypass JITFunction.run: none while counting
        from fastgan.kernels import launch
        suspend = launch.suspended()
    except Exception:
        suspend = contextlib.nullcontext()
    if adam is not None:
        host = adam._host_table

        def host_table(*a, _orig=host, **k):
            mode.paused += 1
            try:
                return _orig(*a, **k)
            finally:
                mode.paused -= 1

        adam._host_table = host_table
        patched.append((adam, "_host_table", host))
    try:
        with suspend:
            yield
    finally:
        for owner, name, orig in patched:
            setattr(owner, name, orig)


def count_work(fn: Callable[[], None]) -> Dict[str, object]:
    """{kernels, host_syncs, by_op} of the device work ``fn()`` issues."""
    mode = _Counter()
    with _count_triton(mode.triton, mode), mode:
        fn()
    by_op = mode.ops + mode.triton
    return {"kernels": sum(by_op.values()), "host_syncs": sum(mode.syncs.values()),
            "by_op": dict(by_op.most_common())}


@contextlib.contextmanager
def gpu_like_cpu_kernels():
    """The cuda backend's C++ kernels for every CPU tensor, as its CUDA kernels run on a GPU."""
    import os
    old = os.environ.get("FASTGAN_CPU_KERNELS")
    os.environ["FASTGAN_CPU_KERNELS"] = "always"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("FASTGAN_CPU_KERNELS", None)
        else:
            os.environ["FASTGAN_CPU_KERNELS"] = old


def gpu_like_optimizers(engine) -> bool:
    """Swap the engine's optimizers for the Adam a GPU runs (``optim.as_gpu_adam``: one Triton
    launch per network, the interpreter on a CPU), so that the count is the GPU's. False, and
    nothing swapped, without the interpreter."""
    import os
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    from fastgan.engine.optim import _triton_kernel, as_gpu_adam
    if _triton_kernel() is None:
        return False
    engine.opt_d, engine.opt_g = as_gpu_adam(engine.opt_d), as_gpu_adam(engine.opt_g)
    return True
