"""cuDNN runs dcgan's convolutions on tensor cores (issue 21; a GPU test, in make gpu-check).

dcgan's conv layers at their real shapes (64x64, ngf = ndf = 64, batch 128), each forward and
backward (dX and dW) under the profiler after cuDNN's algorithm search (``cudnn.benchmark``, as
``fastgan train`` and every benchmark path set it) has warmed up, in TF32 (fp32 parameters, the
default) and bf16, in NCHW and channels_last. Kernel names vary with the cuDNN version, so the
check is by pattern and by share of GPU time, not by exact name:

- a tensor-core kernel's name holds one of TENSOR_CORE (cuDNN's and CUTLASS' ``xmma`` /
  ``gmma`` / ``wgmma`` / ``hmma`` / ``tensorop`` kernels, the ``sm80_`` / ``sm90_`` generated
  kernels, the MMA shapes ``16816`` / ``1688``, and the data types ``tf32`` / ``bf16`` in the
  name); a plain ``gemm`` is not enough: cuDNN's SIMT fp32 kernels are ``implicit_convolve_sgemm``
  and ``precomputed_convolve_sgemm`` (SIMT, excluded by name);
- at least MIN_SHARE of the convolutions' kernel time is in tensor-core kernels (layout
  transposes and the tiny first/last layers of 3 channels or 1 logit may run elsewhere).

On failure the message lists each kernel (name, calls, us) so the culprit is visible.
"""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

pytestmark = pytest.mark.gpu

TENSOR_CORE = re.compile(r"xmma|wgmma|gmma|hmma|tensorop|16816|1688|sm80_|sm90_|tf32|bf16",
                         re.I)
SIMT = re.compile(r"implicit_convolve_sgemm|precomputed_convolve_sgemm|"
                  r"explicit_convolve_sgemm|winograd|fft", re.I)
MIN_SHARE = 0.6


def _conv_calls(batch=128):
    """(fn, input shape, weight shape, kwargs) of every conv of dcgan's D and G."""
    from fastgan.nn import ConvBNAct
    from fastgan.variants import get_variant
    nets = get_variant("dcgan").build({})    # shapes taken at batch 2 on the CPU
    calls = []

    def hook(mod, inputs, out):
        c = mod.conv
        fn = F.conv_transpose2d if mod.transposed else F.conv2d
        kw = dict(stride=c.stride, padding=c.padding)
        if mod.transposed:
            kw["output_padding"] = c.output_padding
        calls.append((fn, (batch,) + tuple(inputs[0].shape[1:]), tuple(c.weight.shape), kw))

    hs = [m.register_forward_hook(hook) for n in nets.values() for m in n.modules()
          if isinstance(m, ConvBNAct)]
    with torch.no_grad():
        nets["D"](nets["G"](torch.randn(2, 100)))
    for h in hs:
        h.remove()
    return calls


def _kernel_times(prof):
    out = {}
    for e in prof.key_averages():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = getattr(e, "device_time_total", None)
        if us is None:
            us = e.cuda_time_total
        n, t = out.get(e.key, (0, 0.0))
        out[e.key] = (n + e.count, t + us)
    return out


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("memory_format", ["nchw", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["tf32", "bf16"])
def test_dcgan_convs_run_on_tensor_cores(dtype, memory_format, monkeypatch):
    from torch.profiler import ProfilerActivity, profile
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    dev = torch.device("cuda")
    tensors = []
    for fn, xs, ws, kw in _conv_calls():
        x = torch.randn(xs, device=dev, dtype=dtype).contiguous(memory_format=fmt)
        w = (torch.randn(ws, device=dev, dtype=dtype) * 0.02).contiguous(memory_format=fmt)
        with torch.no_grad():
            gy = torch.randn_like(fn(x, w, **kw))      # the output's layout, made up front
        tensors.append((fn, x.requires_grad_(), w.requires_grad_(), kw, gy))

    def run():   # forward, dX and dW of every conv; no accumulation or fill kernels
        for fn, x, w, kw, gy in tensors:
            torch.autograd.grad(fn(x, w, **kw), (x, w), gy)

    for _ in range(2):   # the algorithm search, then a warm call
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    k = _kernel_times(prof)
    total = sum(t for _, t in k.values())
    is_tc = {name: bool(TENSOR_CORE.search(name)) and not SIMT.search(name) for name in k}
    tc = sum(t for name, (_, t) in k.items() if is_tc[name])
    table = "\n".join(f"  {t:9.1f} us {n:4d}x {'TC ' if is_tc[name] else '   '}{name[:140]}"
                      for name, (n, t) in sorted(k.items(), key=lambda kv: -kv[1][1]))
    assert total > 0, "the profiler saw no CUDA kernels"
    assert tc / total >= MIN_SHARE, (f"{memory_format} {dtype}: {tc / total:.0%} of the conv "
                                     f"kernels' time on tensor cores (< {MIN_SHARE:.0%}):\n{table}")
