"""The catalogue of fastgan's backends: their names, modules, auto order (per device and mode)
and per-device set-up.

A backend is a package ``fastgan/backends/<name>/`` with one module per op (``linear_act.py``,
``bias_act.py``, ``bn_act.py``, ``gan_loss.py``); importing the package registers its ops with
the registry (``fastgan.ops.register``). Each backend package exports its op implementations
by op name (``fastgan.backends.reference.bias_act`` is the function); a per-op module is reached
with ``importlib.import_module("fastgan.backends.<name>.<op>")``.

Adding a backend: its folder, plus one line in :data:`BACKENDS`. The registry reads this
catalogue on first use (it never imports a backend before one is asked for), and the CLI,
trainer and benchmark take their backend names from here.

This module names modules only: importing it imports neither torch nor a backend.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, Optional, Tuple

REFERENCE = "reference"   # the ground truth of the op contract: always there, on every device


@dataclass(frozen=True, eq=False)
class Backend:
    name: str
    module: str                      # imported on first use; importing it registers its ops
    # Key -> preference (lower first); absent: never auto. A key is a device type (its order in
    # graph mode, and in eager mode unless the device has an "<device>/eager" key): see auto_order.
    auto: Dict[str, int]
    optional: bool = True            # may fail to load (listed by `fastgan doctor`)
    env: Dict[str, Dict[str, str]] = field(default_factory=dict)   # set before loading, per device
    not_benchmarked: Dict[str, str] = field(default_factory=dict)  # device type -> why not
    fp32_precision: Optional[str] = None   # "module:function(tf32) -> restore", see tf32()
    cpu_policy: Optional[str] = None       # "module:function() -> str", doctor's CPU dispatch line


# Listing order: argparse choices and messages ("reference, triton, cuda").
# auto's orders where no measurement of the variant and device applies (auto_choice), from mlp 64
# in bench/results/2026-11-23-h100-prelim.md (H100): in a CUDA graph triton was fastest, then
# cuda, then reference (0.401, 0.452, 0.477 ms);
# eagerly every fused backend was slower than plain PyTorch (triton 0.38-0.55x, cuda 0.72-0.92x:
# launcher and Python overhead per op), so eager auto on CUDA is the reference.
BACKENDS: Tuple[Backend, ...] = (
    Backend(REFERENCE, "fastgan.backends.reference", {"cuda": 2, "cuda/eager": 0, "cpu": 1},
            optional=False),
    Backend("triton", "fastgan.backends.triton", {"cuda": 0, "cuda/eager": 2},
            env={"cpu": {"TRITON_INTERPRET": "1"}},   # Triton on CPU = its interpreter
            not_benchmarked={"cpu": "Triton on CPU is its interpreter (TRITON_INTERPRET=1, for "
                                    "tests, not speed): benchmark it on a GPU"},
            fp32_precision="fastgan.backends.triton._policy:set_fp32_precision"),
    Backend("cuda", "fastgan.backends.cuda", {"cuda": 1, "cuda/eager": 1, "cpu": 0},
            cpu_policy="fastgan.backends.cuda._cpu_policy:doctor_line"),
)


def names() -> Tuple[str, ...]:
    return tuple(b.name for b in BACKENDS)


def get(name: str) -> Optional[Backend]:
    """The catalogue entry of ``name``, or None (a backend registered only at run time)."""
    for b in BACKENDS:
        if b.name == name:
            return b
    return None


def auto_order(device_type: str, graph: bool = True) -> Tuple[str, ...]:
    """The backends ``auto`` tries on ``device_type``, best first: in graph mode (the iteration
    replayed from a CUDA graph, the default of ``fastgan train`` on CUDA) or eagerly. A device
    without an eager key (CPU: no graphs there) has one order for both."""
    key = f"{device_type}/eager"
    if graph or not any(key in b.auto for b in BACKENDS):
        key = device_type
    ranked = sorted((b for b in BACKENDS if key in b.auto), key=lambda b: b.auto[key])
    return tuple(b.name for b in ranked)


def auto_choice(device_type: str, graph: bool = True, variant: Optional[str] = None,
                device_name: Optional[str] = None) -> Tuple[Tuple[str, ...], str]:
    """(the order ``auto`` tries, best first; where it comes from): measured for the variant on
    this device (a GPU's name) in this mode (fastgan/backends/measured.py), else the catalogue's
    :func:`auto_order`."""
    from . import measured
    m = measured.lookup(device_type, graph, variant, device_name)
    if m is not None:
        return tuple(m[0]), m[1]
    why = "no measurement of " + (f"{variant} on {device_type}" if variant else "a variant")
    return auto_order(device_type, graph), f"the catalogue's order ({why})"


def prepare(name: str, device_type: str) -> None:
    """Set what backend ``name`` needs in the environment on ``device_type`` before it is loaded
    (the triton backend on CPU: TRITON_INTERPRET=1). Values already set are kept."""
    b = get(name)
    for k, v in (b.env.get(device_type, {}) if b else {}).items():
        os.environ.setdefault(k, v)


def hook(spec: str) -> Callable:
    """The function named by a ``"module:function"`` hook of the catalogue."""
    module, _, fn = spec.partition(":")
    return getattr(importlib.import_module(module), fn)


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 on or off everywhere for the duration: cuBLAS matmuls, cuDNN convolutions and the
    fp32 dots of every loaded backend that has an ``fp32_precision`` hook; all restored on exit.
    A backend is not imported for this: resolve (load) the run's backend before entering."""
    import torch
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    restores = []
    try:
        torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
        torch.backends.cudnn.allow_tf32 = bool(enabled)
        for b in BACKENDS:
            if b.fp32_precision and b.module in sys.modules:
                restores.append(hook(b.fp32_precision)(bool(enabled)))
        yield
    finally:
        for restore in reversed(restores):
            restore()
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


__all__ = ["Backend", "BACKENDS", "REFERENCE", "names", "get", "auto_order", "auto_choice",
           "prepare", "hook", "tf32"]
