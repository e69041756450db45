"""BatchNormAct: BatchNorm followed by an activation as one op; buffers and parameters named like
torch.nn's BatchNorm (``weight``, ``bias``, ``running_mean``, ``running_var``)."""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn as nn

from fastgan import ops


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
