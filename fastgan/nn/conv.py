"""ConvBNAct: a convolution (cuDNN) followed by the fused BatchNorm + activation or bias +
activation op."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan import ops

from ._autocast import _cast
from .batchnorm import BatchNormAct


class ConvBNAct(nn.Module):
    """Conv2d or ConvTranspose2d, then BatchNorm + activation (one op) or bias + activation.

    The convolution itself stays with cuDNN; what follows it is fused. Without BN the conv's bias
    is applied in the activation epilogue (``bias_act``), not by the convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, output_padding: int = 0, transposed: bool = False,
                 bias: bool = True, bn: bool = False, slope: Optional[float] = None,
                 bn_momentum: float = 0.1, bn_eps: float = 1e-5, bn_affine: str = "gamma_beta"):
        super().__init__()
        if transposed:
            self.conv = nn.ConvTranspose2d(in_ch, out_ch, kernel_size, stride, padding,
                                           output_padding, bias=bias)
        else:
            self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, bias=bias)
        self.transposed = transposed
        self.slope = slope
        self.bn = BatchNormAct(out_ch, slope, bn_momentum, bn_eps, bn_affine) if bn else None

    def _conv(self, x: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        c = self.conv
        if self.transposed:
            return F.conv_transpose2d(x, c.weight, bias, c.stride, c.padding, c.output_padding)
        return F.conv2d(x, c.weight, bias, c.stride, c.padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            return self.bn(self._conv(x, self.conv.bias))
        y = self._conv(x, None)
        return ops.bias_act(y, _cast(self.conv.bias, y.dtype), self.slope, 1)


# ---- memory format (--memory-format) ---------------------------------------------------------
MEMORY_FORMATS = ("nchw", "channels_last")


def torch_memory_format(name: str) -> torch.memory_format:
    if name not in MEMORY_FORMATS:
        raise ValueError(f"memory format must be one of {', '.join(MEMORY_FORMATS)}, not {name!r}")
    return torch.channels_last if name == "channels_last" else torch.contiguous_format


def has_convolutions(modules) -> bool:
    """Whether any module holds a 2-D (transposed) convolution: only then has the image layout
    any effect."""
    return any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
               for mod in modules for m in mod.modules())


def to_memory_format(modules, name: str) -> None:
    """Every 4-D parameter and buffer of ``modules`` in the layout ``name``, in place (the
    Parameter objects stay the same, so optimizers built on them remain valid). With
    channels_last weights and inputs cuDNN runs its NHWC kernels, and the convolutions' outputs
    (and gradients) are NHWC too, which bn_act / bias_act take as [rows, C]."""
    fmt = torch_memory_format(name)
    with torch.no_grad():
        for mod in modules:
            # Tensor by tensor, not Module.to: that swaps tensor subclasses (the roofline's fake
            # tensors) and refuses ones with weak references.
            for t in list(mod.parameters()) + list(mod.buffers()):
                if t.dim() == 4 and not t.is_contiguous(memory_format=fmt):
                    t.data = t.data.contiguous(memory_format=fmt)
