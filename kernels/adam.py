"""Adam as ONE Triton launch per bucket of tensors (one param group, device and dtype), whatever
their number, in either form (fastgan/engine/optim.py): the eps-hat form of TF1's AdamOptimizer
and Keras' Adam, or torch's (``torch.optim.Adam`` without weight decay or amsgrad). Each program
reads p, g, m, v once and writes p, m, v once (the memory floor, as torch's fused Adam), computes
the step size in-kernel from the device step count and lr (capturable: no host read), and the
same launch advances every tensor's step count.

The tensors are found through a device int64 table (``Table``), built on the host from their
addresses and cached: rebuilt only when an address or size changes (an eager
``zero_grad(set_to_none=True)`` may hand back other grads). Layout, ``T`` tensors, ``B`` blocks:
``[T rows of (p, g, m, v, numel, first block)] [T step addresses] [B tensor indices]``.

Step count, race-free: every program reads the OLD count of the first tensor (t = old + 1, as
torch's ``_foreach_add_`` before the old launch), then, after a CTA barrier (so every warp has
read it), arrives at an acq_rel counter; the program that arrives last has, by the acquire,
every other program's read ordered before it, so only it writes step + 1 for every tensor and
resets the counter to 0 for the next launch.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from typing import List, Optional, Sequence

import torch
import triton
import triton.language as tl

from . import config
from ._common import acc_type
from .launch import cached

# The interpreter runs programs one by one: few big blocks there.
BLOCK = 1 << 16 if config.INTERPRET else 1024
ROW = 6           # int64 words per tensor row of the table
STEP_BLOCK = 64   # step counts advanced per iteration of the last program's loop
_TL = {torch.float32: tl.float32, torch.float64: tl.float64, torch.bfloat16: tl.bfloat16,
       torch.float16: tl.float16}


@cached
@triton.jit(do_not_specialize=["T"])
def _adam_kernel(tab_ptr, T, step_ptr, cnt_ptr, lr_ptr, hp_ptr, TORCH_FORM: tl.constexpr,
                 DT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr, SB: tl.constexpr):
    """Program ``pid`` updates block ``pid - first`` of tensor ``tab[7T + pid]``; ``TORCH_FORM``:
    torch's update, else the eps-hat one."""
    pid = tl.program_id(0)
    row = tab_ptr + tl.load(tab_ptr + 7 * T + pid) * 6
    p_ptr = tl.load(row + 0).to(tl.pointer_type(DT), bitcast=True)
    g_ptr = tl.load(row + 1).to(tl.pointer_type(DT), bitcast=True)
    m_ptr = tl.load(row + 2).to(tl.pointer_type(DT), bitcast=True)
    v_ptr = tl.load(row + 3).to(tl.pointer_type(DT), bitcast=True)
    n = tl.load(row + 4)
    first = tl.load(row + 5)
    # The step count after this update (old + 1, in float32 as torch's step tensor adds), the
    # base rate and the hyperparameters, all device scalars (float64: Triton passes Python
    # floats as fp32); b^t as exp2(t log2 b).
    b1 = tl.load(hp_ptr + 0)
    b2 = tl.load(hp_ptr + 1)
    eps = tl.load(hp_ptr + 2)
    decay = tl.load(hp_ptr + 3)
    log2_b1 = tl.load(hp_ptr + 4)
    log2_b2 = tl.load(hp_ptr + 5)
    t = (tl.load(step_ptr) + 1.0).to(tl.float64)
    lr = tl.load(lr_ptr).to(tl.float64)    # fp32 (torch's capturable lr) or fp64
    offs = (pid - first) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(ACC)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(ACC)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(ACC)
    p = tl.load(p_ptr + offs, mask=mask, other=0.0).to(ACC)
    if TORCH_FORM:
        # aten/src/ATen/native/cuda/fused_adam_utils.cuh (adam_math), operation for operation;
        # its scalars are fp32 for fp32 tensors, these fp64 rounded once to ACC
        step_size = (lr / (1.0 - tl.exp2(t * log2_b1))).to(ACC)
        bc2_sqrt = tl.sqrt(1.0 - tl.exp2(t * log2_b2)).to(ACC)
        # torch's fma(-b, g, g) is g (1 - b) rounded once: so is (1 - b) * g wherever 1 - b
        # is exact in ACC (b in [0.5, 1], Sterbenz), and it keeps that where fma is two
        # roundings (the interpreter's; the product of an unfused g - b g cancels)
        b1a = b1.to(ACC)
        b2a = b2.to(ACC)
        m = tl.fma(b1a, m, (1.0 - b1a) * g)
        v = tl.fma(b2a, v, (1.0 - b2a) * (g * g))
        p = p - step_size * m / (tl.sqrt(v) / bc2_sqrt + eps.to(ACC))
    else:
        lr_d = lr / (1.0 + decay * (t - 1.0))
        lr_t = (lr_d * tl.sqrt(1.0 - tl.exp2(t * log2_b2)) / (1.0 - tl.exp2(t * log2_b1))).to(ACC)
        m = b1.to(ACC) * m + (1.0 - b1).to(ACC) * g
        v = b2.to(ACC) * v + (1.0 - b2).to(ACC) * g * g
        p = p - lr_t * m / (tl.sqrt(v) + eps.to(ACC))
    tl.store(m_ptr + offs, m.to(DT), mask=mask)
    tl.store(v_ptr + offs, v.to(DT), mask=mask)
    tl.store(p_ptr + offs, p.to(DT), mask=mask)
    # Every warp of this program has read the old count before the program arrives.
    tl.debug_barrier()
    arrived = tl.atomic_add(cnt_ptr, 1, sem="acq_rel", scope="gpu")
    if arrived == tl.num_programs(0) - 1:
        for k in range(0, T, SB):
            j = k + tl.arange(0, SB)
            sp = tl.load(tab_ptr + 6 * T + j, mask=j < T, other=0)
            sp = sp.to(tl.pointer_type(tl.float32), bitcast=True)
            s = tl.load(sp, mask=j < T, other=0.0)
            tl.store(sp, s + 1.0, mask=j < T)
        tl.atomic_xchg(cnt_ptr, 0, sem="relaxed", scope="gpu")


