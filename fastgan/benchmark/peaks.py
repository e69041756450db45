"""The machine's own ceilings for the roofline, measured in seconds: a large bf16 and a tf32
matrix product (cuBLAS, random data) and a large device-to-device copy (bytes read + written).

``make gpu-check`` measures them at the start of its run and hands them to ``fastgan bench``
through ``FASTGAN_PEAKS_FILE``, so the "x floor" column uses this GPU's ceilings; the built-in
table in ``roofline.py`` is the fallback.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _median_s(fn: Callable[[], None], device: torch.device, warmup: int, reps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure_peaks(device: str = "cuda", tiny: bool = False) -> dict:
    """{tf32, bf16 (FLOP/s), bytes (B/s), source, sizes}: medians over repeated runs."""
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    n = 8192 if gpu and not tiny else 256
    copy_bytes = (1 << 30) if gpu and not tiny else (8 << 20)
    reps, warmup = (20, 3) if gpu and not tiny else (3, 1)
    g = torch.Generator(device=dev).manual_seed(0)
    out = {}
    old_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, dtype in (("bf16", torch.bfloat16), ("tf32", torch.float32)):
            torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            # two operand pairs in turn, so no product reuses the previous one's inputs in L2
            ops = [(torch.randn(n, n, device=dev, generator=g).to(dtype),
                    torch.randn(n, n, device=dev, generator=g).to(dtype)) for _ in range(2)]
            c = torch.empty(n, n, device=dev, dtype=dtype)
            state = {"i": 0}

            def mm():
                a, b = ops[state["i"] % 2]
                state["i"] += 1
                torch.mm(a, b, out=c)

            out[name] = 2.0 * n ** 3 / _median_s(mm, dev, warmup, reps)
            del ops, c
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old_tf32
    src = torch.randn(copy_bytes // 4, device=dev, generator=g)
    dst = torch.empty_like(src)
    out["bytes"] = 2.0 * copy_bytes / _median_s(lambda: dst.copy_(src), dev, warmup, reps)
    del src, dst
    if gpu:
        torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(dev) if gpu else "CPU"
    out["source"] = (f"measured in this run on {name}: {out['tf32'] / 1e12:.3g} TFLOP/s tf32 and "
                     f"{out['bf16'] / 1e12:.3g} bf16 ({n}^3 torch.mm, random data), "
                     f"{out['bytes'] / 1e12:.3g} TB/s device-to-device copy "
                     f"({copy_bytes >> 20} MiB, read + write); medians of {reps}")
    out["sizes"] = {"matmul_n": n, "copy_mib": copy_bytes >> 20, "reps": reps}
    return out
