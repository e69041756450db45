"""The unit gradient: d(loss)/d(loss) = 1 as one constant tensor per (device, dtype).

The engine seeds each backward with it, and the fused losses' backward formulas recognise it by
its address (a host check, no sync), so they return the gradient their forward already wrote
instead of multiplying it by 1 (one kernel per loss). It must stay 1: it is an inference
tensor, so an in-place update of it outside inference mode is an error, not a silent change.
Backends that keep their formulas in C++ learn of each new one through :func:`on_new_unit`.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from torch._subclasses.fake_tensor import is_fake

_UNITS: Dict[Tuple[torch.device, torch.dtype], torch.Tensor] = {}
_HOOKS: List[Callable[[torch.Tensor], None]] = []


def unit_grad(device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The 0-d constant 1 on ``device`` (made outside any CUDA-graph capture: a fill inside one
    would run only on replay, so none is cached from there; nor a fake one: a later real
    backward seeded with it would train nothing)."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device, dtype)
    t = _UNITS.get(key)
    if t is None:
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        with torch.inference_mode():
            t = torch.ones((), device=device, dtype=dtype)
        if capturing or is_fake(t):   # under FakeTensorMode (the FLOP count): a fake, not kept
            return t
        _UNITS[key] = t
        for hook in _HOOKS:
            hook(t)
    return t


def is_unit_grad(g: torch.Tensor) -> bool:
    """Whether ``g`` is one of the unit gradients (the same memory, dtype and device)."""
    if g is None or g.dim() != 0 or not g.is_inference() or torch.compiler.is_compiling():
        return False     # a unit is an inference tensor; traced tensors have no address
    u = _UNITS.get((g.device, g.dtype))
    return u is not None and u.data_ptr() == g.data_ptr()


def on_new_unit(hook: Callable[[torch.Tensor], None]) -> None:
    """Call ``hook(t)`` for every unit gradient, those made so far and each new one."""
    _HOOKS.append(hook)
    for t in list(_UNITS.values()):
        hook(t)
