"""Timing one path: build, warm up, time blocks of iterations, read memory, energy and GPU busy.

The method (the same for every path, so that ratios compare like with like):
  1. build the path (modules, optimizers; a CUDA-graph path also warms up and captures here);
  2. run 1 iteration, then ``warmup`` more, synchronizing before each clock read: what these
     cost beyond the steady state is reported as the one-time cost (torch.compile, Triton JIT and
     autotuning, graph capture, cuBLAS/cuDNN handles);
  3. time ``reps`` blocks of ``n`` iterations each, ``n`` chosen so that a block lasts about
     ``block_s``; CUDA events around each block on a GPU (host clock after a synchronize on CPU);
     the per-iteration time is the median over the blocks; the spread is (p75 - p25)/median;
  4. NVML energy over the timed blocks (mean W, J per 1000 images); peak memory from
     ``torch.cuda.max_memory_allocated`` since the path started (dataset included);
  5. GPU busy: a short run under ``torch.profiler`` (CUDA activity only) gives the kernel time
     per iteration (union of kernel intervals); busy % = that / the median iteration time.
Every path has a wall-clock budget: when the warm-up has used it, fewer blocks are timed and the
row says so; a path that raises is recorded with its exception, never aborts the matrix.
"""
from __future__ import annotations

import contextlib
import math
import re
import statistics
import time
import traceback
from typing import Optional

import torch

from .paths import backend_for, make_runner, parse_path, set_math_mode, sync
from .telemetry import Nvml, Window


def first_line(e: BaseException) -> str:
    """``Type: first line of the message``, without torch's "(with implementation in <module
    ...>)" noise, at most 300 characters."""
    msg = str(e).strip().splitlines()
    text = re.sub(r" \(with implementation in <module [^>]*>\)", "", msg[0] if msg else "")
    return f"{type(e).__name__}: {text}".strip()[:300]


def base_row(spec: dict) -> dict:
    p = parse_path(spec["path"])
    return {"variant": spec["variant"], "batch": int(spec["batch"]),
            "precision": spec.get("precision", "fp32"),
            "overrides": dict(spec.get("overrides") or {}),
            "path": spec["path"], "kind": p["kind"], "backend": p["backend"],
            "compile_mode": p["mode"], "graph": p["graph"],
            "status": "pending", "reason": None,
            "it_s": None, "img_s": None, "ms_per_it": None, "spread_pct": None,
            "reps": None, "iters_per_rep": None,
            "x_vs_eager_ref": None, "x_vs_best_compile": None,
            "peak_mem_mib": None, "mean_power_w": None, "energy_j_per_1k_img": None,
            "nvml_util_pct": None, "energy_source": None,
            "gpu_busy_pct": None, "kernels_per_it": None, "gpu_ms_per_it": None,
            "compile_s": None, "build_s": None, "wall_s": None, "finite": None,
            "isolated": bool(spec.get("isolated", False))}


class _Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def __enter__(self):
        if self.cuda:
            self.a = torch.cuda.Event(enable_timing=True)
            self.b = torch.cuda.Event(enable_timing=True)
            self.a.record()
        else:
            self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.b.record()
            self.b.synchronize()
            self.ms = self.a.elapsed_time(self.b)
        else:
            self.ms = (time.perf_counter() - self.t) * 1e3
        return False


def _kernel_intervals(prof):
    """(start_us, end_us, name) of the GPU activity recorded by a torch.profiler run."""
    out = []
    try:
        for e in prof.profiler.kineto_results.events():
            if str(e.device_type()).split(".")[-1].upper() in ("CUDA", "PRIVATEUSE1"):
                s = e.start_ns() / 1e3
                out.append((s, s + e.duration_ns() / 1e3, e.name()))
        if out:
            return out
    except Exception:
        pass
    from torch.autograd import DeviceType
    for e in prof.events():
        if getattr(e, "device_type", None) == DeviceType.CUDA:
            out.append((e.time_range.start, e.time_range.end, e.name))
    return out


