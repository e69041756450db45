#!/usr/bin/env python3
"""How many CPU threads should training use? mlp's iteration timed with each thread setting, on
an idle machine, with busy competitors, and with a competitor that arrives mid-run.

    python bench/threads_under_load.py [--variant mlp] [--backend reference] [--load 0,1]

Fixed settings (the benchmark worker, ``fastgan-<backend>`` path, seed batch, each in a fresh
process since OpenMP reads its settings once): 1 thread; all cores with OpenMP's default
(spinning) wait; all cores with OMP_WAIT_POLICY=PASSIVE; all cores with a shorter spin
(GOMP_SPINCOUNT). Then fastgan's own choice, as a user gets it: ``fastgan train`` on the demo
digits with no thread option (fastgan.threads: the cores free at start, then the
ThreadGovernor following the load), it/s the median of its logged rows. A competitor is one
Python busy loop per unit of --load. Prints one markdown table; README "CPU threads" quotes it
with the machine named. Not a test: timings are never asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BURN = [sys.executable, "-c", "while True: pass"]


def train_it_s(variant: str, backend: str, steps: int, arrive_s=None) -> str:
    """``fastgan train`` with the default threads; a competitor starts after ``arrive_s``."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fastgan", "train", "--variant", variant, "--dataset", "demo",
               "--backend", backend, "--device", "cpu", "--steps", str(steps), "--log-every", "50",
               "--sample-every", "0", "--checkpoint-every", "0", "--out", out, "--overwrite"]
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        burner, t_arrive = None, None
        if arrive_s is not None:
            time.sleep(arrive_s)
            burner, t_arrive = subprocess.Popen(BURN), time.time()
        try:
            err = p.communicate(timeout=900)[1]
        finally:
            if burner is not None:
                burner.kill()
                burner.wait()
        if p.returncode != 0:
            return f"failed: {err.strip().splitlines()[-1] if err.strip() else p.returncode}"
        rows = [json.loads(x) for x in open(os.path.join(out, "metrics.jsonl"))]
        start = [x for x in err.splitlines() if "CPU thread" in x]
        changes = [x.split("CPU threads ")[1].split(" (")[0] for x in err.splitlines()
                   if "CPU threads" in x and "->" in x]
        if t_arrive is not None:        # after the competitor came and the governor looked
            rows = [r for r in rows if r["time"] > t_arrive + 4.0]
        its = statistics.median(r["it_s"] for r in rows[2:] or rows)
        threads = start[0].split(", ")[1].split(" CPU")[0] if start else "?"
        return f"{its:.1f} (started with {threads}; changes: {', '.join(changes) or 'none'})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="mlp")
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--load", default="0,1", help="numbers of busy competitors, comma-separated")
    ap.add_argument("--block-s", type=float, default=0.5)
    ap.add_argument("--train-steps", type=int, default=800)
    a = ap.parse_args()
    from fastgan.benchmark.worker import run_isolated
    from fastgan.variants import get_variant
    cores = len(os.sched_getaffinity(0))
    batch = get_variant(a.variant).hyper.batch_size
    os.environ["PYTHONPATH"] = ROOT   # the children: each setting alone decides the threads
    for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        os.environ.pop(k, None)
    n = str(cores)
    settings = [("1 thread", {"OMP_NUM_THREADS": "1"}),
                (f"{cores} threads, OpenMP default wait", {"OMP_NUM_THREADS": n}),
                (f"{cores} threads, OMP_WAIT_POLICY=PASSIVE",
                 {"OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"}),
                (f"{cores} threads, GOMP_SPINCOUNT=10000",
                 {"OMP_NUM_THREADS": n, "GOMP_SPINCOUNT": "10000"})]
    spec = {"variant": a.variant, "batch": batch, "precision": "fp32", "overrides": {},
            "path": f"fastgan-{a.backend}", "device": "cpu", "seed": 0, "profile": False,
            "budget_s": 120, "timing": {"warmup": 3, "reps": 7, "block_s": a.block_s,
                                        "min_iters": 1, "max_iters": 100000}}
    rows = []

    def say(load, name, value):
        rows.append((load, name, value))
        print(f"load {load}: {name}: {value}", file=sys.stderr, flush=True)

    for n_load in [int(x) for x in a.load.split(",")]:
        burners = [subprocess.Popen(BURN) for _ in range(n_load)]
        try:
            time.sleep(1.0 if n_load else 0.0)
            for name, env in settings:
                r = run_isolated(spec, timeout_s=600, env=env)
                its = r.get("it_s")
                say(n_load, name, f"{its:.1f} ±{r.get('spread_pct') or 0:.0f}%" if its
                    else r.get("reason"))
            say(n_load, "fastgan train, default threads",
                train_it_s(a.variant, a.backend, a.train_steps))
        finally:
            for b in burners:
                b.kill()
                b.wait()
    say("0 -> 1 after 5 s", "fastgan train, default threads",
        train_it_s(a.variant, a.backend, a.train_steps * 2, arrive_s=5.0))
    print(f"\n{a.variant} batch {batch}, backend {a.backend}, {cores} cores "
          f"({os.uname().machine}); competitors: Python busy loops\n")
    print("| busy competitors | threads | it/s |\n|--:|---|--:|")
    for n_load, name, value in rows:
        print(f"| {n_load} | {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
