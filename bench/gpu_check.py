#!/usr/bin/env python3
"""`make gpu-check`: fastgan's GPU questions answered in one command of at most 6 minutes.

On a bare GPU machine without network (torch and triton preinstalled in ``python3``), in
priority order, each step appending its results to ``$FASTGAN_RESULTS/gpu-check.jsonl`` as it
goes (a timeout or crash in a late step keeps everything before it):

  machine   nvidia-smi and the versions
  build     ``pip install --no-build-isolation --no-deps -e .`` (fastgan._C for this GPU), then
            ``cuobjdump``: the extension must hold machine code (ELF) for the GPU's arch, not
            only PTX; meanwhile child processes compile the seed-batch torch.compile and Triton
            paths once, so their caches are warm when those rows are measured
  tests     the GPU subset (~90 s): every op x backend on CUDA tensors (fp32, tf32, bf16), graph
            replay = eager with fed batches, the Triton ops under torch.compile; one JSON line
            per test
  peaks     bf16 / tf32 matmul TFLOP/s and device-to-device copy TB/s of this GPU, for the
            roofline's "x floor" (once the warm-up children are done: nothing else on the GPU)
  bench     ``fastgan bench --gpu-check``: every variant at its seed batch (eager-reference,
            auto backend eager, every backend graphed), then torch.compile default and
            reduce-overhead there, then dcgan 128/512 in fp32 and bf16, then the rest of the
            quick matrix, each row a JSON line, until the budget ends
  overhead  host µs per op call per backend (bench/test_op_overhead.py), the last 40 s

and last a short table. Files in $FASTGAN_RESULTS (default bench/results/run): gpu-check.jsonl,
build.log, pytest.log, bench.log, <date>-<gpu>.json and .md. ``python -m
fastgan.benchmark.publish DIR`` turns them into bench/results/<date>-<gpu>.{json,md} and the
README's "Latest results".

Without a GPU (or with --tiny) the same steps run as a dry run in seconds: the installed build is
inspected instead of rebuilt, the test selection is collected instead of run, the peaks and the
bench run in tiny mode. CI runs it so (tests/test_gpu_check.py), so the script cannot rot.

Environment: FASTGAN_RESULTS, FASTGAN_GPU_CHECK_BUDGET_S (default 340: the 6 minutes less the
machine's start-up margin). Every step runs with the interpreter that runs this script.
"""
from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)   # fastgan's benchmark helpers, from this checkout (imported lazily)
T0 = time.monotonic()

# Seconds per step on a GPU, estimated from the 2026-11-23 H100 run (build ~30 s on 16 cores,
# 240 GPU tests in 6.6 s before its first failure, compile rows 36-41 s cold, Triton's first use
# of a shape 5-30 s, other rows ~1.2 s): caps, not targets.
CAPS = {"machine": 20, "build": 180, "tests": 90, "peaks": 30, "warm": 200, "summary": 12,
        "overhead": 40}

# The GPU test subset: every op on CUDA tensors for both fast backends (fp32/bf16/fp64 and
# Triton's tf32), graph replay vs eager, the custom-op path and torch.compile over Triton ops.
TEST_FILES = [
    "tests/ops",
    "tests/backends",
    "tests/test_graphs.py::test_graph_replays_match_eager_steps",
    "tests/test_graphs.py::test_in_graph_rng_advances_every_replay",
    "tests/test_graphs.py::test_warmup_leaves_no_trace",
    "tests/test_cudnn_tensor_cores.py",   # dcgan's convs on tensor cores (issue 21)
    "tests/test_inception_metrics.py",    # standard FID's features and distances on CUDA
]
TEST_MARKS = "(gpu or gpucheck) and not slow"
WARM_PATHS = ("compile-default", "compile-reduce-overhead", "fastgan-triton")
BENCH_RESERVE_S = 120   # seconds of the budget the warm-up leaves to the peaks and the bench


def elapsed() -> float:
    return time.monotonic() - T0


class Check:
    def __init__(self, results: str, tiny: bool, budget_s: float, python: str):
        self.results, self.tiny, self.budget, self.py = results, tiny, budget_s, python
        os.makedirs(results, exist_ok=True)
        self.jsonl = os.path.join(results, "gpu-check.jsonl")
        self.steps = []      # (step, status, seconds, detail) for the closing table
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", PIP_NO_INDEX="1", PIP_NO_INPUT="1",
                        PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_ROOT_USER_ACTION="ignore",
                        PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.tmp = tempfile.mkdtemp(prefix="fastgan-gpu-check-")

    def left(self) -> float:
        return self.budget - elapsed()

    def record(self, step: str, **kw) -> None:
        rec = {"step": step, "t_s": round(elapsed(), 2), **kw}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def done(self, step: str, status: str, t0: float, detail: str, **kw) -> None:
        wall = elapsed() - t0
        self.steps.append((step, status, wall, detail))
        self.record(step, status=status, wall_s=round(wall, 2), detail=detail, **kw)
        print(f"=== gpu-check [{elapsed():.0f} s] {step}: {status} ({wall:.1f} s) {detail}",
              flush=True)

    def run(self, cmd, log: str, timeout: float, env=None):
        """(exit code or 124 on timeout, last lines of the log)."""
        from fastgan.benchmark.worker import kill_group
        path = os.path.join(self.results, log)
        with open(path, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            p = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                 env=env or self.env, start_new_session=True)
            try:
                rc = p.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                kill_group(p)
                p.wait()
                rc = 124
        with open(path, errors="replace") as f:
            tail = f.read().splitlines()[-12:]
        return rc, tail


