"""Helpers shared by the kernel modules: tensor views, block-size heuristics, small reductions."""
from __future__ import annotations

import functools
from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from . import config
from .launch import cached


def next_pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def acc_type(dtype: torch.dtype):
    """Accumulation type of the kernels: fp32, except fp64 inputs (used by gradcheck) in fp64."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def acc_torch(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in config.SUPPORTED_DTYPES:
        raise TypeError(f"fastgan triton {name}: unsupported dtype {t.dtype} "
                        f"(use float32, bfloat16, float16 or float64)")


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_programs_target(device: torch.device) -> int:
    """About how many programs fill the device (a few per SM); small under the interpreter."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return 4 * _sm_count(index)
    return 4


def is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense (a permutation of a contiguous layout): ``empty_like`` keeps it."""
    dims = [(st, sz) for st, sz in zip(t.stride(), t.shape) if sz != 1]
    dims.sort()
    expected = 1
    for st, sz in dims:
        if st != expected:
            return False
        expected *= sz
    return True


def _collapse(sizes: Sequence[int], strides: Sequence[int]) -> Optional[int]:
    """The single stride of dims ``sizes`` if they index memory like one dim, else None."""
    dims = [(sz, st) for sz, st in zip(sizes, strides) if sz != 1]
    if not dims:
        return 1
    for (sz0, st0), (sz1, st1) in zip(dims[:-1], dims[1:]):
        if st0 != st1 * sz1:
            return None
    return dims[-1][1]


def view3(t: torch.Tensor, dim: int) -> Optional[Tuple[int, int, int, int, int, int]]:
    """``t`` seen as [A, C, B] (A = dims before ``dim``, B = dims after) with strides.

    When A and B can be walked with one stride (channels_last, 2-D inputs, C == 1...), they are
    merged into A and B becomes 1, so a [rows, C] tile reads C-contiguous memory in one sweep.
    Returns (A, C, B, sA, sC, sB), or None when the dims cannot be expressed so.
    """
    shape, strides = list(t.shape), list(t.stride())
    A = 1
    for s in shape[:dim]:
        A *= s
    B = 1
    for s in shape[dim + 1:]:
        B *= s
    C = shape[dim]
    sA = _collapse(shape[:dim], strides[:dim])
    sB = _collapse(shape[dim + 1:], strides[dim + 1:])
    if sA is None or sB is None:
        return None
    sC = strides[dim] if C != 1 else 1
    if B == 1:
        return A, C, 1, sA, sC, 1
    if A == 1:
        return B, C, 1, sB, sC, 1
    if sA == B * sB:
        return A * B, C, 1, sB, sC, 1
    return A, C, B, sA, sC, sB


def tile3(A: int, C: int, B: int, sC: int, budget: int = 2048) -> Tuple[int, int, int]:
    """Block sizes (BLOCK_A, BLOCK_C, BLOCK_B) for a [A, C, B] sweep; contiguous axis widest."""
    cap_rows_c = 64 if sC == 1 else 16   # channel block when C is the swept row ([rows, C])
    cap_c = 16                           # channel block of a [A, C, B] sweep
    if config.INTERPRET:
        budget = 4096
        if A * C * B > config.INTERPRET_BIG_SWEEP:   # whole-layer tiles: the cost is per op
            budget, cap_rows_c, cap_c = 1 << 20, 1024, 1024
    if B == 1:
        bc = min(next_pow2(C), cap_rows_c)
        ba = max(1, min(next_pow2(A), budget // bc))
        return ba, bc, 1
    bb = min(next_pow2(B), budget)
    ba = max(1, min(next_pow2(A), budget // bb))
    bc = max(1, min(next_pow2(C), budget // (bb * ba), cap_c))
    return ba, bc, bb


def prepare3(x: torch.Tensor, dim: int):
    """(x, its [A, C, B] view): x itself when it is dense and so viewable, else a contiguous copy."""
    v = view3(x, dim) if is_dense(x) else None
    if v is None:
        x = x.contiguous()
        v = view3(x, dim)
    return x, v


def sweep_blocks(A: int, C: int, B: int, sC: int, device, dtype,
                 force_split: Optional[int] = None) -> Tuple[int, int, int, int, int]:
    """(BLOCK_A, BLOCK_C, BLOCK_B, split, a_per_split) for a per-channel sweep (bn_act).

    ``force_split`` (tests) fixes the number of splits exactly, so small inputs take the
    two-kernel paths."""
    budget = 1024 if dtype == torch.float64 else 2048
    ba, bc, bb = tile3(A, C, B, sC, budget)
    n_c = triton.cdiv(C, bc)
    split = force_split if force_split is not None else split_for(n_c, triton.cdiv(A, ba), device)
    split = max(1, min(split, 64, A))
    a_per = triton.cdiv(A, split)
    if force_split is None:   # whole blocks per split (a forced split is kept exactly)
        a_per = triton.cdiv(a_per, ba) * ba
    split = triton.cdiv(A, a_per)
    return ba, bc, bb, split, a_per


def split_for(n_outer_blocks: int, n_inner_blocks: int, device: torch.device,
              cap: int = 64) -> int:
    """How many programs share one reduction (deterministic two-level reduction)."""
    target = num_programs_target(device)
    s = max(1, min(cap, n_inner_blocks, triton.cdiv(target, max(1, n_outer_blocks))))
    return s


@cached
@triton.jit
def _sum_dim0_kernel(p_ptr, out_ptr, S, L, s_p, BLOCK_S: tl.constexpr, BLOCK_L: tl.constexpr,
                     ACC: tl.constexpr):
    """out[l] = sum_s p[s, l] in a fixed order (deterministic)."""
    pid = tl.program_id(0)
    offs_l = pid * BLOCK_L + tl.arange(0, BLOCK_L)
    ml = offs_l < L
    acc = tl.full((BLOCK_S, BLOCK_L), 0.0, ACC)
    for s0 in range(0, S, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        acc += tl.load(p_ptr + offs_s[:, None] * s_p + offs_l[None, :],
                       mask=(offs_s[:, None] < S) & ml[None, :], other=0.0).to(ACC)
    tl.store(out_ptr + offs_l, tl.sum(acc, axis=0).to(out_ptr.dtype.element_ty), mask=ml)


def sum_dim0(p: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[:] = p.sum(0)`` for a row-major [S, L] partial buffer (any ``out`` dtype)."""
    S, L = p.shape
    BLOCK_L = min(256, next_pow2(L))
    BLOCK_S = min(16, next_pow2(S))
    _sum_dim0_kernel[(triton.cdiv(L, BLOCK_L),)](p, out, S, L, p.stride(0), BLOCK_S=BLOCK_S,
                                                  BLOCK_L=BLOCK_L, ACC=acc_type(p.dtype))
    return out
