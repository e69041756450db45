"""Layers the variants are written with. Each forward is one call into the op registry, so the
active backend decides how it runs; parameters and buffers are laid out like torch.nn's own
(``weight``, ``bias``, ``running_mean``...), so state dicts read like PyTorch's."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastgan import ops


def _autocast_dtype(x: torch.Tensor) -> Optional[torch.dtype]:
    """The dtype autocast would compute a matmul in, or None outside autocast. Custom ops are not
    autocast by PyTorch, so the layers cast their inputs themselves (same policy as F.linear)."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return None


def _cast(t: Optional[torch.Tensor], dtype: Optional[torch.dtype]) -> Optional[torch.Tensor]:
    return t if t is None or dtype is None or t.dtype == dtype else t.to(dtype)


def uses_batch_statistics(module: nn.Module) -> bool:
    """True when ``module`` holds a BatchNorm, which needs two or more samples in training."""
    return any(isinstance(m, (BatchNormAct, nn.modules.batchnorm._BatchNorm))
               for m in module.modules())


class FusedLinearAct(nn.Linear):
    """act(x @ W.T + b) as one op. ``slope``: None identity, 0 ReLU, else LeakyReLU(slope)."""

    def __init__(self, in_features: int, out_features: int, slope: Optional[float] = None,
                 bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _autocast_dtype(x)
        return ops.linear_act(_cast(x, dt), _cast(self.weight, dt), _cast(self.bias, dt),
                              self.slope)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", slope={self.slope}"


class BatchNormAct(nn.Module):
    """Training-mode BatchNorm over N(,H,W) followed by an activation, as one op.

    ``affine="gamma_beta"`` (PyTorch), ``"beta"`` (TF-slim's default: no scale), or ``"none"``.
    ``momentum`` is PyTorch's convention (Keras momentum m is 1 - m here).
    ``unbiased_running_var``: the running variance tracks the unbiased batch variance (PyTorch)
    or, when False, the biased one (Keras' BatchNormalization on 2-D input).
    """

    def __init__(self, num_features: int, slope: Optional[float] = None, momentum: float = 0.1,
                 eps: float = 1e-5, affine: str = "gamma_beta", unbiased_running_var: bool = True):
        super().__init__()
        if affine not in ("gamma_beta", "beta", "none"):
            raise ValueError(f"BatchNormAct: affine must be gamma_beta, beta or none, not {affine!r}")
        self.num_features, self.slope, self.momentum, self.eps = num_features, slope, momentum, eps
        self.unbiased_running_var = unbiased_running_var
        self.weight = nn.Parameter(torch.ones(num_features)) if affine == "gamma_beta" else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine != "none" else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        # Without a learnable gamma (or beta) the op still gets a constant tensor: every backend
        # then sees one signature, and torch 2.11's CUDA autograd fails on a None BN weight.
        if self.weight is None:
            self.register_buffer("gamma_const", torch.ones(num_features), persistent=False)
        if self.bias is None:
            self.register_buffer("beta_const", torch.zeros(num_features), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight if self.weight is not None else self.gamma_const
        b = self.bias if self.bias is not None else self.beta_const
        if self.unbiased_running_var or not self.training:
            return ops.bn_act(x, w, b, self.running_mean, self.running_var, self.training,
                              self.momentum, self.eps, self.slope)
        # Every backend updates with the unbiased variance: into a copy, t = (1-m) r + m s²
        # n/(n-1) (the op may keep it for its backward, so it is not touched again); then
        # r (1-m)/n + t (n-1)/n = (1-m) r + m s². Device work only.
        n = x.numel() // x.shape[1]
        t = self.running_var.clone()
        y = ops.bn_act(x, w, b, self.running_mean, t, True, self.momentum, self.eps, self.slope)
        with torch.no_grad():
            self.running_var.mul_((1 - self.momentum) / n).add_(t, alpha=(n - 1) / n)
        return y

    def extra_repr(self) -> str:
        return (f"{self.num_features}, slope={self.slope}, momentum={self.momentum}, "
                f"eps={self.eps}, gamma={self.weight is not None}"
                + ("" if self.unbiased_running_var else ", biased running var"))


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
