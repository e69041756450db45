"""gather_scale for the cuda backend: ``fastgan::gather_scale`` (the gather and the uint8 ->
float conversion of a batch in one kernel, in place on ``out``, no autograd) with its fake and
the registry entries. On CPU tensors the C++ kernel runs whatever the size (one pass where the
reference runs three ATen ops; measured faster from 8 to 1024 MNIST images), unless
``FASTGAN_CPU_KERNELS=never``."""
from __future__ import annotations

import torch

from fastgan.backends.reference import gather_scale as _reference
from fastgan.ops.iteration_checks import gather_scale_args
from fastgan.ops.registry import register

from ._cpu_policy import _cpu_policy
from ._extension import DEVICE_TYPES, _ops


@torch.library.register_fake("fastgan::gather_scale")
def _(images, idx, scale, shift, out):
    return None


def gather_scale(images, idx, scale, shift, out):
    gather_scale_args(images, idx, out)
    _ops.gather_scale(images, idx, float(scale), float(shift), out)
    return out


def gather_scale_cpu(*args):
    return (_reference if _cpu_policy() == "never" else gather_scale)(*args)


register("gather_scale", "cuda", ("cpu",), gather_scale_cpu)
if "cuda" in DEVICE_TYPES:
    register("gather_scale", "cuda", ("cuda",), gather_scale)
