"""Loads the compiled extension ``fastgan._C`` (the cuda backend's kernels), or explains why not.

``fastgan._C`` registers its operators with ``TORCH_LIBRARY(fastgan, ...)`` (schemas, CPU and
CUDA kernels under one name each, so they dispatch by device). Importing this module raises
ImportError with the reason when the extension is missing or does not load; the registry keeps
that reason (``fastgan.ops.load_error('cuda')``, shown by ``fastgan doctor``) and ``auto`` picks
the next backend.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Optional

import torch

import fastgan

_BUILD_HINT = ("build it with `pip install --no-build-isolation -e .` or "
               "`python setup.py build_ext --inplace` (README: Building the extension)")


def _major_minor(version: str) -> tuple:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _load_extension():
    try:
        from fastgan import _C  # noqa: PLC0415
    except ModuleNotFoundError as e:
        if e.name not in ("fastgan._C", None):
            raise ImportError(f"fastgan._C could not be loaded: {e}") from e
        here = os.path.dirname(os.path.abspath(fastgan.__file__))
        raise ImportError(f"fastgan._C is not built (no _C*.so in {here}); {_BUILD_HINT}") from e
    except ImportError as e:
        raise ImportError(f"fastgan._C failed to load ({e}); it may have been built against another "
                          f"torch than {torch.__version__}: rebuild it ({_BUILD_HINT})") from e
    built = _C.build_info().get("torch_version", "")
    if built and _major_minor(built) != _major_minor(torch.__version__):
        raise ImportError(f"fastgan._C was built against torch {built} but torch {torch.__version__} "
                          f"is installed; rebuild it ({_BUILD_HINT})")
    if not hasattr(torch.ops.fastgan, "bn_act"):
        raise ImportError("fastgan._C loaded but registered no torch.ops.fastgan operators")
    return _C


try:
    _C = _load_extension()
except ImportError as _e:
    warnings.warn(f"fastgan: the cuda backend is unavailable: {_e}", RuntimeWarning, stacklevel=2)
    raise

HAS_CUDA_KERNELS: bool = bool(_C.has_cuda())


class _Overloads:
    """``torch.ops.fastgan`` with each op resolved to its one overload (``.default``): calling
    the overload skips the packet's overload resolution, a cost every eager call pays."""

    def __getattr__(self, name: str):
        op = getattr(torch.ops.fastgan, name).default
        setattr(self, name, op)
        return op


_ops = _Overloads()
DEVICE_TYPES = ("cpu", "cuda") if HAS_CUDA_KERNELS else ("cpu",)


def build_info() -> dict:
    """How the extension was built (CUDA kernels, archs, torch version, compiler)."""
    info = dict(_C.build_info())
    info["devices"] = ["cpu"] + (["cuda"] if HAS_CUDA_KERNELS else [])
    return info


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _slope(slope) -> Optional[float]:
    return None if slope is None else float(slope)
