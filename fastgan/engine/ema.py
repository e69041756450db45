"""An exponential moving average of G's parameters (StyleGAN2's G_ema), updated in place.

``ema = p + beta * (ema - p)`` (= beta * ema + (1 - beta) * p) with ``beta`` a 0-d device
tensor: the update reads nothing on the host and allocates nothing, so it can sit inside a
captured CUDA graph, and a new decay (a ramp-up) is a fill of that tensor, not a recapture.
Per dtype it is three multi-tensor ops (``_foreach_sub_``, ``_foreach_mul_`` by the device
scalar, ``_foreach_add_``): torch's one-call ``_foreach_lerp_`` takes its weight only as a host
scalar or as full-size weight tensors, and ``_foreach_addcmul_.Tensor`` reads its scalars on
the host. Buffers (BatchNorm's running statistics) are copied, as StyleGAN2 does, in one
``_foreach_copy_``.

The EMA keeps references to G's parameter and buffer tensors: build it once G is on its device
and dtype, and change G's weights in place afterwards (``load_state_dict`` does).
"""
from __future__ import annotations

import copy
from typing import Dict, List, Tuple, Union

import torch
import torch.nn as nn

Tensor = torch.Tensor


def decay_from_half_life(half_life_img: float, batch: int) -> float:
    """StyleGAN2's ``beta = 0.5 ** (batch / half_life_img)``: after ``half_life_img`` images the
    weight of the current parameters has halved."""
    if not half_life_img > 0:
        raise ValueError(f"EMA half-life must be > 0 images, got {half_life_img}")
    if batch < 1:
        raise ValueError(f"EMA batch must be >= 1, got {batch}")
    return 0.5 ** (batch / half_life_img)


class EMA:
    """The moving average of ``module``: ``ema.module`` is a copy of it holding the averaged
    weights (for sampling); ``ema.update()`` after each G step."""

    def __init__(self, module: nn.Module, decay: float):
        self.module = copy.deepcopy(module)
        self.module.requires_grad_(False)
        self._groups: List[Tuple[List[Tensor], List[Tensor], Tensor]] = []
        by_key: Dict[Tuple[torch.device, torch.dtype], Tuple[List[Tensor], List[Tensor]]] = {}
        for src, dst in zip(module.parameters(), self.module.parameters()):
            if src.dtype not in (torch.float32, torch.float64):
                raise ValueError(f"EMA: parameters must be float32 or float64, got {src.dtype} "
                                 "(a 0.999 decay rounds to 1 in bfloat16: keep fp32 weights)")
            d, s = by_key.setdefault((src.device, src.dtype), ([], []))
            d.append(dst.detach())
            s.append(src.detach())
        for (device, dtype), (d, s) in by_key.items():
            self._groups.append((d, s, torch.zeros((), device=device, dtype=dtype)))
        self._buf_dst = [b for b in self.module.buffers()]
        self._buf_src = [b.detach() for b in module.buffers()]
        self.set_decay(decay)

    @classmethod
    def from_half_life(cls, module: nn.Module, half_life_img: float, batch: int) -> "EMA":
        return cls(module, decay_from_half_life(half_life_img, batch))

    def set_decay(self, decay: Union[float, Tensor]) -> None:
        """A float (a fill) or a 0-d tensor (a device copy): no host read either way."""
        if not torch.is_tensor(decay) and not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        for _, _, beta in self._groups:
            if torch.is_tensor(decay):
                beta.copy_(decay)
            else:
                beta.fill_(decay)

    @property
    def decay(self) -> Tensor:
        """The decay, a 0-d device tensor (that of the first dtype group)."""
        return self._groups[0][2] if self._groups else torch.zeros((), dtype=torch.float64)

    @torch.no_grad()
    def update(self) -> None:
        for dst, src, beta in self._groups:
            torch._foreach_sub_(dst, src)
            torch._foreach_mul_(dst, beta)
            torch._foreach_add_(dst, src)
        if self._buf_dst:
            torch._foreach_copy_(self._buf_dst, self._buf_src)

    def state_dict(self) -> Dict[str, object]:
        # the decay in float64: a float32 decay round-trips through it exactly
        return {"module": self.module.state_dict(),
                "decay": self.decay.detach().to(torch.float64, copy=True)}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """In place: the tensors the update (and a captured graph) uses stay the same."""
        self.module.load_state_dict(state["module"])
        self.set_decay(state["decay"])