def profile_busy(runner, k: int, device: torch.device) -> dict:
    """Kernel time per iteration (union of intervals), kernel launches per iteration and the
    kernels with the most time, from ``k`` iterations under torch.profiler."""
    import warnings

    from torch.profiler import ProfilerActivity, profile
    sync(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            runner.run(k)
            sync(device)
    return kernel_stats(_kernel_intervals(prof), k)


def kernel_stats(intervals, k: int) -> dict:
    """``intervals``: (start_us, end_us, name) of ``k`` iterations' GPU activity."""
    iv = sorted(intervals)
    busy, cur_s, cur_e, kernels = 0.0, None, None, 0
    per_name: dict = {}
    for s, e, name in iv:
        if not str(name).startswith(("Memcpy", "Memset")):
            kernels += 1
        c = per_name.setdefault(str(name), [0, 0.0])
        c[0] += 1
        c[1] += e - s
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    total = sum(c[1] for c in per_name.values()) or 1.0
    top = sorted(per_name.items(), key=lambda kv: -kv[1][1])[:TOP_KERNELS]
    return {"gpu_us_per_it": busy / k if iv else None,
            "kernels_per_it": kernels / k if iv else None,
            "top_kernels": [{"name": n[:160], "calls_per_it": c / k, "us_per_it": t / k,
                             "share_pct": 100.0 * t / total} for n, (c, t) in top]}


TOP_KERNELS = 10   # the kernels with the most GPU time per iteration, kept in each row


@contextlib.contextmanager
def warmed_runner(spec: dict, data=None):
    """For callers that time blocks themselves (the pytest-benchmark files): the path of
    ``spec`` built and warmed up (1 + ``timing.warmup`` iterations), its backend active.
    Yields ``(runner, info)``; info: build_s, warm_s, est_s (one warm iteration), n (iterations
    per block of about ``timing.block_s``)."""
    device = torch.device(spec["device"])
    tm = dict(spec.get("timing") or {})
    warmup = int(tm.get("warmup", 3))
    set_math_mode(device)
    with backend_for(spec["path"]):
        runner = make_runner(spec["path"], spec["variant"], int(spec["batch"]),
                             spec.get("precision", "fp32"), dict(spec.get("overrides") or {}),
                             device, data=data, seed=int(spec.get("seed", 0)))
        try:
            t0 = time.perf_counter()
            runner.build()
            sync(device)
            build_s = time.perf_counter() - t0
            runner.run(1)
            sync(device)
            t1 = time.perf_counter()
            runner.run(warmup)
            sync(device)
            warm_s = time.perf_counter() - t1
            est = max(warm_s / warmup if warmup else build_s, 1e-7)
            n = int(min(int(tm.get("max_iters", 100000)),
                        max(int(tm.get("min_iters", 1)),
                            math.ceil(float(tm.get("block_s", 0.1)) / est))))
            yield runner, {"build_s": build_s, "warm_s": warm_s, "est_s": est, "n": n}
        finally:
            runner.close()


def measure_path(spec: dict, data=None, nvml: Optional[Nvml] = None) -> dict:
    """Run one path as ``spec`` says and return its result row (see ``base_row``).

    spec: variant, batch, precision, overrides, path, device, seed, budget_s, profile,
          timing = {warmup, reps, block_s, min_iters, max_iters}.
    """
    row = base_row(spec)
    t_start = time.perf_counter()
    device = torch.device(spec["device"])
    tm = dict(spec.get("timing") or {})
    warmup = int(tm.get("warmup", 3))
    reps = int(tm.get("reps", 5))
    block_s = float(tm.get("block_s", 0.1))
    min_iters = int(tm.get("min_iters", 1))
    max_iters = int(tm.get("max_iters", 100000))
    budget = float(spec.get("budget_s") or math.inf)
    if nvml is None:
        nvml = Nvml(device)
    runner = None
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    try:
        set_math_mode(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with backend_for(spec["path"]):
            runner = make_runner(spec["path"], spec["variant"], int(spec["batch"]),
                                 row["precision"], row["overrides"], device, data=data,
                                 seed=int(spec.get("seed", 0)))
            t0 = time.perf_counter()
            runner.build()
            sync(device)
            row["build_s"] = time.perf_counter() - t0

            t1 = time.perf_counter()
            runner.run(1)
            sync(device)
            first_s = time.perf_counter() - t1
            used = time.perf_counter() - t_start
            n_warm = warmup if used + warmup * first_s < budget else min(warmup, 1)
            t2 = time.perf_counter()
            runner.run(n_warm)
            sync(device)
            warm_s = time.perf_counter() - t2
            est = warm_s / n_warm if n_warm else first_s
            est = max(est, 1e-7)

            n = int(min(max_iters, max(min_iters, math.ceil(block_s / est))))
            left = budget - (time.perf_counter() - t_start)
            fit = int(left // (n * est)) if math.isfinite(left) else reps
            n_reps = max(1, min(reps, fit))
            note = None
            if n_reps < reps:
                n_reps = max(n_reps, min(reps, 2))
                note = f"budget: {n_reps} of {reps} blocks"
            times = []
            with Window(nvml) as win:
                for _ in range(n_reps):
                    with _Timer(device) as t:
                        runner.run(n)
                    times.append(t.ms / n)
            tele = win.result()
            med = statistics.median(times)
            q = statistics.quantiles(times, n=4) if len(times) >= 2 else [med, med, med]
            row["finite"] = _finite(runner)
            row.update({"ms_per_it": med, "it_s": 1e3 / med,
                        "img_s": 1e3 / med * int(spec["batch"]),
                        "spread_pct": (q[2] - q[0]) / med * 100 if med > 0 else None,
                        "reps": n_reps, "iters_per_rep": n})
            one = first_s + warm_s - (1 + n_warm) * med / 1e3
            if runner.one_time_s is not None:
                one += runner.one_time_s
            row["compile_s"] = max(0.0, one)
            timed_iters = n_reps * n
            if tele["energy_j"] is not None:
                # The window also holds the per-block synchronizations: charge its energy to the
                # iterations it ran (the gaps are microseconds against >= block_s blocks).
                row["mean_power_w"] = tele["mean_power_w"]
                row["energy_j_per_1k_img"] = (tele["energy_j"] / timed_iters
                                              / int(spec["batch"]) * 1000.0)
                row["energy_source"] = tele["energy_source"]
            row["nvml_util_pct"] = tele["nvml_util_pct"]
            if device.type == "cpu" and spec.get("count_kernels", True) and \
                    not spec["path"].startswith("compile-"):
                row.update(proxy_kernels(runner))
            if device.type == "cuda":
                row["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                if spec.get("profile", True):
                    k = int(max(3, min(50, math.ceil(0.05 / (med / 1e3)))))
                    try:
                        pb = profile_busy(runner, k, device)
                        if pb["gpu_us_per_it"] is not None:
                            row["gpu_ms_per_it"] = pb["gpu_us_per_it"] / 1e3
                            row["gpu_busy_pct"] = min(100.0, pb["gpu_us_per_it"] / 1e3 / med
                                                      * 100.0)
                            row["kernels_per_it"] = pb["kernels_per_it"]
                            # the CPU proxy's budget, beside the profiler's count
                            row["kernel_budget"] = _budget(runner)
                            row["top_kernels"] = pb["top_kernels"]
                    except Exception as e:  # the profiler is optional
                        row["profile_error"] = first_line(e)
            row["status"] = "ok"
            row["reason"] = note
    except Exception as e:
        row["status"] = "error"
        row["reason"] = first_line(e)
        row["traceback"] = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
    finally:
        if runner is not None:
            try:
                runner.close()
            except Exception:
                pass
    row["wall_s"] = time.perf_counter() - t_start
    return row


def proxy_kernels(runner) -> dict:
    """CPU rows: kernels per iteration from the dispatch-level count (kernel_count.py). Not for
    torch.compile paths: Inductor's generated C++ is invisible to the dispatcher."""
    from .kernel_count import count_work, gpu_like_cpu_kernels
    try:
        with gpu_like_cpu_kernels():
            c = count_work(lambda: runner.run(1))
    except Exception as e:   # the count is optional
        return {"kernels_error": first_line(e)}
    return {"kernels_per_it": float(c["kernels"]), "kernels_source": "dispatch proxy (CPU)",
            "host_syncs_per_it": float(c["host_syncs"]), "kernel_budget": _budget(runner)}


def _budget(runner) -> Optional[int]:
    """The variant's stated proxy budget for this row (BenchSettings.kernel_budget*), where
    the row counts what the budget counts: the fastgan-cuda, -reference or -triton path (eager
    or graphed) at the tiny architecture (the count does not depend on the batch)."""
    from fastgan.variants import bench_settings
    name = getattr(runner, "name", "")   # a graph replays the eager iteration's kernels
    field = {"fastgan-cuda": "kernel_budget", "fastgan-reference": "kernel_budget_reference",
             "fastgan-triton": "kernel_budget_triton"}.get(name.removesuffix("-graph"))
    try:
        s = bench_settings(runner.variant_name)
    except KeyError:
        return None
    engine = getattr(runner, "engine", None)
    if engine is not None and any(getattr(o, "fused", None) != "triton"
                                  for o in (engine.opt_d, engine.opt_g)):
        return None   # Adam on torch's CPU kernel: the budget counts the GPU's one launch
    ov = getattr(runner, "overrides", None) or {}
    if field is None or any(ov.get(k) != v for k, v in s.tiny_overrides.items()):
        return None
    return getattr(s, field)


def _finite(runner) -> Optional[bool]:
    try:
        if hasattr(runner, "read_stats"):
            st = runner.read_stats()
            return bool(math.isfinite(st["d_loss"]) and math.isfinite(st["g_loss"]))
        losses = getattr(runner, "losses", None)
        if losses:
            return bool(all(math.isfinite(x) for x in losses))
    except Exception:
        return None
    return None


def cuda_healthy(device: torch.device) -> bool:
    """False once the CUDA context is broken (an illegal access poisons it for good)."""
    if device.type != "cuda":
        return True
    try:
        x = torch.randn(16, device=device)
        float((x * 2).sum())
        torch.cuda.synchronize(device)
        return True
    except Exception:
        return False
