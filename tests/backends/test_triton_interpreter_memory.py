"""The vectorized loads/stores that fastgan installs into Triton's CPU interpreter
(kernels/_interpreter_memory.py) against the interpreter's own C++ implementation:
same values, masked-off lanes never read or written, strided blocks, misaligned addresses sent
back to the native code. The kernels' parity tests (tests/ops) run through it too."""
from __future__ import annotations

import numpy as np
import pytest

interp = pytest.importorskip("triton.runtime.interpreter")
from fastgan.kernels import _interpreter_memory as vm  # noqa: E402

native = interp._interpreter
DTYPES = [np.float32, np.float64, np.uint16, np.int8, np.int64, np.bool_]


def _buffer(rng, dtype, n):
    if dtype == np.bool_:
        return rng.random(n) < 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), n).astype(dtype)
    return rng.standard_normal(n).astype(dtype)


def _ptrs(buf, idx):
    return (np.uint64(buf.ctypes.data) + idx.astype(np.uint64) * np.uint64(buf.itemsize))


@pytest.fixture
def rng():
    seed = np.random.SeedSequence().entropy % 2**32
    print("seed", seed)
    return np.random.default_rng(seed)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (37,), (5, 13), (3, 4, 7)])
@pytest.mark.parametrize("masked", [False, True])
def test_load_matches_native(dtype, shape, masked, rng):
    buf = _buffer(rng, dtype, 500)
    idx = rng.integers(0, 500, shape)              # scattered, with repeats
    ptrs = _ptrs(buf, idx)
    mask = rng.random(shape) < 0.6 if masked else np.ones(shape, bool)
    other = _buffer(rng, dtype, int(np.prod(shape))).reshape(shape)
    want = native.load(ptrs, mask, other, np.dtype(dtype))
    got = vm.vector_load(native.load, ptrs, mask, other, np.dtype(dtype))
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_load_strided_block_and_scalar_other(rng):
    """A transposed tile (non-contiguous pointer array) and a 0-d ``other``."""
    buf = _buffer(rng, np.float32, 64 * 48)
    rows, cols = np.arange(64), np.arange(48)
    ptrs = _ptrs(buf, rows[:, None] * 48 + cols[None, :]).T      # strided view, shape (48, 64)
    mask = np.broadcast_to((rows < 50)[None, :], ptrs.shape)      # broadcast mask
    got = vm.vector_load(native.load, ptrs, mask, np.float32(-7.0), np.dtype(np.float32))
    want = np.where(mask, buf.reshape(64, 48).T, np.float32(-7.0))
    np.testing.assert_array_equal(got, want)


def test_masked_off_lanes_are_never_read():
    """Dead lanes may hold any address (here the null page): only live lanes are touched, and
    an all-dead block reads nothing at all."""
    buf = np.arange(10, dtype=np.float32)
    ptrs = _ptrs(buf, np.arange(10))
    ptrs[::2] = 8                                   # unmapped
    mask = np.zeros(10, bool)
    mask[1::2] = True
    got = vm.vector_load(native.load, ptrs, mask, np.full(10, -1, np.float32), np.dtype(np.float32))
    np.testing.assert_array_equal(got, np.where(mask, buf, -1))
    dead = vm.vector_load(native.load, np.full(4, 8, np.uint64), np.zeros(4, bool),
                          np.zeros(4, np.float32), np.dtype(np.float32))
    np.testing.assert_array_equal(dead, np.zeros(4, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_store_matches_native(dtype, masked, rng):
    n, shape = 300, (6, 11)
    idx = rng.permutation(n)[:66].reshape(shape)    # distinct addresses, scattered
    value = _buffer(rng, dtype, 66).reshape(shape)
    mask = rng.random(shape) < 0.5 if masked else np.ones(shape, bool)
    start = _buffer(rng, dtype, n)
    want, got = start.copy(), start.copy()
    native.store(_ptrs(want, idx), value, mask)
    assert vm.vector_store(native.store, _ptrs(got, idx), value, mask) is None
    np.testing.assert_array_equal(got, want)
    untouched = np.ones(n, bool)
    untouched[idx[mask]] = False
    np.testing.assert_array_equal(got[untouched], start[untouched])


def test_store_strided_and_broadcast_value(rng):
    buf = np.zeros((8, 16), np.float64)
    ptrs = _ptrs(buf.reshape(-1), np.arange(128).reshape(8, 16)).T   # (16, 8), strided
    value = np.arange(8, dtype=np.float64)[None, :]                    # broadcast over rows
    vm.vector_store(native.store, ptrs, value, np.ones((1, 8), bool))
    np.testing.assert_array_equal(buf, np.broadcast_to(np.arange(8.0)[:, None], (8, 16)))


def test_misaligned_addresses_go_to_native(rng):
    calls = []

    def spy_load(*a):
        calls.append("load")
        return native.load(*a)

    def spy_store(*a):
        calls.append("store")
        return native.store(*a)

    raw = np.zeros(64, np.uint8)
    base = np.uint64(raw.ctypes.data + 1)           # float32s at an odd byte offset
    ptrs = base + np.arange(0, 32, 4, dtype=np.uint64)
    value = rng.standard_normal(8).astype(np.float32)
    vm.vector_store(spy_store, ptrs, value, np.ones(8, bool))
    got = vm.vector_load(spy_load, ptrs, np.ones(8, bool), np.zeros(8, np.float32),
                         np.dtype(np.float32))
    assert calls == ["store", "load"]
    np.testing.assert_array_equal(got, value)
    np.testing.assert_array_equal(raw[1:33].view(np.float32), value)


def test_install_is_idempotent_and_patches_the_builder():
    assert vm.install() and vm.install()
    assert interp.InterpreterBuilder.create_masked_load.__module__ == vm.__name__
    assert interp.InterpreterBuilder.create_masked_store.__module__ == vm.__name__
