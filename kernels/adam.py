"""The eps-hat Adam update (TF1's AdamOptimizer, Keras' Adam; fastgan/engine/optim.py) as one
multi-tensor Triton kernel: each launch updates up to ``SLOTS`` parameter tensors, reading p, g,
m, v once and writing p, m, v once (the memory floor, as torch's fused Adam), with the step size
computed in-kernel from the device step count and lr (capturable: no host read; the tensors'
addresses are kernel arguments, fixed in a captured graph as the grads' are).

Program ids are split over the slots by the first-block offsets ``S1..S7``; unused slots repeat
slot 0 with an offset past the grid, so they are never selected.
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_type

SLOTS = 8
# The interpreter runs programs one by one: few big blocks there.
BLOCK = 1 << 16 if config.INTERPRET else 1024


# Sizes and offsets are never specialised (a size of 1 would become a constexpr, and the slot
# selection below needs one type for every slot's values).
@triton.jit(do_not_specialize=["N0", "N1", "N2", "N3", "N4", "N5", "N6", "N7",
                               "S1", "S2", "S3", "S4", "S5", "S6", "S7"])
def _eps_hat_adam_kernel(P0, G0, M0, V0, N0, P1, G1, M1, V1, N1, P2, G2, M2, V2, N2,
                         P3, G3, M3, V3, N3, P4, G4, M4, V4, N4, P5, G5, M5, V5, N5,
                         P6, G6, M6, V6, N6, P7, G7, M7, V7, N7,
                         S1, S2, S3, S4, S5, S6, S7,
                         step_ptr, lr_ptr, hp_ptr,
                         ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Program ``pid`` updates block ``pid - S_i`` of slot i (the last slot with S_i <= pid)."""
    pid = tl.program_id(0)
    p_ptr, g_ptr, m_ptr, v_ptr, n, first = P0, G0, M0, V0, N0, pid * 0
    if pid >= S1:
        p_ptr, g_ptr, m_ptr, v_ptr, n, first = P1, G1, M1, V1, N1, S1
    if pid >= S2:
        p_ptr, g_ptr, m_ptr, v_ptr, n, first = P2, G2, M2, V2, N2, S2
    if pid >= S3:
        p_ptr, g_ptr, m_ptr, v_ptr, n, first = P3, G3, M3, V3, N3, S3
    if pid >= S4:
        p_ptr, g_ptr, m_ptr, v_ptr, n, first = P4, G4, M4, V4, N4, S4
    if pid >= S5:
        p_ptr, g_ptr, m_ptr, v_ptr, n, first = P5, G5, M5, V5, N5, S5
    if pid >= S6:
        p_ptr, g_ptr, m_ptr, v_ptr, n, first = P6, G6, M6, V6, N6, S6
    if pid >= S7:
        p_ptr, g_ptr, m_ptr, v_ptr, n, first = P7, G7, M7, V7, N7, S7
    # The step count after this update (incremented before the launch), the base rate and the
    # hyperparameters, all device scalars (float64: Triton passes Python floats as fp32); b^t as
    # exp2(t log2 b).
    b1 = tl.load(hp_ptr + 0)
    b2 = tl.load(hp_ptr + 1)
    eps = tl.load(hp_ptr + 2)
    decay = tl.load(hp_ptr + 3)
    log2_b1 = tl.load(hp_ptr + 4)
    log2_b2 = tl.load(hp_ptr + 5)
    t = tl.load(step_ptr).to(tl.float64)
    lr = tl.load(lr_ptr).to(tl.float64)
    lr_d = lr / (1.0 + decay * (t - 1.0))
    lr_t = (lr_d * tl.sqrt(1.0 - tl.exp2(t * log2_b2)) / (1.0 - tl.exp2(t * log2_b1))).to(ACC)
    offs = (pid - first) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(ACC)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(ACC)
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(ACC)
    m = b1.to(ACC) * m + (1.0 - b1).to(ACC) * g
    v = b2.to(ACC) * v + (1.0 - b2).to(ACC) * g * g
    p = p - lr_t * m / (tl.sqrt(v) + eps.to(ACC))
    tl.store(m_ptr + offs, m.to(m_ptr.dtype.element_ty), mask=mask)
    tl.store(v_ptr + offs, v.to(v_ptr.dtype.element_ty), mask=mask)
    tl.store(p_ptr + offs, p.to(p_ptr.dtype.element_ty), mask=mask)


def hyper_tensor(b1: float, b2: float, eps: float, decay: float, device) -> torch.Tensor:
    """The kernel's float64 hyperparameters (made once per optimizer group, outside capture)."""
    return torch.tensor([b1, b2, eps, decay, math.log2(b1), math.log2(b2)], dtype=torch.float64,
                        device=device)


def eps_hat_adam_(ps: Sequence[torch.Tensor], gs: Sequence[torch.Tensor],
                  ms: Sequence[torch.Tensor], vs: Sequence[torch.Tensor], step: torch.Tensor,
                  lr: torch.Tensor, hp: torch.Tensor) -> None:
    """One update of every (p, g, m, v), all contiguous and of one dtype, in place. ``step``:
    the step count after this update (0-d, device); ``lr``: the base rate (0-d float64)."""
    acc = acc_type(ps[0].dtype)
    for k in range(0, len(ps), SLOTS):
        args: List = []
        starts: List[int] = []
        blocks = 0
        idx = list(range(k, min(k + SLOTS, len(ps))))
        for j in idx:
            starts.append(blocks)
            n = ps[j].numel()
            args += [ps[j], gs[j], ms[j], vs[j], n]
            blocks += (n + BLOCK - 1) // BLOCK
        for _ in range(SLOTS - len(idx)):
            args += args[:5]
            starts.append(blocks)
        _eps_hat_adam_kernel[(blocks,)](*args, *starts[1:], step, lr, hp, ACC=acc, BLOCK=BLOCK)
