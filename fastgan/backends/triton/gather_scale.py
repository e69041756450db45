"""gather_scale for the triton backend: the custom op (in place on ``out``, no autograd: the
input is uint8), its fake and the registry entry. float64 output runs the reference (see
kernels/gather_scale.py)."""
from __future__ import annotations

import torch

from fastgan.backends.reference import gather_scale as _reference
from fastgan.kernels.gather_scale import gather_scale_into
from fastgan.ops.iteration_checks import gather_scale_args
from fastgan.ops.registry import register

from ._policy import DEVICE_TYPES, use_custom_op


@torch.library.custom_op("fastgan_triton::gather_scale", mutates_args=("out",))
def gather_scale_op(images: torch.Tensor, idx: torch.Tensor, scale: float, shift: float,
                    out: torch.Tensor) -> None:
    gather_scale_into(images, idx, scale, shift, out)


@gather_scale_op.register_fake
def _(images, idx, scale, shift, out):
    return None


def gather_scale(images: torch.Tensor, idx: torch.Tensor, scale: float, shift: float,
                 out: torch.Tensor) -> torch.Tensor:
    gather_scale_args(images, idx, out)
    if out.dtype != torch.float32:
        return _reference(images, idx, scale, shift, out)
    (gather_scale_op if use_custom_op() else gather_scale_into)(images, idx, float(scale),
                                                                float(shift), out)
    return out


register("gather_scale", "triton", DEVICE_TYPES, gather_scale)