def has_gpu(py: str) -> bool:
    r = subprocess.run([py, "-c", "import torch; print(torch.cuda.is_available())"],
                       capture_output=True, text=True)
    return r.stdout.strip() == "True"


# ------------------------------------------------------------------------------------ steps

def step_machine(c: Check) -> None:
    t0 = elapsed()
    smi = None
    if shutil.which("nvidia-smi"):
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                            "power.limit,clocks.max.sm", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=CAPS["machine"])
        smi = r.stdout.strip() or r.stderr.strip()
    code = ("import json, sys, torch, triton; print(json.dumps({'python': sys.version.split()[0],"
            " 'torch': torch.__version__, 'triton': triton.__version__, 'cuda': torch.version.cuda,"
            " 'setuptools': __import__('setuptools').__version__,"
            " 'gpu': torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,"
            " 'capability': list(torch.cuda.get_device_capability(0)) if "
            "torch.cuda.is_available() else None, 'cpus': __import__('os').cpu_count()}))")
    r = subprocess.run([c.py, "-c", code], capture_output=True, text=True, env=c.env,
                       timeout=CAPS["machine"] * 3)
    try:
        c.info = info = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        c.info = info = {"error": (r.stderr.strip().splitlines() or ["no output"])[-1]}
    c.done("machine", "ok" if "error" not in info else "error", t0, f"{info.get('gpu') or 'no GPU'} | torch {info.get('torch')} | "
           f"triton {info.get('triton')}", nvidia_smi=smi, **info)


def step_build(c: Check) -> None:
    t0 = elapsed()
    if c.tiny:
        detail = "dry run: the installed build is inspected, not rebuilt"
        rc = 0
    else:
        env = dict(c.env, FASTGAN_REQUIRE_EXT="0", MAX_JOBS=str(os.cpu_count() or 8))
        rc, tail = c.run([c.py, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                          "-e", "."], "build.log", CAPS["build"], env=env)
        detail = f"pip exit {rc}" + (" (timed out)" if rc == 124 else "")
        # Pure-Python wheels the machine lacks (pytorch-fid), carried in .gpu-data/wheels/.
        if wheels := sorted(glob.glob(os.path.join(ROOT, ".gpu-data", "wheels", "*.whl"))):
            wrc, _ = c.run([c.py, "-m", "pip", "install", "--no-deps", *wheels], "wheels.log", 60)
            detail += f"; carried {[os.path.basename(w) for w in wheels]}: pip exit {wrc}"
    sos = sorted(glob.glob(os.path.join(ROOT, "fastgan", "_C*.so")))
    cap = (c.info or {}).get("capability")
    want = f"sm_{cap[0]}{cap[1]}" if cap else "sm_90"
    archs, ok = {}, False
    from fastgan.benchmark.cuobjdump import extension_archs, find_cuobjdump
    tool = find_cuobjdump(c.py)
    if not sos:
        detail += "; no fastgan/_C*.so: the cuda backend is unavailable"
    elif tool is None:
        detail += "; no cuobjdump found: arch check not done"
    else:
        archs = extension_archs(sos[-1], tool)
        ok = want in archs.get("elf", [])
        detail += (f"; {os.path.basename(sos[-1])}: ELF {','.join(archs['elf']) or 'none'}, "
                   f"PTX {','.join(archs['ptx']) or 'none'} "
                   f"({'has' if ok else 'LACKS'} {want} machine code)")
    # a dry run on a machine without nvcc has a CPU-only build: nothing to check, not a failure
    status = "ok" if rc == 0 and ok else ("skipped" if c.tiny else "error")
    c.done("build", status, t0, detail, pip_rc=rc, archs=archs,
           want_arch=want, extension=[os.path.basename(s) for s in sos])