def hyper_tensor(b1: float, b2: float, eps: float, decay: float, device) -> torch.Tensor:
    """The kernel's float64 hyperparameters (made once per optimizer group, outside capture)."""
    # beta = 0 (e.g. betas (0, 0.99)): log2 is -inf, exp2(t * -inf) = 0, beta^t = 0
    logs = [math.log2(b) if b > 0 else -math.inf for b in (b1, b2)]
    return torch.tensor([b1, b2, eps, decay, *logs], dtype=torch.float64, device=device)


class Table:
    """One bucket's device table and arrival counter. ``key``: the host words the table was
    built from (addresses, sizes); ``captured``: a CUDA graph launched with it (then it must
    never be freed: the caller keeps it); ``spares``: buffers for rebuilds during a capture,
    allocated before it (``prepare_capture``)."""

    def __init__(self, key: List[int], host: torch.Tensor, device: torch.device,
                 old: Optional["Table"] = None, capturing: bool = False):
        self.key, self.captured = key, capturing
        self.T = len(key) // (ROW + 1)
        self.nblocks = host.numel() - (ROW + 1) * self.T
        self.spares: List[torch.Tensor] = old.spares if old is not None else []
        if capturing:
            # Inside a capture (its backward allocates new grads from the graph's pool). The
            # table cannot come from that pool: a block freed earlier in the capture would be
            # handed out again, and the graph's earlier kernels would overwrite it on every
            # replay. It is a spare allocated before the capture, filled by write_captured()
            # once the capture has ended: no copy node in the graph, no host wait in it.
            fit = [t for t in self.spares if t.numel() == host.numel()]
            if not fit:
                raise RuntimeError(
                    "Adam (Triton): the tensors' addresses changed inside this CUDA-graph "
                    "capture (grads set to None before it?) more often than prepared for: wrap "
                    "the capture in fastgan.engine.optim.capture_tables(launches=N), N the "
                    "optimizer steps it captures, or keep the same grads through it")
            self.tab = fit[0]
            self.spares.remove(fit[0])
            _PENDING.append((self.tab, host))
        elif device.type != "cuda":
            self.tab = host
        else:   # an asynchronous copy: an eager rebuild never waits
            self.tab = host.pin_memory().to(device, non_blocking=True)
        self.stream = torch.cuda.current_stream(device) if device.type == "cuda" else None
        # 0 between launches (the last program resets it): an earlier table's can be reused
        self.cnt = torch.zeros(1, dtype=torch.int32, device=device) if old is None else old.cnt
        _LIVE.add(self)


