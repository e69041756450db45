"""BatchNormAct: BatchNorm followed by an activation as one op; buffers and parameters named like
torch.nn's BatchNorm (``weight``, ``bias``, ``running_mean``, ``running_var``)."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn as nn

from fastgan import ops

from ._autocast import _autocast_dtype, _cast
from .linear import FusedLinearAct


def uses_batch_statistics(module: nn.Module) -> bool:
    """True when ``module`` holds a BatchNorm, which needs two or more samples in training."""
    return any(isinstance(m, (BatchNormAct, nn.modules.batchnorm._BatchNorm))
               for m in module.modules())


@contextlib.contextmanager
def bn_groups(module: nn.Module, groups: int) -> Iterator[None]:
    """Inside: every BatchNormAct in ``module`` normalises ``groups`` equal batch chunks with
    their own statistics (a D with BN scoring [real; fake] in one pass: 2); restored after."""
    layers = [m for m in module.modules() if isinstance(m, BatchNormAct)]
    prev = [m.groups for m in layers]
    for m in layers:
        m.groups = int(groups)
    try:
        yield
    finally:
        for m, g in zip(layers, prev):
            m.groups = g


class BatchNormAct(nn.Module):
    """Training-mode BatchNorm over N(,H,W) followed by an activation, as one op.

    ``affine="gamma_beta"`` (PyTorch), ``"beta"`` (TF-slim's default: no scale), or ``"none"``.
    ``momentum`` is PyTorch's convention (Keras momentum m is 1 - m here).
    ``unbiased_running_var``: the running variance tracks the unbiased batch variance (PyTorch)
    or, when False, the biased one (Keras' BatchNormalization on 2-D input).
    ``groups`` (an attribute, 1 by default; see :func:`bn_groups`): in training, x's batch is
    split into that many equal chunks, each normalised with its own statistics, as that many
    successive calls would (the running statistics updated chunk 0 first).
    """

    def __init__(self, num_features: int, slope: Optional[float] = None, momentum: float = 0.1,
                 eps: float = 1e-5, affine: str = "gamma_beta", unbiased_running_var: bool = True):
        super().__init__()
        if affine not in ("gamma_beta", "beta", "none"):
            raise ValueError(f"BatchNormAct: affine must be gamma_beta, beta or none, not {affine!r}")
        self.num_features, self.slope, self.momentum, self.eps = num_features, slope, momentum, eps
        self.unbiased_running_var = unbiased_running_var
        self.groups = 1
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
        return ops.bn_act(x, w, b, self.running_mean, self.running_var, self.training,
                          self.momentum, self.eps, self.slope, self.unbiased_running_var,
                          self.groups)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, slope={self.slope}, momentum={self.momentum}, "
                f"eps={self.eps}, gamma={self.weight is not None}"
                + ("" if self.unbiased_running_var else ", biased running var"))


# ---- linear + training-mode BatchNorm as one op (issue 20) ----

def _fusable(lin: nn.Module, bn: nn.Module) -> bool:
    # exactly these two layers (a SyncBatchNormAct needs cross-rank statistics), one BN group
    return (isinstance(lin, FusedLinearAct) and type(bn) is BatchNormAct and bn.groups == 1
            and lin.out_features == bn.num_features)


def linear_bn_act(lin: nn.Module, bn: "BatchNormAct", x: torch.Tensor) -> torch.Tensor:
    """``bn(lin(x))`` as one op (fastgan.ops.linear_bn_act) when ``lin`` is a FusedLinearAct and
    ``bn`` a BatchNormAct with one group; else the two layers in turn. The modules keep their
    parameters and buffers, so state dicts are unchanged."""
    if not _fusable(lin, bn):
        return bn(lin(x))
    dt = _autocast_dtype(x)
    w = bn.weight if bn.weight is not None else bn.gamma_const
    b = bn.bias if bn.bias is not None else bn.beta_const
    return ops.linear_bn_act(_cast(x, dt), _cast(lin.weight, dt), _cast(lin.bias, dt), w, b,
                             bn.running_mean, bn.running_var, bn.training, bn.momentum, bn.eps,
                             lin.slope, bn.slope, bn.unbiased_running_var)


class LinearBNSequential(nn.Sequential):
    """nn.Sequential (same state dict keys: ``0.weight``, ``1.running_mean``...) that runs each
    (FusedLinearAct, BatchNormAct) pair as one :func:`linear_bn_act`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mods = list(self)
        i = 0
        while i < len(mods):
            if i + 1 < len(mods) and _fusable(mods[i], mods[i + 1]):
                x = linear_bn_act(mods[i], mods[i + 1], x)
                i += 2
            else:
                x = mods[i](x)
                i += 1
        return x
