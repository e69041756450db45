"""Spectral normalisation of D's weights (Miyato et al. 2018): ``W / sigma(W)``, sigma from one
power iteration per training forward on persistent ``u`` / ``v`` buffers.

The formulas are those of ``torch.nn.utils.parametrizations.spectral_norm`` (same buffers, same
order of operations, so the two agree given the same ``u`` and ``v``). What this one adds:

* applied from outside as a ``torch.nn.utils.parametrize`` parametrization: the layers read
  ``self.weight`` (FusedLinearAct) or ``self.conv.weight`` (ConvBNAct) and get the normalised
  weight without an edit; ``apply_spectral_norm(D)`` covers every linear and conv weight;
* capturable: ``u`` and ``v`` are updated in place (``out=``), sigma stays on the device,
  nothing is read on the host;
* the power iteration runs with autocast off, in the weight's dtype (fp32 master weights under
  ``--precision bf16``): in bf16 the iteration would not converge to sigma;
* the initial ``u`` and ``v`` are drawn from a given ``torch.Generator`` (a seeded run), then 15
  power iterations as torch does.

In eval mode no iteration runs (the last ``u`` / ``v`` are used). As in torch, each training
forward through D iterates once, also the forward of the G step.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

Tensor = torch.Tensor


class SpectralNorm(nn.Module):
    """The parametrization: ``forward(weight) = weight / sigma``. ``dim`` is the output
    dimension (0; 1 for a transposed convolution)."""

    def __init__(self, weight: Tensor, n_power_iterations: int = 1, dim: int = 0,
                 eps: float = 1e-12, generator: Optional[torch.Generator] = None):
        super().__init__()
        if weight.ndim < 2:
            raise ValueError(f"spectral_norm: the weight must have 2 or more dimensions, got "
                             f"shape {tuple(weight.shape)}")
        if n_power_iterations < 1:
            raise ValueError(f"spectral_norm: n_power_iterations must be >= 1, got "
                             f"{n_power_iterations}")
        self.dim = dim % weight.ndim
        self.eps = eps
        self.n_power_iterations = n_power_iterations
        with torch.no_grad():
            mat = self._matrix(weight.detach())
            h, w = mat.shape
            kw = dict(generator=generator, device=mat.device, dtype=mat.dtype)
            self.register_buffer("_u", F.normalize(torch.randn(h, **kw), dim=0, eps=eps))
            self.register_buffer("_v", F.normalize(torch.randn(w, **kw), dim=0, eps=eps))
            self._power_method(mat, 15)

    def _matrix(self, weight: Tensor) -> Tensor:
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.dim()) if d != self.dim))
        return weight.flatten(1)

    @torch.no_grad()
    def _power_method(self, mat: Tensor, n: int) -> None:
        for _ in range(n):   # in place: the buffers a captured graph holds stay the same
            F.normalize(torch.mv(mat, self._v), dim=0, eps=self.eps, out=self._u)
            F.normalize(torch.mv(mat.H, self._u), dim=0, eps=self.eps, out=self._v)

    def forward(self, weight: Tensor) -> Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            mat = self._matrix(weight)
            if self.training:
                self._power_method(mat, self.n_power_iterations)
            # copies: a second forward (D(real), D(fake)) updates u and v in place before the
            # first one's backward, which needs the values it used
            u = self._u.clone(memory_format=torch.contiguous_format)
            v = self._v.clone(memory_format=torch.contiguous_format)
            sigma = torch.vdot(u, torch.mv(mat, v))
            return weight / sigma

    def right_inverse(self, value: Tensor) -> Tensor:
        return value


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1,
                  eps: float = 1e-12, dim: Optional[int] = None,
                  generator: Optional[torch.Generator] = None) -> nn.Module:
    """Register the parametrization on ``module.<name>`` (returns ``module``)."""
    weight = getattr(module, name)
    if dim is None:
        dim = 1 if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d,
                                       nn.ConvTranspose3d)) else 0
    parametrize.register_parametrization(
        module, name, SpectralNorm(weight, n_power_iterations, dim, eps, generator))
    return module


_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
           nn.ConvTranspose3d)


def apply_spectral_norm(model: nn.Module, generator: Optional[torch.Generator] = None,
                        n_power_iterations: int = 1, eps: float = 1e-12) -> List[str]:
    """Spectral-normalise the weight of every linear and convolution layer of ``model``
    (FusedLinearAct is an nn.Linear; ConvBNAct holds its convolution as ``.conv``), in module
    order; returns the names of the layers it changed. BatchNorm weights are left alone."""
    names = []
    for mname, m in list(model.named_modules()):
        if isinstance(m, _LAYERS) and not parametrize.is_parametrized(m, "weight"):
            spectral_norm(m, "weight", n_power_iterations, eps, generator=generator)
            names.append(mname)
    return names
