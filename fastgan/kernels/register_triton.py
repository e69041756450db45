"""Registers the Triton implementations of every op with the op registry (backend 'triton').

Device 'cuda' always; device 'cpu' only under ``TRITON_INTERPRET=1`` (the interpreter runs the
same kernels on CPU tensors, for tests). Importing this module imports triton: when triton is
missing the registry records the ImportError and the backend is reported unavailable.
"""
from __future__ import annotations

import os

import triton  # noqa: F401  (fail early and clearly when triton is not installed)

from fastgan.ops.registry import register

from .bias_act import bias_act
from .bn_act import bn_act
from .gan_loss import gan_loss
from .linear_act import linear_act

DEVICE_TYPES = ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)

register("linear_act", "triton", DEVICE_TYPES, linear_act)
register("bias_act", "triton", DEVICE_TYPES, bias_act)
register("bn_act", "triton", DEVICE_TYPES, bn_act)
register("gan_loss", "triton", DEVICE_TYPES, gan_loss)

__all__ = ["DEVICE_TYPES", "linear_act", "bias_act", "bn_act", "gan_loss"]
