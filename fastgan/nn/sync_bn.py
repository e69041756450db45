"""Synchronized BatchNorm: a BatchNormAct whose training-mode statistics span every rank.

Synchronization is on only inside :func:`sync_scope` (the engine opens it for one training
iteration), so sampling or evaluating on one rank alone uses local statistics and never waits for
the other ranks. :func:`convert_sync_bn` swaps the layers into built networks.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch
import torch.distributed as dist

from fastgan import ops

from .batchnorm import BatchNormAct


class _SyncState:
    active = False          # set by sync_scope() for the duration of one iteration
    group = None


_SYNC = _SyncState()


@contextlib.contextmanager
def sync_scope(group=None) -> Iterator[None]:
    """Inside: every SyncBatchNormAct in training mode all-reduces its statistics over
    ``group`` (None: the default process group)."""
    prev = (_SYNC.active, _SYNC.group)
    _SYNC.active, _SYNC.group = True, group
    try:
        yield
    finally:
        _SYNC.active, _SYNC.group = prev


class SyncBatchNormAct(BatchNormAct):
    """BatchNormAct whose training-mode statistics span every rank (inside :func:`sync_scope`).

    Same parameters and buffers as BatchNormAct (state dicts are interchangeable); outside the
    scope (sampling, evaluation) it behaves exactly like BatchNormAct."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _SYNC.active and dist.is_initialized()):
            return super().forward(x)
        if self.groups != 1:
            raise NotImplementedError(
                "SyncBatchNormAct: grouped batch norm (groups > 1) across ranks is not "
                "implemented; score each group in its own pass")
        w = self.weight if self.weight is not None else self.gamma_const
        b = self.bias if self.bias is not None else self.beta_const
        return ops.sync_bn_act(x, w, b, self.running_mean, self.running_var, self.momentum,
                               self.eps, self.slope, _SYNC.group,
                               getattr(self, "unbiased_running_var", True))

    @classmethod
    def from_batchnorm(cls, m: BatchNormAct) -> "SyncBatchNormAct":
        """A SyncBatchNormAct holding ``m``'s very Parameter and buffer objects (an optimizer
        built on ``m`` steps it) under the same names, persistent or not as in ``m``."""
        new = cls.__new__(cls)
        new.__dict__.update(m.__dict__)
        # Own containers, same tensors: registering on one module does not change the other.
        for k in ("_parameters", "_buffers", "_non_persistent_buffers_set", "_modules"):
            new.__dict__[k] = copy.copy(m.__dict__[k])
        return new


def convert_sync_bn(modules) -> int:
    """Replace every BatchNormAct below ``modules`` by a SyncBatchNormAct sharing its parameters
    and buffers (optimizers and state dicts are unaffected). Returns how many were replaced."""
    done = {}
    for m in modules:
        if type(m) is BatchNormAct:
            raise TypeError("convert_sync_bn replaces the BatchNormAct children of a network; "
                            "pass the network that holds it")
        for parent in list(m.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is BatchNormAct:
                    if id(child) not in done:   # a layer shared by two parents stays shared
                        done[id(child)] = (child, SyncBatchNormAct.from_batchnorm(child))
                    setattr(parent, name, done[id(child)][1])
    return len(done)
