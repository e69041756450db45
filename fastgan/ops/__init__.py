"""Hot-path ops of fastgan, dispatched through the registry to the active backend.

    linear_act(x, weight, bias, slope)          act(x @ weight.T + bias)
    bias_act(x, bias, slope, dim=1)             act(x + bias along dim)   (conv epilogue)
    bn_act(x, weight, bias, running_mean, running_var, training, momentum, eps, slope,
           unbiased_running_var, groups)    act(batchnorm(x)), running stats updated in place
                                                (with the unbiased or biased batch variance);
                                                groups: x's batch split in equal chunks, each
                                                normalised with its own statistics (training)
    gan_loss(logits, target, kind, reduction, weight)
                                                weight * (BCE-with-logits, LSGAN on
                                                sigmoid(logits), hinge or linear)
    sync_bn_act(x, weight, bias, running_mean, running_var, momentum, eps, slope, group,
                unbiased_running_var)           bn_act in training mode with statistics over
                                                every rank of ``group`` (an optional op)
    linear_bn_act(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, training,
                  momentum, eps, slope_pre, slope_post, unbiased_running_var)
                                                bn_act(linear_act(...)) as one op (optional)
    linear_act_head(x, weight, bias, slope, head_weight, head_bias)
                                                linear_act(linear_act(x, weight, bias, slope),
                                                head_weight, head_bias) as one op (optional)
    gan_loss_stats(logits, target, kind, reduction, weight, stats, loss_d, real_logits,
                   fake_logits)             gan_loss(...) with gan_stats(stats, loss_d, that
                                                loss, real_logits, fake_logits) after it, as
                                                one op (optional): the G step's loss and the
                                                iteration's metrics

``slope`` None = identity, 0.0 = ReLU, otherwise LeakyReLU(slope) (:func:`act`); linear_act
and bias_act also take "tanh" and "sigmoid". linear_act's optional ``bn_eval`` = (running_mean,
running_var, weight, bias, eps) adds an inference-mode batch norm after the activation (no grad).

This package is the contract only: it imports no backend. The backends (``fastgan.backends``)
register themselves when the registry first asks for them.
"""
from __future__ import annotations

from typing import Optional

import torch

from .activation import act
from .registry import (OPS, OPTIONAL_OPS, BackendUnavailable, active_backend, add_loader,
                       auto_backend, auto_choice, available_backends, ensure_loaded, has_impl,
                       known_backends,
                       load_error, lookup, register, set_backend, unregister_backend,
                       use_backend)
from .units import is_unit_grad, on_new_unit, unit_grad


def __getattr__(name: str):
    if name == "BACKENDS":   # the catalogue's names (fastgan.backends), read on first use
        return known_backends()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _device_type(t) -> str:
    # t.device builds a torch.device per call; the flags are plain attribute reads (every op
    # call pays this on the host)
    return "cuda" if t.is_cuda else "cpu" if t.is_cpu else t.device.type


def linear_act(x, weight, bias=None, slope=None, bn_eval=None, out=None):
    if bn_eval is None and out is None:
        return lookup("linear_act", _device_type(x))(x, weight, bias, slope)
    # bn_eval = (running_mean, running_var, weight | None, bias | None, eps): an inference-mode
    # batch norm after the activation, in the same pass; out: the result written into the
    # caller's buffer (e.g. the fake rows of D's input). No backward for either.
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
        what = "bn_eval" if out is None else "out"
        raise ValueError(f"linear_act: {what} is for inference only (no grad): call it under "
                         "torch.no_grad()")
    if out is None:
        return lookup("linear_act", _device_type(x))(x, weight, bias, slope, tuple(bn_eval))
    if bn_eval is not None:
        raise ValueError("linear_act: pass bn_eval or out, not both")
    if out.shape != x.shape[:-1] + weight.shape[:1] or out.device != x.device or \
            not out.is_floating_point():
        raise ValueError(f"linear_act: out must be a floating-point tensor of shape "
                         f"{tuple(x.shape[:-1] + weight.shape[:1])} on {x.device}, got "
                         f"{out.dtype} {tuple(out.shape)} on {out.device}")
    return lookup("linear_act_into", _device_type(x))(x, weight, bias, slope, out)


def linear_act_head(x, weight, bias, slope, head_weight, head_bias=None):
    """``linear_act(linear_act(x, weight, bias, slope), head_weight, head_bias)``: a hidden
    layer and the linear head after it (a discriminator's logits) as one op, so that a backend
    can run the two backwards as one. An optional op."""
    if weight.dim() != 2 or head_weight.dim() != 2 or head_weight.shape[1] != weight.shape[0] \
            or x.shape[-1:] != weight.shape[1:]:
        raise ValueError(f"linear_act_head: x [..., K], weight [M, K] and head_weight [H, M] "
                         f"do not fit: {tuple(x.shape)}, {tuple(weight.shape)}, "
                         f"{tuple(head_weight.shape)}")
    return lookup("linear_act_head", _device_type(x))(x, weight, bias, slope, head_weight,
                                                      head_bias)


