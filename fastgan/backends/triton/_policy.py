"""Policy of the triton backend: where it runs, which call path the registry entries take, and
how fp32 dots follow the TF32 setting."""
from __future__ import annotations

import os
from typing import Callable

import torch

from fastgan.kernels import config

# Device 'cuda' always; 'cpu' only under TRITON_INTERPRET=1 (the interpreter runs the same
# kernels on CPU tensors, for tests).
DEVICE_TYPES = ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)

# True: in eager mode the registry entries call the launchers through a plain
# torch.autograd.Function, which costs far less Python per call than the torch.library custom
# ops' dispatcher (it matters for the variants' small layers). Under torch.compile (and whenever
# this is False) the custom ops are called, so traced graphs see opaque ops with fake
# implementations. Both paths run the same launchers and the same backward.
EAGER_FAST_PATH: bool = True


def use_custom_op() -> bool:
    """Whether a registry entry should call the torch.library custom op (see EAGER_FAST_PATH)."""
    if not EAGER_FAST_PATH:
        return True
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # torch < 2.3
        return True


def set_fp32_precision(tf32: bool) -> Callable[[], None]:
    """Make fp32 ``tl.dot`` follow the TF32 switch: ``config.default_dot_precision()`` (the
    environment's, else tf32; ieee under the interpreter) when allowed, ``"ieee"`` when not.
    Returns the function that restores the previous setting."""
    old = config.DOT_PRECISION
    config.set_dot_precision(config.default_dot_precision() if tf32 else "ieee")
    return lambda: config.set_dot_precision(old)
