"""gather_scale: ``out[i] = images[idx[i]] * scale + shift``, the uint8 -> float conversion of a
batch fused into its gather (one launch instead of a gather, a multiply and an add).

Each program converts one block of one image: the row comes from ``idx`` (read on the device),
the image is contiguous from ``images + row * s_row`` (any row stride: a data set seen as
overlapping runs of images works too). The product and the sum are rounded separately, never
contracted into an FMA (launched with ``enable_fp_fusion=False``), so the result is bit-identical
to torch's ``mul`` then ``add_``. float32 output only: a Python float reaches a kernel as fp32,
which cannot carry a float64 scale exactly (the backend runs the reference for float64).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import config
from ._common import next_pow2
from .launch import cached


@cached
@triton.jit
def _gather_scale_kernel(img_ptr, idx_ptr, out_ptr, px, s_row, scale, shift,
                         HAS_SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < px
    row = tl.load(idx_ptr + i).to(tl.int64)
    x = tl.load(img_ptr + row * s_row + offs, mask=m, other=0).to(tl.float32)
    y = x * tl.cast(scale, tl.float32)
    if HAS_SHIFT:
        y = y + tl.cast(shift, tl.float32)
    tl.store(out_ptr + i.to(tl.int64) * px + offs, y, mask=m)


def gather_scale_into(images: torch.Tensor, idx: torch.Tensor, scale: float, shift: float,
                      out: torch.Tensor) -> None:
    """Launch on checked arguments (fastgan.ops.iteration_checks): out float32, contiguous."""
    n, px = idx.numel(), out.numel() // max(1, idx.numel())
    if n == 0 or px == 0:
        return
    if images.dim() > 1 and not images[0].is_contiguous():
        images = images.contiguous()
    block = min(4096 if config.INTERPRET else 1024, next_pow2(px))
    _gather_scale_kernel[(n, triton.cdiv(px, block))](
        images, idx, out, px, images.stride(0), float(scale), float(shift),
        HAS_SHIFT=bool(shift), BLOCK=block, enable_fp_fusion=False)
