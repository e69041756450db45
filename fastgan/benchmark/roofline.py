"""The roofline of one training iteration: FLOPs and minimum bytes, counted on the real layers.

The counter runs the engine's own ``Engine.step()`` (reference backend) once on *fake* tensors
(``FakeTensorMode``: shapes and dtypes only, no arithmetic, no memory), so the numbers follow
whatever the engine and the variants do, at any batch size, in well under a second:

FLOPs
    ``torch.utils.flop_counter.FlopCounterMode``: 2·M·N·K for every matmul and the exact count of
    every convolution (forward, and the input- and weight-gradient products the backward really
    runs: no dX for a layer whose input needs no gradient, no dW for D while the G step has D
    frozen). Elementwise work (bias, activations, BatchNorm, losses, Adam) is not counted: it is
    memory traffic, below.
Minimum bytes (each tensor moved once, fp32 = 4 bytes an element, bf16 activations 2)
    optimizer   32 B per trained parameter and optimizer step: the gradient written once (4),
                then Adam reads p, g, m, v (16) and writes p, m, v (12);
    weights     each layer call reads its parameters once, and once more in the backward when
                its output gets a gradient;
    activations each layer's output (Linear/conv with its BatchNorm and activation fused, or a
                stand-alone BatchNorm) is written once and read once; when the output gets a
                gradient, that gradient is written once and read once too;
    data        the real batch gathered (uint8 read, float written) and the noise written.
The floor of an iteration on a device is max(FLOPs / peak FLOP/s, bytes / peak bandwidth).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

import torch
import torch.nn as nn

# Peak numbers used for the floor, per GPU family. fp32 training runs its matmuls/convs in TF32
# (fastgan and every benchmark path set allow_tf32), so "fp32" uses the TF32 rate.
# H100: ~400 TFLOP/s TF32 and ~790 bf16 (vendor figures), ~3.0 TB/s (a device-to-device copy
# measured on this workplace's H100, bytes read + written). H200: same SMs, ~4.3 TB/s measured.
PEAKS = {
    "h100": {"tf32": 400e12, "bf16": 790e12, "bytes": 3.0e12,
             "source": "H100: ~400 TFLOP/s tf32, ~790 bf16, ~3.0 TB/s measured copy"},
    "h200": {"tf32": 400e12, "bf16": 790e12, "bytes": 4.3e12,
             "source": "H200: ~400 TFLOP/s tf32, ~790 bf16, ~4.3 TB/s measured copy"},
}


def device_peaks(device_name: Optional[str]) -> Optional[dict]:
    """Peak FLOP/s and bytes/s for the floor: ``FASTGAN_PEAK_TFLOPS`` (tf32),
    ``FASTGAN_PEAK_BF16_TFLOPS`` and ``FASTGAN_PEAK_TBPS`` override; then the peaks measured on
    this machine (``FASTGAN_PEAKS_FILE``, written by make gpu-check); else the table above by GPU
    name; None when unknown (CPU, other GPUs): no floor is printed then."""
    env_t, env_b = os.environ.get("FASTGAN_PEAK_TFLOPS"), os.environ.get("FASTGAN_PEAK_TBPS")
    if env_t and env_b:
        bf16 = os.environ.get("FASTGAN_PEAK_BF16_TFLOPS", env_t)
        return {"tf32": float(env_t) * 1e12, "bf16": float(bf16) * 1e12,
                "bytes": float(env_b) * 1e12,
                "source": f"FASTGAN_PEAK_TFLOPS={env_t}, FASTGAN_PEAK_BF16_TFLOPS={bf16}, "
                          f"FASTGAN_PEAK_TBPS={env_b}"}
    peaks_file = os.environ.get("FASTGAN_PEAKS_FILE")
    if peaks_file and os.path.isfile(peaks_file):   # measured by make gpu-check (peaks.py)
        import json
        with open(peaks_file) as f:
            p = json.load(f)
        if all(isinstance(p.get(k), (int, float)) and p[k] > 0 for k in ("tf32", "bf16", "bytes")):
            return {k: p[k] for k in ("tf32", "bf16", "bytes", "source") if k in p}
    name = (device_name or "").lower()
    for key, p in PEAKS.items():
        if key in name:
            return dict(p)
    return None


@dataclass
class IterationCount:
    variant: str
    batch: int
    precision: str
    flops: int
    flops_d_step: int
    flops_g_step: int
    bytes: int
    bytes_parts: Dict[str, int] = field(default_factory=dict)
    params_d: int = 0
    params_g: int = 0

    def floor(self, peaks: Optional[dict]) -> Optional[dict]:
        """{floor_s, compute_s, memory_s, bound} on a device with ``peaks``; None if unknown."""
        if not peaks:
            return None
        rate = peaks["bf16"] if self.precision == "bf16" else peaks["tf32"]
        compute_s = self.flops / rate
        memory_s = self.bytes / peaks["bytes"]
        return {"floor_s": max(compute_s, memory_s), "compute_s": compute_s,
                "memory_s": memory_s, "bound": "compute" if compute_s >= memory_s else "memory"}

    def to_dict(self) -> dict:
        return {"variant": self.variant, "batch": self.batch, "precision": self.precision,
                "flops": self.flops, "flops_d_step": self.flops_d_step,
                "flops_g_step": self.flops_g_step, "bytes": self.bytes,
                "bytes_parts": dict(self.bytes_parts), "params_d": self.params_d,
                "params_g": self.params_g}


def _layer_types():
    from fastgan.nn import BatchNormAct, ConvBNAct, FusedLinearAct
    return FusedLinearAct, ConvBNAct, BatchNormAct


def _hook_layers(nets: Dict[str, nn.Module], parts: Dict[str, int], act_bytes: int):
    """Forward hooks that add each layer call's activation and weight traffic to ``parts``."""
    FusedLinearAct, ConvBNAct, BatchNormAct = _layer_types()
    inner_bn = set()
    for net in nets.values():
        for m in net.modules():
            if isinstance(m, ConvBNAct) and m.bn is not None:
                inner_bn.add(id(m.bn))
    handles = []

    def hook(mod, inputs, kwargs, out):
        if not torch.is_tensor(out):
            return
        grad = bool(out.requires_grad)
        parts["activations"] += out.numel() * act_bytes * (4 if grad else 2)
        n_w = sum(p.numel() for p in mod.parameters())
        # An inference BatchNorm folded into the layer's epilogue reads its weight and bias too.
        bn = kwargs.get("bn_eval")
        if bn is not None:
            n_w += sum(t.numel() for t in bn[2:4] if t is not None)
        parts["weights"] += n_w * 4 * (2 if grad else 1)

    for net in nets.values():
        for m in net.modules():
            if isinstance(m, (FusedLinearAct, ConvBNAct)) or (
                    isinstance(m, BatchNormAct) and id(m) not in inner_bn):
                handles.append(m.register_forward_hook(hook, with_kwargs=True))
    return handles


