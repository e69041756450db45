"""gather_scale, reference: ``out = images[idx] * scale + shift``, the literal torch ops (a gather,
a multiply that converts the uint8 values, an add where there is a shift)."""
from __future__ import annotations

import torch

from fastgan.ops.iteration_checks import gather_scale_args
from fastgan.ops.registry import register

from ._devices import ALL_DEVICES


def gather_scale(images: torch.Tensor, idx: torch.Tensor, scale: float, shift: float,
                 out: torch.Tensor) -> torch.Tensor:
    gather_scale_args(images, idx, out)
    x = torch.index_select(images, 0, idx).view(out.shape)
    if out.dtype != torch.get_default_dtype():
        x = x.to(out.dtype)     # uint8 * float computes in the default dtype: in out's, here
    torch.mul(x, scale, out=out)
    if shift:
        out.add_(shift)
    return out


register("gather_scale", "reference", ALL_DEVICES, gather_scale)
