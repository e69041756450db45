"""The machine and software of a benchmark run, as the results document records them."""
from __future__ import annotations

import os
import platform
from typing import Optional

import torch


def gpu_slug(name: Optional[str] = None) -> str:
    """A short file-name-safe name of the GPU: "NVIDIA H100 80GB HBM3" -> "h100"; "cpu"."""
    if name is None:
        if not torch.cuda.is_available():
            return "cpu"
        name = torch.cuda.get_device_name(0)
    words = [w for w in name.lower().replace("_", " ").replace("-", " ").split()
             if w not in ("nvidia", "geforce", "tesla", "quadro")]
    out = []
    for w in words:
        out.append("".join(c for c in w if c.isalnum()))
        if any(c.isdigit() for c in w):
            break
    return "-".join(x for x in out if x) or "gpu"


def environment(device: str, threads: Optional[int] = None) -> dict:
    """The machine and software of a run; ``threads``: the CPU threads it runs with (default:
    torch's current setting)."""
    from fastgan import __version__, ops
    dev = torch.device(device)
    env = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "fastgan": __version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "triton": None, "cudnn": None}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception as e:
        env["triton"] = f"not importable ({type(e).__name__})"
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env.update(device_name=p.name, gpu_slug=gpu_slug(p.name),
                   sm=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version())
        from .telemetry import Nvml
        env["nvml"] = Nvml(dev).info()
    else:
        n = threads or torch.get_num_threads()
        env.update(device_name=f"CPU ({platform.processor() or platform.machine()}, "
                               f"{n} thread{'s' if n != 1 else ''})",
                   gpu_slug="cpu", nvml={"available": False, "error": "CPU run"})
    dt = dev.type
    env["backends"] = ops.available_backends(dt)
    env["auto_backend"] = ops.auto_backend(dt)
    from fastgan.variants import VARIANTS   # auto per variant and mode (backends/measured.py)
    env["auto"] = {v: {"graph": ops.auto_backend(dt, graph=True, variant=v),
                       "eager": ops.auto_backend(dt, graph=False, variant=v)} for v in VARIANTS}
    env["backend_errors"] = {b: ops.load_error(b) for b in ops.BACKENDS if ops.load_error(b)}
    env["tf32"] = dt == "cuda"
    from .paths import cudnn_benchmark
    env["cudnn_benchmark"] = bool(dt == "cuda" and cudnn_benchmark())
    env["triton_interpret"] = os.environ.get("TRITON_INTERPRET") == "1"
    return env