# Every table in use (weakly), for prepare_capture; the tables a capture made, with their host
# contents, until write_captured().
_LIVE: "weakref.WeakSet[Table]" = weakref.WeakSet()
_PENDING: List[tuple] = []


def prepare_capture(launches: int) -> None:
    """Before a CUDA-graph capture of ``launches`` optimizer steps: spare table buffers, outside
    the graph's pool, for the rebuilds the capture may need (the sizes are the warm-up's)."""
    for t in list(_LIVE):
        t.spares = [torch.empty_like(t.tab) for _ in range(max(1, launches))]


def write_captured() -> None:
    """Fill the tables a capture made (after the capture ends, before the first replay) and
    drop the unused spares."""
    while _PENDING:
        tab, host = _PENDING.pop()
        tab.copy_(host)
    for t in list(_LIVE):
        t.spares = []


def _words(ps, gs, ms, vs, steps) -> List[int]:
    key: List[int] = []
    for p, g, m, v in zip(ps, gs, ms, vs):
        key += [p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr(), p.numel(), 0]
    key += [s.data_ptr() for s in steps]
    return key


def _host_table(key: List[int], T: int) -> torch.Tensor:
    sizes = torch.tensor(key[4:ROW * T:ROW], dtype=torch.int64)
    nb = (sizes + BLOCK - 1) // BLOCK
    firsts = torch.cumsum(nb, 0) - nb
    rows = torch.tensor(key, dtype=torch.int64)
    rows[5:ROW * T:ROW] = firsts
    bmap = torch.repeat_interleave(torch.arange(T, dtype=torch.int64), nb)
    if bmap.numel() == 0:    # every tensor empty: one program, masked off, advances the steps
        bmap = torch.zeros(1, dtype=torch.int64)
    return torch.cat([rows, bmap])


def _rebuild(old: Optional[Table], key: List[int], device: torch.device, capturing: bool,
             keep: List[torch.Tensor]) -> Table:
    if capturing and old is None:
        # the arrival counter and the spares must exist before the graph: an eager step's
        raise RuntimeError("Adam (Triton): run one step before capturing it (the warm-up builds "
                           "its state and tables)")
    if old is not None and old.captured:
        keep.append(old.tab)    # a graph reads it: never freed
    new = Table(key, _host_table(key, len(key) // (ROW + 1)), device, old, capturing)
    if capturing:
        keep += [new.tab, new.cnt]
    return new


def adam_(ps: Sequence[torch.Tensor], gs: Sequence[torch.Tensor], ms: Sequence[torch.Tensor],
          vs: Sequence[torch.Tensor], steps: Sequence[torch.Tensor], lr: torch.Tensor,
          hp: torch.Tensor, table: Optional[Table], keep: List[torch.Tensor],
          torch_form: bool = False) -> Table:
    """One update of every (p, g, m, v), of one dtype, each four dense with the same strides, in
    place, in one launch, which also adds 1 to every ``steps`` tensor (0-d float32, on the
    device); ``t`` is ``steps[0] + 1``. ``lr``: the base rate (0-d float32 or float64).
    ``table``: the cached table of an earlier call for these tensors (None the first time);
    returns the one to pass next time. ``keep``: where tables a CUDA graph may read are kept
    alive. ``torch_form``: torch's update (``hp``'s decay unused), else the eps-hat one."""
    device = ps[0].device
    capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
    key = _words(ps, gs, ms, vs, steps)
    if table is None or table.key != key:
        table = _rebuild(table, key, device, capturing, keep)
    if capturing and not table.captured:
        keep += [table.tab, table.cnt]
    table.captured |= capturing
    guard = contextlib.nullcontext()
    if device.type == "cuda":
        guard = torch.cuda.device(device)       # Triton launches on the current device
        stream = torch.cuda.current_stream(device)
        if not capturing and stream != table.stream:
            table.tab.record_stream(stream)     # freed later: not reused under this launch
            table.stream = stream
    with guard:
        _adam_kernel[(table.nblocks,)](
            table.tab, table.T, steps[0], table.cnt, lr, hp, TORCH_FORM=torch_form,
            DT=_TL[ps[0].dtype],
            ACC=acc_type(ps[0].dtype), BLOCK=BLOCK, SB=STEP_BLOCK)
    return table