def warm_specs(c: Check) -> list:
    """The seed-batch rows whose first run compiles (torch.compile, Triton JIT), as worker specs
    with one iteration: run once in children, their on-disk caches make the measured rows cheap.
    The heavy variants (mlp, dcgan) first. A dry run warms one eager row, to exercise the path."""
    code = ("import json; from fastgan.variants import VARIANTS as V, get_variant; from fastgan"
            ".benchmark.matrix import heavy_variants; h = heavy_variants(); print(json.dumps("
            "{v: get_variant(v).hyper.batch_size for v in h + [v for v in V if v not in h]}))")
    r = subprocess.run([c.py, "-c", code], capture_output=True, text=True, env=c.env, cwd=ROOT)
    try:
        seeds = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return []
    timing = {"warmup": 1, "reps": 1, "block_s": 0.0, "min_iters": 1, "max_iters": 1}
    base = {"precision": "fp32", "overrides": {}, "seed": 0, "profile": False,
            "timing": timing, "budget_s": 150}
    if c.tiny:
        return [dict(base, variant="mlp", batch=16, path="eager-reference", device="cpu",
                     threads=1)]
    return [dict(base, variant=v, batch=seeds[v], path=p, device="cuda")
            for p in WARM_PATHS for v in seeds]


def start_warm(c: Check, deadline_s: float, parallel: int = 3):
    """Run the warm-up specs in ``parallel`` children, each killed by ``deadline_s`` (elapsed
    seconds): the peaks and every measured row need the GPU to themselves after it."""
    from fastgan.benchmark.worker import run_isolated
    specs = warm_specs(c)
    state = {"ok": 0, "n": len(specs)}
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not specs:
                    return
                spec = specs.pop(0)
            left = min(spec["budget_s"], deadline_s - elapsed())
            if left < 5:
                continue
            row = run_isolated(spec, timeout_s=left, env=c.env)
            with lock:
                state["ok"] += int(row["status"] == "ok")
            c.record("warm", variant=spec["variant"], batch=spec["batch"], path=spec["path"],
                     status="ok" if row["status"] == "ok" else "failed",
                     wall_s=round(row.get("wall_s") or 0.0, 2))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(parallel)]
    for th in threads:
        th.start()
    return {"threads": threads, "state": state, "t0": elapsed(), "deadline_s": deadline_s}


def stop_warm(c: Check, w) -> None:
    """Wait for the warm-up children (none outlives the deadline)."""
    for th in w["threads"]:
        th.join(timeout=max(0.0, w["deadline_s"] - elapsed()) + 10)
    st = w["state"]
    status = "ok" if st["ok"] == st["n"] else "partial"
    c.done("warm", status, w["t0"], f"{st['ok']} of {st['n']} paths compiled ahead",
           ok=st["ok"], n=st["n"])


