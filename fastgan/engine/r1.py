"""The R1 gradient penalty (Mescheder et al. 2018; StyleGAN2's form) on real images:
``gamma / 2 * E_x[ ||grad_x sum D(x)||^2 ]``, differentiable with respect to D's parameters
through double backward (``create_graph=True``).

Double backward exists per backend and op: the reference everywhere; the cuda backend for
linear_act, bias_act and gan_loss but not bn_act (its C++ formula raises NotImplementedError
when the second backward reaches it); the triton backend for none (its backward kernels are not
differentiable: the penalty has no graph, or misses the second-order terms). ``check_r1`` turns that into
one clear error before anything runs. Convolutions are torch's, differentiable twice.

Lazy regularisation (StyleGAN2, every K D steps): add ``K * r1_penalty(...)`` on those steps.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn

from fastgan import ops
from fastgan.nn import BatchNormAct

Tensor = torch.Tensor


def check_r1(discriminator: nn.Module, backend: Optional[str] = None) -> None:
    """Raise ValueError (one line) when ``backend`` (default: the active one) cannot
    differentiate ``discriminator`` twice."""
    backend = backend or ops.active_backend()
    if backend == "triton":
        raise ValueError("--r1 needs double backward, which the triton backend does not "
                         "have; use --backend cuda or reference")
    if backend == "cuda" and any(isinstance(m, BatchNormAct) for m in discriminator.modules()):
        raise ValueError("--r1 with a discriminator that has BatchNorm needs double backward "
                         "through bn_act, which the cuda backend does not have; use --backend "
                         "reference, or a D without BatchNorm")


def r1_penalty(logits_fn: Callable[[Tensor], Tensor], real: Tensor, gamma: float,
               discriminator: Optional[nn.Module] = None) -> Tensor:
    """``gamma / 2 * mean_i ||d sum(D(x)) / d x_i||^2`` over the batch of ``real`` images.

    ``logits_fn(x)`` returns D's logits for images ``x`` (a closure for a conditional D);
    ``discriminator``, when given, is checked with ``check_r1`` first. The penalty's graph
    is kept (``create_graph``): backward through it reaches D's parameters.
    """
    if discriminator is not None:
        check_r1(discriminator)
    x = real.detach().requires_grad_(True)
    logits = logits_fn(x)
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad.square().flatten(1).sum(1).mean() * (gamma / 2)
