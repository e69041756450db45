"""Triton launches without the JIT's per-call binding, opt-in: ``FASTGAN_TRITON_LAUNCH=cached``.

On every call ``JITFunction.run`` binds each argument, computes its specialization key and looks
the compiled kernel up; the autotuner first builds its own key and merges its config. A kernel
wrapped in :class:`CachedKernel` is launched that way the first time a call *signature* is seen,
and the compiled kernel that launch returned is then launched directly (``CompiledKernel.run``,
the call ``JITFunction.run`` ends with in Triton 3.4 to 3.8) on every later call with the same
signature: the tensors' dtypes, devices and 16-byte alignment, every integer's value (sizes and
strides: the grid and every specialization follow from them), the constexprs and the current
device. That is stricter than Triton's own key, so a hit never runs a kernel compiled for other
arguments. Off under the interpreter, while Triton's launch hooks are set (profilers), inside
:func:`suspended` (the kernel count), and for good after a direct launch fails (one warning).

It is off by default until it has been measured on a GPU (bench/test_op_overhead.py); the GPU
test tests/backends/test_triton_cached_launch.py checks it against the plain launches.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch

from fastgan.env_choices import word

from . import config

ENV = "FASTGAN_TRITON_LAUNCH"
_MAX_SIGNATURES = 4096     # per kernel: a run with ever-changing shapes stops caching
_NEVER = object()          # a signature that cannot be replayed (e.g. a runtime arg by name)


class _State:
    on: bool = False
    suspended: int = 0


STATE = _State()
WRAPPED: list = []         # every CachedKernel, for the GPU test's coverage check


def _from_env() -> bool:
    return word(ENV, "jit") == "cached" and not config.INTERPRET


STATE.on = _from_env()


def set_enabled(on: bool) -> bool:
    """Turn cached launches on or off (under the interpreter they stay off); returns the old
    setting."""
    old, STATE.on = STATE.on, bool(on) and not config.INTERPRET
    return old


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Every launch through Triton's own path for the duration (the kernel count patches it)."""
    STATE.suspended += 1
    try:
        yield
    finally:
        STATE.suspended -= 1


def _driver():
    from triton.runtime import driver
    return driver.active


def _hooks():
    from triton import knobs
    return knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook


def _sig(a):
    if isinstance(a, torch.Tensor):
        return (a.dtype, a.get_device(), a.data_ptr() % 16 == 0)
    if isinstance(a, float):
        return float                  # a runtime float is never specialised
    if isinstance(a, (bool, int)) or a is None:
        return (type(a), a)
    return _NEVER


def _jit_of(fn):
    while not hasattr(fn, "arg_names") or hasattr(fn, "configs"):   # an Autotuner: its fn
        fn = fn.fn
    return fn


class CachedKernel:
    """``kernel[grid](*args, **constexprs)`` as Triton launches it, replayed directly for a
    signature seen before (see the module docstring). Runtime arguments go by position,
    constexprs by name; every other attribute is the wrapped kernel's."""

    def __init__(self, fn):
        self.fn = fn                        # a JITFunction or an Autotuner
        jit = _jit_of(fn)
        self._names = list(jit.arg_names)
        self._params = {p.name: p for p in jit.params}
        self._cache: dict = {}
        self.hits = 0
        WRAPPED.append(self)

    def __getattr__(self, name):            # cache.clear(), configs, arg_names, ...
        return getattr(self.__dict__["fn"], name)

    def replayable(self) -> bool:
        """Whether every signature seen so far is replayed directly."""
        return all(e is not _NEVER for e in self._cache.values())

    def __getitem__(self, grid):
        if not STATE.on or STATE.suspended:   # off: Triton's own launcher, nothing in between
            return self.fn[grid]
        return lambda *args, **meta: self._launch(grid, args, meta)

    def _launch(self, grid, args, meta):
        sigs = tuple(_sig(a) for a in args)
        key = (sigs, tuple(meta.items()), _driver().get_current_device())
        entry = self._cache.get(key)
        if entry is None:
            kernel = self.fn[grid](*args, **meta)
            if len(self._cache) < _MAX_SIGNATURES:
                self._cache[key] = _NEVER if _NEVER in sigs else self._entry(kernel, grid, args,
                                                                                meta)
            return kernel
        if entry is _NEVER or any(h is not None for h in _hooks()):
            return self.fn[grid](*args, **meta)
        kernel, g, tail = entry
        d = _driver()
        try:
            kernel.run(g[0], g[1], g[2], d.get_current_stream(key[2]), kernel.function,
                       kernel.packed_metadata, None, None, None, *args, *tail)
        except Exception as e:   # an API this module does not know: Triton's own path for good
            STATE.on = False
            warnings.warn(f"fastgan: direct Triton launches are off ({type(e).__name__}: {e}); "
                          f"unset {ENV}", RuntimeWarning, stacklevel=3)
            return self.fn[grid](*args, **meta)
        self.hits += 1
        return kernel

    def _entry(self, kernel, grid, args, meta):
        """(compiled kernel, grid, the constexpr values after ``args`` in signature order), or
        _NEVER when the call cannot be replayed so."""
        if kernel is None or not hasattr(kernel, "packed_metadata"):
            return _NEVER
        best = getattr(self.fn, "best_config", None)
        if best is not None and getattr(best, "pre_hook", None) is not None:
            return _NEVER
        known = dict(meta, **(best.kwargs if best is not None else {}))
        tail = []
        for name in self._names[len(args):]:
            p = self._params[name]
            if not p.is_constexpr:
                return _NEVER
            if name in known:
                tail.append(known[name])
            elif p.has_default:
                tail.append(p.default)
            else:
                return _NEVER
        if callable(grid):
            grid = grid(dict(zip(self._names, list(args) + tail)))
        g = tuple(grid) + (1,) * (3 - len(grid))
        return kernel, g, tuple(tail)


def cached(fn):
    """Wrap a ``@triton.jit`` function or an Autotuner (see :class:`CachedKernel`); under the
    interpreter ``fn`` itself."""
    return fn if config.INTERPRET else CachedKernel(fn)
