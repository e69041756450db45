"""Settings shared by the Triton kernels of fastgan.

``DOT_PRECISION``: how ``tl.dot`` multiplies **fp32** operands.

* ``"tf32"`` (default on CUDA): TensorFloat-32 tensor cores, fp32 accumulation; about 1e-3
  relative error per product, like ``torch.backends.cuda.matmul.allow_tf32 = True``.
* ``"ieee"`` (default under ``TRITON_INTERPRET=1``): true fp32 products (on a GPU: slower FFMA
  path, no wgmma).
* ``"tf32x3"``: three tf32 products, close to fp32 accuracy on tensor cores.

Override with the environment variable ``FASTGAN_TRITON_DOT_PRECISION`` before the first call,
or with :func:`set_dot_precision` at any time (kernels are specialised on it, so a change only
costs a compile); ``fastgan.backends.tf32`` sets it for a run. bf16 operands always go to the
tensor cores as bf16 with fp32 accumulation; fp64 operands (tests only) use ``"ieee"``.

``INTERPRET``: ``TRITON_INTERPRET=1`` was set when this module was imported (Triton decides at
decoration time, so the variable must be set before ``fastgan.kernels`` is imported).
The interpreter's ``tl.dot`` multiplies bf16 operands as raw 16-bit integers (Triton 3.8), so
under the interpreter bf16 operands are upcast to fp32 just before the dot (exact: every bf16 is
an fp32), see :func:`dot_upcast`.

Under the interpreter fastgan also turns off its integer-overflow sanitizer (below) and replaces
its element-by-element loads and stores with vectorized ones (``_interpreter_memory``; set
``FASTGAN_INTERPRET_NATIVE_MEMORY=1`` to keep Triton's own). Neither changes any result or the
code compiled for a GPU.
"""
from __future__ import annotations

import os

import torch

from fastgan.env_choices import word

INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Interpreter-only: cost-based tile sizes. The interpreter's cost is per program instance and
# per interpreted op (~0.1-1 ms each), not per element, so problems above this many
# multiply-adds (matmul) or elements (per-channel sweeps) run with tiles fitted to the whole
# layer (the variants' layers, even at batch 4). The parity tests (tests/ops)
# raise both so that their small shapes cross block edges as on a GPU.
INTERPRET_BIG_WORK: int = 1 << 15
INTERPRET_BIG_SWEEP: int = 1 << 12


def _interpreter_without_overflow_checks() -> None:
    """Skip the interpreter's integer-overflow sanitizer (it recomputes every int32 add/mul of
    a kernel in int64 and compares, then hands the result to ``device_assert``, which discards
    it unless ``debug`` is on). On a GPU the same checks compile away with ``debug`` off, so
    this changes no result; it halves the interpreter's time (Triton 3.8)."""
    try:
        from dataclasses import replace

        from triton.runtime import interpreter
        builder = interpreter.interpreter_builder
        if not builder.options.debug:
            builder.options = replace(builder.options, sanitize_overflow=False)
    except (ImportError, AttributeError, TypeError):   # another Triton layout: leave it as is
        pass


if INTERPRET:
    _interpreter_without_overflow_checks()
    if os.environ.get("FASTGAN_INTERPRET_NATIVE_MEMORY", "0") != "1":
        from ._interpreter_memory import install as _install_vector_memory
        _install_vector_memory()

_VALID = ("tf32", "ieee", "tf32x3")


def default_dot_precision() -> str:
    """The fp32 dot precision when TF32 is allowed: the environment's, else tf32 (ieee under the
    interpreter)."""
    return word("FASTGAN_TRITON_DOT_PRECISION", "ieee" if INTERPRET else "tf32")


DOT_PRECISION: str = default_dot_precision()


def set_dot_precision(p: str) -> None:
    """Set how fp32 ``tl.dot`` runs: ``tf32``, ``ieee`` or ``tf32x3``."""
    global DOT_PRECISION
    if p not in _VALID:
        raise ValueError(f"dot precision must be one of {_VALID}, not {p!r}")
    DOT_PRECISION = p


def dot_precision(dtype: torch.dtype) -> str:
    """The ``input_precision`` passed to ``tl.dot`` for operands of ``dtype``."""
    return DOT_PRECISION if dtype == torch.float32 else "ieee"


def dot_upcast(dtype: torch.dtype) -> bool:
    """Whether to upcast 16-bit dot operands to fp32 (works around the interpreter's bf16 dot)."""
    return INTERPRET and dtype in (torch.bfloat16, torch.float16)


def uses_tf32(dtype: torch.dtype) -> bool:
    """True when a matmul on ``dtype`` inputs is rounded to tf32 (for test tolerances)."""
    return dtype == torch.float32 and DOT_PRECISION != "ieee"


SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