def bias_act(x, bias=None, slope=None, dim=1):
    return lookup("bias_act", _device_type(x))(x, bias, slope, dim)


def bn_act(x, weight, bias, running_mean, running_var, training=True, momentum=0.1, eps=1e-5,
           slope=None, unbiased_running_var=True, groups=1):
    return lookup("bn_act", _device_type(x))(x, weight, bias, running_mean, running_var, training,
                                           momentum, eps, slope, unbiased_running_var, groups)


def gan_loss(logits, target, kind="bce", reduction="mean", weight=1.0):
    return lookup("gan_loss", _device_type(logits))(logits, target, kind, reduction, weight)


def gan_loss_stats(logits, target, kind, reduction, weight, stats, loss_d, real_logits,
                   fake_logits):
    """``loss = gan_loss(logits, target, kind, reduction, weight)``, then ``gan_stats(stats,
    loss_d, loss, real_logits, fake_logits)`` (in place, no grad): the G step's loss and the
    iteration's metrics as one op, so that a backend can add the metrics in the loss's own
    kernel. Returns the loss. An optional op."""
    return lookup("gan_loss_stats", _device_type(logits))(logits, target, kind, reduction,
                                                         weight, stats, loss_d, real_logits,
                                                         fake_logits)


def sync_bn_act(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5, slope=None,
                group=None, unbiased_running_var=True):
    return lookup("sync_bn_act", _device_type(x))(x, weight, bias, running_mean, running_var,
                                                momentum, eps, slope, group,
                                                unbiased_running_var)


def resolve_backend(name: str, device_type: str, graph: bool = True,
                    variant: Optional[str] = None) -> str:
    """Turn ``auto`` into a concrete backend name for ``device_type`` in graph mode or eagerly
    (``graph``) for ``variant`` (see auto_backend); check others exist."""
    if name == "auto":
        return auto_backend(device_type, graph=graph, variant=variant)
    known = known_backends()
    if name not in known:
        raise ValueError(f"unknown backend {name!r}; choose auto, {', '.join(known)}")
    if not ensure_loaded(name):
        raise BackendUnavailable(f"backend {name!r} is not available here: {load_error(name)}")
    return name


def gather_scale(images, idx, scale, shift, out):
    """``out[i] = images[idx[i]] * scale + shift`` (uint8 images; float32/float64 ``out`` of
    ``len(idx)`` images, in place); returns ``out``. An optional op."""
    return lookup("gather_scale", _device_type(images))(images, idx, scale, shift, out)


def gan_stats(stats, loss_d, loss_g, real_logits, fake_logits):
    """``stats += [loss_d, loss_g, mean sigmoid(real_logits), mean sigmoid(fake_logits), 1]``
    (in place, float32 math); returns ``stats``. An optional op."""
    return lookup("gan_stats", _device_type(stats))(stats, loss_d, loss_g, real_logits,
                                                  fake_logits)


# ---- linear_bn_act (issue 20: training-mode BN in the matmul epilogue) ----
def linear_bn_act(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, training=True,
                  momentum=0.1, eps=1e-5, slope_pre=None, slope_post=None,
                  unbiased_running_var=True):
    """``bn_act(linear_act(x, weight, bias, slope_pre), bn_weight, bn_bias, running_mean,
    running_var, training, momentum, eps, slope_post, unbiased_running_var)`` as one op (the
    reference is exactly that composition); the running statistics updated in place. An
    optional op."""
    return lookup("linear_bn_act", x.device.type)(x, weight, bias, bn_weight, bn_bias,
                                                  running_mean, running_var, training, momentum,
                                                  eps, slope_pre, slope_post,
                                                  unbiased_running_var)
# ---- end linear_bn_act ----


__all__ = ["linear_act", "bias_act", "bn_act", "gan_loss", "sync_bn_act", "register", "lookup",
           "use_backend", "set_backend", "active_backend", "available_backends", "auto_backend",
           "auto_choice",
           "resolve_backend", "BACKENDS", "OPS", "OPTIONAL_OPS", "BackendUnavailable",
           "has_impl", "unregister_backend", "load_error", "ensure_loaded", "add_loader", "act",
           "known_backends", "gather_scale", "gan_stats", "linear_act_head", "gan_loss_stats",
           "unit_grad",
           "is_unit_grad",
           "on_new_unit",
           "linear_bn_act"]