@contextlib.contextmanager
def _unfused_linear_bn():
    """(FusedLinearAct, BatchNormAct) pairs as two module calls, so the layer hooks see both:
    the fused op (nn.batchnorm.linear_bn_act) moves the same bytes (it writes the pre-BN
    activation for its backward and the output) and runs the same matmul. Likewise a hidden
    layer and its head (nn.linear.LinearHeadSequential), whose fused backward moves fewer
    bytes (dY is never written): the count stays the unfused one, an upper bound."""
    from fastgan.nn import batchnorm, linear
    fusable, head = batchnorm._fusable, linear._head_fusable
    batchnorm._fusable = lambda lin, bn: False
    linear._head_fusable = lambda hidden, head: False
    try:
        yield
    finally:
        batchnorm._fusable, linear._head_fusable = fusable, head


def count_iteration(variant: str, batch_size: int, precision: str = "fp32",
                    **overrides) -> IterationCount:
    """Count one ``Engine.step()`` of ``variant`` at ``batch_size`` (see the module docstring).

    ``overrides`` go to ``get_variant`` (e.g. ``image_size=32, ngf=16`` for a small dcgan),
    except ``memory_format`` (the engine's: the same FLOPs and bytes in either layout).
    """
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from fastgan import ops
    from fastgan.engine.iteration import Engine, EngineOptions
    from fastgan.variants import get_variant

    overrides = dict(overrides)
    memory_format = overrides.pop("memory_format", "nchw")
    v = get_variant(variant, batch_size=batch_size, **overrides)
    h = v.hyper
    parts = {"optimizer": 0, "weights": 0, "activations": 0, "data": 0}
    act_bytes = 2 if precision == "bf16" else 4
    d_flops = []
    with ops.use_backend("reference"), FakeTensorMode(allow_non_fake_inputs=True):
        torch.manual_seed(0)
        nets = v.build({})
        n_data = 2 * batch_size + 8   # more than one batch: mlp draws a contiguous slice of it
        images = torch.empty((n_data, h.channels, h.image_size, h.image_size), dtype=torch.uint8)
        labels = torch.empty((n_data,), dtype=torch.long)
        eng = Engine(v, nets, images, labels if v.needs_labels else None,
                     EngineOptions(batch_size=h.batch_size, d_steps=h.d_steps,
                                   label_smoothing=h.label_smoothing, precision=precision,
                                   memory_format=memory_format),
                     torch.device("cpu"))
        params_d = sum(p.numel() for p in eng.d_params)
        params_g = sum(p.numel() for p in eng.g_params)
        handles = _hook_layers(nets, parts, act_bytes)
        with _unfused_linear_bn(), FlopCounterMode(display=False) as fc:
            hd = eng.opt_d.register_step_post_hook(
                lambda *a, **k: d_flops.append(fc.get_total_flops()))
            try:
                eng.step()
            finally:
                hd.remove()
                for hnd in handles:
                    hnd.remove()
        total = int(fc.get_total_flops())
    d_steps = max(1, int(h.d_steps))
    parts["optimizer"] = 32 * (params_d * d_steps + params_g)
    n_real, n_noise = v.batch_sizes(h.batch_size)
    px = h.channels * h.image_size * h.image_size
    zdim = int(torch.Size(v.noise_shape(1)).numel())
    n_g = 0 if v.g_reuses_fake else v.g_batch_size(h.batch_size)
    parts["data"] = d_steps * (n_real * px * (1 + 4) + n_noise * zdim * 4) + n_g * zdim * 4
    d_total = int(d_flops[-1]) if d_flops else total
    return IterationCount(variant=variant, batch=batch_size, precision=precision, flops=total,
                          flops_d_step=d_total, flops_g_step=total - d_total,
                          bytes=int(sum(parts.values())), bytes_parts=parts,
                          params_d=params_d, params_g=params_g)


@contextlib.contextmanager
def _quiet():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def roofline_row(variant: str, batch: int, precision: str, overrides: dict,
                 peaks: Optional[dict], best_ms: Optional[float] = None,
                 best_path: Optional[str] = None) -> dict:
    """One roofline entry for the report: counts, floor on the device and measured/floor."""
    try:
        with _quiet():
            c = count_iteration(variant, batch, precision, **overrides)
    except Exception as e:  # the counter must never take the benchmark down
        return {"variant": variant, "batch": batch, "precision": precision,
                "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    row = c.to_dict()
    row.update({"gflop_per_iter": c.flops / 1e9, "min_mb_per_iter": c.bytes / 1e6,
                "overrides": dict(overrides)})
    fl = c.floor(peaks)
    row["floor"] = fl
    row["floor_us"] = fl["floor_s"] * 1e6 if fl else None
    row["bound"] = fl["bound"] if fl else None
    row["best_path"] = best_path
    row["best_ms"] = best_ms
    row["measured_over_floor"] = (best_ms / 1e3 / fl["floor_s"]
                                  if fl and best_ms and fl["floor_s"] > 0 else None)
    return row
