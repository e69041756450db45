"""Vectorized loads and stores for Triton's CPU interpreter (``TRITON_INTERPRET=1`` only).

The interpreter (Triton 3.8) gathers and scatters a block element by element in C++
(``_interpreter.load`` / ``store``), which dominates an interpreted iteration with large weights
(gancls' 6272x1024 layer is loaded for the forward, dX and dW matmuls). Here the same
gather/scatter is one numpy fancy-indexing operation on a view of the memory the live addresses
span. Same semantics: only lanes whose mask is true are read or written, masked-off lanes
take ``other``; blocks whose live addresses are not all aligned to the element size, and
anything unexpected, go to the interpreter's own implementation. Nothing here touches the code
compiled for a GPU.
"""
from __future__ import annotations

import ctypes

import numpy as np


def _view(lo: int, n: int, dtype: np.dtype) -> np.ndarray:
    """``n`` elements of ``dtype`` from address ``lo``, as a writable array."""
    buf = (ctypes.c_char * (n * dtype.itemsize)).from_address(lo)
    return np.frombuffer(buf, dtype=dtype)


def _index(addr: np.ndarray, itemsize: int):
    """(lowest address, element offsets from it with addr's shape), or None when an address is
    not a multiple of the element size. Works on strided/broadcast blocks without copying
    them flat (the transposed weight tiles are strided)."""
    shift = itemsize.bit_length() - 1
    if itemsize != 1 << shift:
        return None
    if shift and int(np.bitwise_or.reduce(addr, axis=None)) & (itemsize - 1):
        return None
    el = addr >> np.uint64(shift)
    lo = int(el.min())
    return lo << shift, (el - np.uint64(lo)).view(np.int64)


def vector_load(native, ptrs, mask, other, dtype):
    dtype = np.dtype(dtype)
    mask = np.broadcast_to(mask, ptrs.shape)
    full = bool(mask.all())
    addr = ptrs if full else ptrs[mask]
    if addr.size == 0:
        return np.array(np.broadcast_to(other, ptrs.shape), dtype=dtype)
    found = _index(addr, dtype.itemsize)
    if found is None:
        return native(ptrs, np.ascontiguousarray(mask),
                      np.array(np.broadcast_to(other, ptrs.shape), dtype=dtype), dtype)
    lo, idx = found
    vals = _view(lo, int(idx.max()) + 1, dtype)[idx]
    if full:
        return vals
    out = np.array(np.broadcast_to(other, ptrs.shape), dtype=dtype)
    out[mask] = vals
    return out


def vector_store(native, ptrs, value, mask):
    mask = np.broadcast_to(mask, ptrs.shape)
    value = np.broadcast_to(value, ptrs.shape)
    full = bool(mask.all())
    addr = ptrs if full else ptrs[mask]
    if addr.size == 0:
        return None
    found = _index(addr, value.dtype.itemsize)
    if found is None:
        return native(ptrs, np.ascontiguousarray(value), np.ascontiguousarray(mask))
    lo, idx = found
    _view(lo, int(idx.max()) + 1, value.dtype)[idx] = value if full else value[mask]
    return None


def install() -> bool:
    """Route the interpreter's masked loads and stores through the functions above. Returns
    False (and changes nothing) on a Triton whose interpreter is laid out differently."""
    try:
        from triton.runtime import interpreter as I
        builder, native = I.InterpreterBuilder, I._interpreter
        native_load, native_store = native.load, native.store
        get_np_dtype, TensorHandle = I._get_np_dtype, I.TensorHandle
        builder.create_masked_load, builder.create_masked_store   # noqa: B018 (exist?)
    except (ImportError, AttributeError):
        return False
    if getattr(builder, "_fastgan_vector_memory", False):
        return True

    def create_masked_load(self, ptrs, mask, other, cache_modifier, eviction_policy, is_volatile):
        dtype_tt = ptrs.get_element_ty()
        dtype_np = get_np_dtype(dtype_tt)
        other_np = np.zeros((), dtype=dtype_np) if other is None else other.data
        return TensorHandle(vector_load(native_load, ptrs.data, mask.data, other_np, dtype_np),
                            dtype_tt)

    def create_masked_store(self, ptrs, value, mask, cache_modifier, eviction_policy):
        return vector_store(native_store, ptrs.data, value.data, mask.data)

    builder.create_masked_load = create_masked_load
    builder.create_masked_store = create_masked_store
    builder._fastgan_vector_memory = True
    return True