def step_tests(c: Check) -> None:
    t0 = elapsed()
    args = [c.py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", TEST_MARKS] + TEST_FILES
    if c.tiny:
        rc, tail = c.run(args + ["--collect-only"], "pytest.log", 120)
        m = next((re.search(r"(\d+)(?:/\d+)? tests? collected", ln) for ln in reversed(tail)
                  if re.search(r"tests? collected", ln)), None)
        n = int(m.group(1)) if m else 0
        c.done("tests", "ok" if rc == 0 and n > 0 else "error", t0,
               f"dry run: the GPU subset collects {n} tests", collected=n, rc=rc)
        return
    try:
        import importlib.util
        xdist = importlib.util.find_spec("xdist") is not None
    except Exception:
        xdist = False
    if xdist:   # Triton JIT is CPU-bound: spread the tests over the machine's cores
        args += ["-n", str(min(8, max(1, (os.cpu_count() or 2) // 2)))]
    env = dict(c.env, FASTGAN_TEST_JSONL=c.jsonl)
    rc, tail = c.run(args, "pytest.log", min(CAPS["tests"], max(30.0, c.left() - 150)), env=env)
    counts = {}
    with open(c.jsonl) as f:
        for line in f:
            r = json.loads(line)
            if r.get("step") == "tests" and "outcome" in r:
                counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    summary = next((ln for ln in reversed(tail) if re.search(r"\d+ (passed|failed)", ln)), "")
    status = "ok" if rc == 0 else ("timeout" if rc == 124 else "failed")
    c.done("tests", status, t0, summary.strip("= ") or f"pytest exit {rc}", rc=rc,
           counts=counts)


def step_peaks(c: Check) -> None:
    t0 = elapsed()
    path = os.path.join(c.tmp, "peaks.json")
    dev = "cpu" if c.tiny else "cuda"
    code = ("import json, sys; from fastgan.benchmark.peaks import measure_peaks; "
            f"json.dump(measure_peaks({dev!r}, tiny={c.tiny}), open(sys.argv[1], 'w'))")
    r = subprocess.run([c.py, "-c", code, path], capture_output=True, text=True, env=c.env,
                       cwd=ROOT, timeout=CAPS["peaks"] * 2)
    if r.returncode == 0 and os.path.isfile(path):
        with open(path) as f:
            peaks = json.load(f)
        c.peaks_file = path
        c.done("peaks", "ok", t0, peaks["source"], peaks=peaks)
    else:
        c.peaks_file = None
        err = (r.stderr.strip().splitlines() or ["no output"])[-1]
        c.done("peaks", "error", t0, f"not measured ({err}); the roofline uses built-in figures")


def step_bench(c: Check) -> None:
    t0 = elapsed()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    slug = subprocess.run([c.py, "-c", "from fastgan.benchmark import gpu_slug; "
                           "print(gpu_slug())"], capture_output=True, text=True,
                          env=c.env, cwd=ROOT).stdout.strip() or "gpu"
    c.json_path = os.path.join(c.results, f"{date}-{slug}.json")
    c.md_path = os.path.join(c.results, f"{date}-{slug}.md")
    budget = max(20.0, c.left() - CAPS["summary"] - CAPS["overhead"])
    env = dict(c.env, FASTGAN_BENCH_BUDGET_S=f"{budget:.0f}")
    if getattr(c, "peaks_file", None):
        env["FASTGAN_PEAKS_FILE"] = c.peaks_file
    rc, tail = c.run([c.py, "-m", "fastgan", "bench", "--gpu-check", "--json", c.json_path,
                      "--md", c.md_path, "--jsonl", c.jsonl], "bench.log", budget + 25,
                     env=env)
    n = {"ok": 0, "skipped": 0, "error": 0}
    with open(c.jsonl) as f:
        for line in f:
            r = json.loads(line)
            if r.get("step") == "bench":
                n[r.get("status", "error")] = n.get(r.get("status", "error"), 0) + 1
    c.done("bench", "ok" if rc == 0 else ("timeout" if rc == 124 else "failed"), t0,
           f"{n['ok']} rows measured, {n['error']} errors, {n['skipped']} skipped for the "
           f"budget (budget {budget:.0f} s)", rc=rc, rows=n)


def step_overhead(c: Check) -> None:
    """Host µs per op call per backend (bench/test_op_overhead.py's tiny loop), a line each."""
    t0 = elapsed()   # each row goes to gpu-check.jsonl as it is measured: a timeout keeps them
    args = [c.py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_op_overhead.py"]
    rc, _ = c.run(args, "overhead.log", max(10.0, min(CAPS["overhead"], c.left() - 5)),
                  env=dict(c.env, FASTGAN_BENCH_TINY="1", FASTGAN_OVERHEAD_JSONL=c.jsonl))
    with open(c.jsonl) as f:
        rows = [r for r in map(json.loads, f)
                if r.get("step") == "overhead" and "host_us_per_call" in r]
    status = "ok" if rc == 0 else ("timeout" if rc == 124 else "failed")
    c.done("overhead", status, t0, f"{len(rows)} rows of host us per op call", rc=rc)


def summary(c: Check) -> int:
    print("\n=== gpu-check summary "
          f"({'dry run, ' if c.tiny else ''}{elapsed():.0f} s of a {c.budget:.0f} s budget)")
    print("| step | status | s | detail |\n|---|---|--:|---|")
    for step, status, wall, detail in c.steps:
        print(f"| {step} | {status} | {wall:.0f} | {detail[:160]} |")
    doc = None
    if getattr(c, "json_path", None) and os.path.isfile(c.json_path):
        with open(c.json_path) as f:
            doc = json.load(f)
    if doc:
        from fastgan.benchmark.publish import short_table
        print()
        print("\n".join(short_table(doc)))
    print(f"\nresults: {c.results}")
    c.record("summary", wall_s=round(elapsed(), 1),
             steps={s: st for s, st, _, _ in c.steps})
    failed = [s for s, st, _, _ in c.steps if st in ("error", "failed")]
    return 1 if failed or not doc else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="the dry run (default when no GPU is visible)")
    ap.add_argument("--results", default=os.environ.get("FASTGAN_RESULTS")
                    or os.path.join(ROOT, "bench", "results", "run"))
    ap.add_argument("--budget-s", type=float,
                    default=float(os.environ.get("FASTGAN_GPU_CHECK_BUDGET_S", 340)))
    a = ap.parse_args(argv)
    py = sys.executable
    tiny = a.tiny or not has_gpu(py)
    c = Check(os.path.abspath(a.results), tiny, a.budget_s, py)
    c.info = None
    c.record("start", tiny=tiny, budget_s=a.budget_s, root=ROOT,
             utc=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    step_machine(c)
    # compiles on the CPU while the extension builds; ends with time left for peaks and bench
    warm = start_warm(c, deadline_s=min(CAPS["warm"], c.budget - BENCH_RESERVE_S))
    step_build(c)
    step_tests(c)
    stop_warm(c, warm)
    step_peaks(c)
    step_bench(c)
    step_overhead(c)
    return summary(c)


if __name__ == "__main__":
    sys.exit(main())
