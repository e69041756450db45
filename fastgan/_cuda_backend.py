"""The ``cuda`` backend: the compiled extension ``fastgan._C``.

``fastgan._C`` registers its operators with ``TORCH_LIBRARY(fastgan, ...)`` (schemas, CPU and
CUDA kernels under one name each, so they dispatch by device). This module adds what belongs in
Python: fake (meta) implementations for ``torch.compile`` and autograd formulas
(``torch.library.register_autograd``), and it registers the four registry ops

    linear_act   torch matmul (MKL / cuBLAS) + fused bias/activation epilogue;
                 backward: fused activation mask + bias-gradient reduction, then two matmuls
    bias_act     fused bias + activation (conv epilogue); backward as above
    bn_act       bn_stats (batch statistics, running stats updated in place) + bn_act (normalize,
                 affine, activation); backward: bn_act_backward (two passes)
    gan_loss     one kernel writes the reduced loss and d(loss)/d(logits); backward scales it

for device type 'cpu' and, when the extension was built with nvcc, 'cuda'.

Importing this module raises ImportError with the reason when the extension is missing or does
not load; the registry keeps that reason (``fastgan.ops.load_error('cuda')``, shown by
``fastgan doctor``) and ``auto`` picks the next backend.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Optional, Union

import torch

from fastgan.ops import reference as _reference
from fastgan.ops.registry import register

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
        here = os.path.dirname(os.path.abspath(__file__))
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
_ops = torch.ops.fastgan


def build_info() -> dict:
    """How the extension was built (CUDA kernels, archs, torch version, compiler)."""
    info = dict(_C.build_info())
    info["devices"] = ["cpu"] + (["cuda"] if HAS_CUDA_KERNELS else [])
    return info


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ------------------------------------------------------------------------------------------
# Fake (meta) implementations: shapes, dtypes and strides exactly as the C++ kernels produce.
# ------------------------------------------------------------------------------------------

@torch.library.register_fake("fastgan::bias_act")
def _bias_act_fake(x, bias, slope, dim):
    return torch.empty_like(x)


@torch.library.register_fake("fastgan::bias_act_backward")
def _bias_act_backward_fake(grad, y, slope, dim, need_db):
    return torch.empty_like(y), y.new_empty((y.shape[dim] if need_db else 0,))


@torch.library.register_fake("fastgan::linear_act")
def _linear_act_fake(x, weight, bias, slope):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


@torch.library.register_fake("fastgan::bn_stats")
def _bn_stats_fake(x, running_mean, running_var, training, momentum, eps):
    acc = _acc_dtype(x.dtype)
    c = x.shape[1]
    return x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc)


@torch.library.register_fake("fastgan::bn_act")
def _bn_act_fake(x, weight, bias, mean, invstd, slope, training):
    return torch.empty_like(x)


@torch.library.register_fake("fastgan::bn_act_backward")
def _bn_act_backward_fake(grad, x, weight, bias, mean, invstd, slope, training):
    acc = _acc_dtype(x.dtype)
    c = x.shape[1]
    return torch.empty_like(x), x.new_empty((c,), dtype=acc), x.new_empty((c,), dtype=acc)


@torch.library.register_fake("fastgan::gan_loss")
def _gan_loss_fake(logits, target, target_value, kind, reduction):
    return logits.new_empty(()), torch.empty_like(logits, dtype=_acc_dtype(logits.dtype),
                                                  memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------------------------
# Autograd
# ------------------------------------------------------------------------------------------

def _sum_except(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.sum(dim=[d for d in range(t.dim()) if d != dim])


# bias_act: y = act(x + b). The activation mask is read off y's sign (slope >= 0).
def _bias_act_setup(ctx, inputs, output):
    x, bias, slope, dim = inputs
    ctx.slope = slope
    ctx.dim = dim % x.dim() if x.dim() > 0 else 0
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(output if slope is not None else None)


def _bias_act_bwd(ctx, gy):
    (y,) = ctx.saved_tensors
    need_x, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx = db = None
    if ctx.slope is None:
        gx = gy
        if need_b:
            db = _sum_except(gy, ctx.dim)
    else:
        gx, db = _ops.bias_act_backward(gy, y, ctx.slope, ctx.dim, bool(need_b))
    if db is not None and need_b:
        db = db.to(ctx.bias_dtype)
    else:
        db = None
    return (gx if need_x else None), db, None, None


torch.library.register_autograd("fastgan::bias_act", _bias_act_bwd, setup_context=_bias_act_setup)


# bias_act_backward: (gx, db) = (g * mask(y), sum(g * mask(y))): linear in g, mask constant a.e.
# in y; registered so that double backward (gradient penalties) goes through linear_act/bias_act.
def _bias_act_backward_setup(ctx, inputs, output):
    grad, y, slope, dim, need_db = inputs
    ctx.slope, ctx.dim, ctx.need_db = slope, dim % y.dim() if y.dim() > 0 else 0, need_db
    ctx.save_for_backward(y)


def _bias_act_backward_bwd(ctx, g_gx, g_db):
    (y,) = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None
    total = g_gx if g_gx is not None else torch.zeros_like(y)
    if ctx.need_db and g_db is not None and g_db.numel() > 0:
        shape = [1] * y.dim()
        shape[ctx.dim] = -1
        total = total + g_db.view(shape)
    gg, _ = _ops.bias_act_backward(total, y, ctx.slope, ctx.dim, False)
    return gg, None, None, None, None


torch.library.register_autograd("fastgan::bias_act_backward", _bias_act_backward_bwd,
                                setup_context=_bias_act_backward_setup)


# linear_act: y = act(x @ W.T + b); matmuls for dX and dW, the fused kernel for mask + db.
def _linear_act_setup(ctx, inputs, output):
    x, weight, bias, slope = inputs
    ctx.slope = slope
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, weight, output if slope is not None else None)


def _linear_act_bwd(ctx, gy):
    x, weight, y = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    m, k = weight.shape
    gy2 = gy.reshape(-1, m)
    db = None
    if ctx.slope is None:
        gz = gy2
        if need_b:
            db = gz.sum(0)
    else:
        gz, db = _ops.bias_act_backward(gy2, y.reshape(-1, m), ctx.slope, 1, bool(need_b))
    dx = (gz @ weight).reshape(x.shape) if need_x else None
    dw = gz.t() @ x.reshape(-1, k) if need_w else None
    db = db.to(ctx.bias_dtype) if (need_b and db is not None) else None
    return dx, dw, db, None


torch.library.register_autograd("fastgan::linear_act", _linear_act_bwd, setup_context=_linear_act_setup)


# bn_act (apply): y = act((x - mean) * invstd * w + b). With training=True, mean/invstd are x's
# batch statistics (from bn_stats on x.detach()) and the backward includes their gradient terms,
# exactly as F.batch_norm's; with training=False they are constants (running statistics).
def _bn_act_setup(ctx, inputs, output):
    x, weight, bias, mean, invstd, slope, training = inputs
    ctx.slope, ctx.training = slope, training
    ctx.w_dtype = weight.dtype if weight is not None else None
    ctx.b_dtype = bias.dtype if bias is not None else None
    ctx.save_for_backward(x, weight, bias, mean, invstd)


def _bn_act_bwd(ctx, gy):
    x, weight, bias, mean, invstd = ctx.saved_tensors
    dx, dw, db = _ops.bn_act_backward(gy, x, weight, bias, mean, invstd, ctx.slope, ctx.training)
    need = ctx.needs_input_grad
    return ((dx if need[0] else None),
            (dw.to(ctx.w_dtype) if need[1] and weight is not None else None),
            (db.to(ctx.b_dtype) if need[2] and bias is not None else None),
            None, None, None, None)


torch.library.register_autograd("fastgan::bn_act", _bn_act_bwd, setup_context=_bn_act_setup)


def _bn_act_backward_setup(ctx, inputs, output):
    pass


def _bn_act_backward_bwd(ctx, *grads):
    raise NotImplementedError(
        "fastgan: double backward through bn_act is not implemented in the cuda backend "
        "(use the reference backend for gradient penalties through batch norm)")


torch.library.register_autograd("fastgan::bn_act_backward", _bn_act_backward_bwd,
                                setup_context=_bn_act_backward_setup)


# gan_loss: the forward already wrote d(loss)/d(logits); the backward scales it by the incoming
# gradient. Under create_graph (double backward) it is recomputed with differentiable torch ops.
def _gan_loss_setup(ctx, inputs, output):
    logits, target, target_value, kind, reduction = inputs
    loss, grad = output
    ctx.mark_non_differentiable(grad)
    ctx.kind, ctx.reduction, ctx.target_value = kind, reduction, target_value
    ctx.save_for_backward(grad, logits, target)


def _gan_loss_grad_expr(logits, target, target_value, kind, reduction):
    t = target if target is not None else target_value
    s = torch.sigmoid(logits)
    g = s - t if kind == "bce" else 2 * (s - t) * s * (1 - s)
    return g / logits.numel() if reduction == "mean" else g


def _gan_loss_bwd(ctx, gloss, ggrad):
    grad, logits, target = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None
    if torch.is_grad_enabled():
        g = _gan_loss_grad_expr(logits, target, ctx.target_value, ctx.kind, ctx.reduction)
        return (gloss * g).to(logits.dtype), None, None, None, None
    # grad is kept in float32 (float64): one rounding to the logits' dtype, here
    return (gloss.to(grad.dtype) * grad).to(logits.dtype), None, None, None, None


torch.library.register_autograd("fastgan::gan_loss", _gan_loss_bwd, setup_context=_gan_loss_setup)


# ------------------------------------------------------------------------------------------
# Registry implementations (signatures of fastgan.ops.reference)
# ------------------------------------------------------------------------------------------

def _slope(slope) -> Optional[float]:
    return None if slope is None else float(slope)


def linear_act(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               slope: Optional[float]) -> torch.Tensor:
    return _ops.linear_act(x, weight, bias, _slope(slope))


def bias_act(x: torch.Tensor, bias: Optional[torch.Tensor], slope: Optional[float],
             dim: int = 1) -> torch.Tensor:
    if bias is None and slope is None:
        return x  # identity, as the reference
    return _ops.bias_act(x, bias, _slope(slope), int(dim))


def bn_act(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
           running_mean: Optional[torch.Tensor], running_var: Optional[torch.Tensor],
           training: bool, momentum: float, eps: float, slope: Optional[float]) -> torch.Tensor:
    if momentum is None:  # F.batch_norm's cumulative moving average: not in the kernels
        return _reference.bn_act(x, weight, bias, running_mean, running_var, training, momentum,
                                 eps, slope)
    mean, invstd = _ops.bn_stats(x.detach(), running_mean, running_var, bool(training),
                                 float(momentum), float(eps))
    return _ops.bn_act(x, weight, bias, mean, invstd, _slope(slope), bool(training))


_warned_target_grad = False


def gan_loss(logits: torch.Tensor, target: Union[float, torch.Tensor], kind: str = "bce",
             reduction: str = "mean") -> torch.Tensor:
    global _warned_target_grad
    if kind not in ("bce", "lsgan"):
        raise ValueError(f"gan_loss: unknown kind {kind!r} (use 'bce' or 'lsgan')")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"gan_loss: unknown reduction {reduction!r} (use 'mean' or 'sum')")
    if isinstance(target, torch.Tensor):
        if target.requires_grad and torch.is_grad_enabled():
            if not _warned_target_grad:
                _warned_target_grad = True
                warnings.warn("fastgan: gan_loss with a target that requires grad uses the "
                              "reference implementation", RuntimeWarning, stacklevel=2)
            return _reference.gan_loss(logits, target, kind, reduction)
        if target.device != logits.device:
            if target.numel() == 1 and target.device.type == "cpu":
                return _ops.gan_loss(logits, None, float(target), kind, reduction)[0]
            target = target.to(logits.device)
        if not target.is_floating_point():
            target = target.to(logits.dtype)
        return _ops.gan_loss(logits, target, 0.0, kind, reduction)[0]
    return _ops.gan_loss(logits, None, float(target), kind, reduction)[0]


# ------------------------------------------------------------------------------------------
# CPU: keep the faster implementation (measured with bench/test_cpu_ops.py, README: CPU dispatch).
# Each C++ op carries a fixed cost (the Python autograd wiring of torch.library, a second op for
# the batch statistics) of roughly 50-100 us per forward+backward; ATen's kernels are AVX2 where
# ours are compiled for baseline x86-64. So the C++ kernels win on large tensors (memory-bound,
# fewer passes: up to 1.9x at the dcgan/convgan shapes) and lose on small ones; below these
# element counts the cuda backend runs the reference code on CPU. FASTGAN_CPU_KERNELS=always
# forces the C++ kernels (tests), =never the reference.
# ------------------------------------------------------------------------------------------

CPU_MIN_NUMEL = {"linear_act": 4_000_000, "bias_act": 1_000_000, "bn_act": 100_000,
                 "gan_loss": 1_000_000}


def _cpu_policy() -> str:
    v = os.environ.get("FASTGAN_CPU_KERNELS", "auto").strip().lower()
    return v if v in ("auto", "always", "never") else "auto"


def _cpu_pick(op: str, fast, ref, numel_of):
    threshold = CPU_MIN_NUMEL[op]

    def impl(*args, **kwargs):
        policy = _cpu_policy()
        if policy == "always" or (policy == "auto" and numel_of(*args) >= threshold):
            return fast(*args, **kwargs)
        return ref(*args, **kwargs)

    impl.__name__ = f"{op}_cpu"
    impl.__doc__ = f"fastgan._C's {op} on large CPU tensors (>= {threshold} elements), else the reference"
    impl.fast, impl.ref = fast, ref
    return impl


linear_act_cpu = _cpu_pick("linear_act", linear_act, _reference.linear_act,
                           lambda x, w, *a, **k: (x.numel() // max(1, x.shape[-1])) * w.shape[0])
bias_act_cpu = _cpu_pick("bias_act", bias_act, _reference.bias_act, lambda x, *a, **k: x.numel())
bn_act_cpu = _cpu_pick("bn_act", bn_act, _reference.bn_act, lambda x, *a, **k: x.numel())
gan_loss_cpu = _cpu_pick("gan_loss", gan_loss, _reference.gan_loss, lambda x, *a, **k: x.numel())

register("linear_act", "cuda", ("cpu",), linear_act_cpu)
register("bias_act", "cuda", ("cpu",), bias_act_cpu)
register("bn_act", "cuda", ("cpu",), bn_act_cpu)
register("gan_loss", "cuda", ("cpu",), gan_loss_cpu)
if HAS_CUDA_KERNELS:
    register("linear_act", "cuda", ("cuda",), linear_act)
    register("bias_act", "cuda", ("cuda",), bias_act)
    register("bn_act", "cuda", ("cuda",), bn_act)
    register("gan_loss", "cuda", ("cuda",), gan_loss)

__all__ = ["linear_act", "bias_act", "bn_act", "gan_loss", "build_info", "HAS_CUDA_KERNELS",
           "CPU_MIN_NUMEL", "linear_act_cpu", "bias_act_cpu", "bn_act_cpu", "gan_loss_cpu"]
