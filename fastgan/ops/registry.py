"""The op registry: each hot-path op has one name and several implementations.

An implementation is registered for a (backend, device type) pair. Layers call the op by name
(``fastgan.ops.linear_act(...)``); the registry picks the implementation of the *active* backend
for the device of the op's first tensor argument. An op a backend lacks on a device falls back to
the reference implementation with one warning per (op, backend, device), never silently --
except an *optional* op (:data:`OPTIONAL_OPS`), which only the reference need implement: a backend
without it uses the reference quietly, and ``available_backends`` does not require it.

Models know nothing of backends: the trainer selects one with ``use_backend(name)``. The registry
knows them only through the catalogue :data:`CATALOG` (names, modules, auto order), which it
imports on first need, so importing this module loads no backend.
"""
from __future__ import annotations

import contextlib
import importlib
import threading
import warnings
from typing import Callable, Dict, Iterator, Optional, Tuple

OPS = ("linear_act", "bias_act", "bn_act", "gan_loss")
# Ops only the reference need implement, so falling back to it is expected, not news (synchronized
# BN: the fused BN kernels compute their batch statistics themselves, none across ranks; the
# engine's batch gather and metrics: no layer needs them, and their reference is the plain
# torch sequence they fuse, so a backend without them is still complete).
OPTIONAL_OPS = ("sync_bn_act", "gather_scale", "gan_stats")
# linear_bn_act: its reference is linear_act then bn_act, exactly, so a backend without it
# loses only the fusion.
OPTIONAL_OPS += ("linear_bn_act",)
# linear_act_into: linear_act(..., out=); its reference is the active backend's linear_act
# without the activation, then the activation written into out (the fusion is all it adds).
OPTIONAL_OPS += ("linear_act_into",)
# linear_act_head: a hidden linear_act and a linear head after it; its reference is the active
# backend's linear_act twice.
OPTIONAL_OPS += ("linear_act_head",)
# gan_loss_stats: the G step's gan_loss with gan_stats after it; its reference is the active
# backend's two ops.
OPTIONAL_OPS += ("gan_loss_stats",)
CATALOG = "fastgan.backends"   # the plug-in seam: names, modules and auto order of the backends

_impls: Dict[Tuple[str, str, str], Callable] = {}
_warned: set = set()
_state = threading.local()
# Backends register themselves lazily: importing triton or building the extension is not free,
# and a missing backend must never break the reference path.
_loaders: Dict[str, Callable[[], None]] = {}
_load_errors: Dict[str, str] = {}
_loaded: set = set()


def _catalog():
    return importlib.import_module(CATALOG)


def known_backends() -> Tuple[str, ...]:
    """The catalogue's backend names, in listing order."""
    return _catalog().names()


def __getattr__(name: str):
    if name == "BACKENDS":   # kept for callers of the old constant: the catalogue's names
        return known_backends()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (not installed, not built, wrong device)."""


def register(op: str, backend: str, device_types, fn: Optional[Callable] = None):
    """Register ``fn`` as ``op`` for ``backend`` on each of ``device_types`` ('cpu', 'cuda').

    Usable as a decorator: ``@register("linear_act", "triton", ("cuda",))``.
    """
    if op not in OPS + OPTIONAL_OPS:
        raise ValueError(f"unknown op {op!r}; ops are {', '.join(OPS + OPTIONAL_OPS)}")
    if isinstance(device_types, str):
        device_types = (device_types,)

    def deco(f: Callable) -> Callable:
        for dev in device_types:
            _impls[(op, backend, dev)] = f
        return f

    return deco(fn) if fn is not None else deco


def unregister_backend(backend: str) -> None:
    """Remove every implementation of ``backend`` (used by tests that register a dummy)."""
    for key in [k for k in _impls if k[1] == backend]:
        del _impls[key]
    _loaded.discard(backend)


def add_loader(backend: str, loader: Callable[[], None]) -> None:
    """``loader()`` imports the backend's module, which registers its implementations."""
    _loaders[backend] = loader


def ensure_loaded(backend: str) -> bool:
    """Load ``backend`` once; return whether it is usable. The reason for a failure is kept."""
    if backend in _loaded:
        return True
    if backend in _load_errors:
        return False
    loader = _loaders.get(backend)
    if loader is None:
        entry = _catalog().get(backend)
        if entry is None:
            return any(k[1] == backend for k in _impls)
        loader = lambda: importlib.import_module(entry.module)  # noqa: E731
    try:
        loader()
    except Exception as e:  # ImportError, build errors, missing toolchains...
        _load_errors[backend] = f"{type(e).__name__}: {e}"
        return False
    _loaded.add(backend)
    return True


def load_error(backend: str) -> Optional[str]:
    return _load_errors.get(backend)


def has_impl(op: str, backend: str, device_type: str) -> bool:
    ensure_loaded(backend)
    return (op, backend, device_type) in _impls


def active_backend() -> str:
    return getattr(_state, "backend", "reference")


def set_backend(name: str) -> None:
    known = known_backends()
    if name not in known and not any(k[1] == name for k in _impls):
        raise ValueError(f"unknown backend {name!r}; backends are {', '.join(known)}")
    if not ensure_loaded(name):
        raise BackendUnavailable(f"backend {name!r} is not available: {load_error(name)}")
    _state.backend = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    old = active_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state.backend = old


def lookup(op: str, device_type: str, backend: Optional[str] = None) -> Callable:
    """The implementation of ``op`` for ``backend`` (default: active) on ``device_type``."""
    backend = backend or active_backend()
    ensure_loaded(backend)
    fn = _impls.get((op, backend, device_type))
    if fn is not None:
        return fn
    key = (op, backend, device_type)
    if key not in _warned and op not in OPTIONAL_OPS:
        _warned.add(key)
        warnings.warn(
            f"fastgan: op {op!r} has no {backend!r} implementation on {device_type}; "
            "using the reference implementation",
            RuntimeWarning,
            stacklevel=3,
        )
    ensure_loaded("reference")
    return _impls[(op, "reference", device_type if (op, "reference", device_type) in _impls else "cpu")]


def auto_choice(device_type: str, graph: bool = True, variant: Optional[str] = None):
    """:func:`fastgan.backends.auto_choice` with this machine's GPU name."""
    name = None   # no usable GPU: the newest GPU measured
    if device_type == "cuda":
        import torch
        try:
            name = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        except (RuntimeError, AssertionError):
            pass
    return _catalog().auto_choice(device_type, graph, variant, name)


def available_backends(device_type: str) -> list:
    """Backends that implement every op on ``device_type``, in preference order (optional ops
    not required)."""
    out = []
    known = known_backends()
    extra = sorted({k[1] for k in _impls} - set(known))
    for b in list(known) + extra:
        if ensure_loaded(b) and all((op, b, device_type) in _impls for op in OPS):
            out.append(b)
    return out


def auto_backend(device_type: str, graph: bool = True, variant: Optional[str] = None) -> str:
    """The backend ``--backend auto`` picks: the first complete one of
    :func:`fastgan.backends.auto_choice`'s order, the fastest measured for ``variant`` on this
    device in the run's mode (``graph``: the iteration replayed from a CUDA graph, the default
    of ``fastgan train`` on CUDA; False: eager), else the catalogue's order for the device type.
    On CPU both modes have one order; Triton on CPU is the interpreter, for tests only."""
    order, _ = auto_choice(device_type, graph, variant)
    avail = available_backends(device_type)
    for b in order:
        if b in avail:
            return b
    return "reference"
