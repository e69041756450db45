#!/usr/bin/env python3
"""How many CPU threads should training use? mlp's iteration (``fastgan-<backend>`` path, seed
batch) timed with each thread setting, on an idle machine and with busy competitors, each run in
a fresh process (OpenMP reads its settings once, at start).

    python bench/threads_under_load.py [--variant mlp] [--backend reference] [--load 0,1,2]

Settings: 1 thread; all cores with OpenMP's default (spinning) wait policy; all cores with
OMP_WAIT_POLICY=PASSIVE; and fastgan's own choice (``fastgan.threads``). A competitor is
one Python busy loop per unit of --load. Prints one markdown table (it/s, median of the blocks);
README "CPU threads" quotes it with the machine named. Not a test: timings are never asserted.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="mlp")
    ap.add_argument("--backend", default="reference")
    ap.add_argument("--load", default="0,1", help="numbers of busy competitors, comma-separated")
    ap.add_argument("--block-s", type=float, default=0.5)
    a = ap.parse_args()
    from fastgan.benchmark.worker import run_isolated
    from fastgan.threads import choose_threads
    from fastgan.variants import get_variant
    cores = len(os.sched_getaffinity(0))
    batch = get_variant(a.variant).hyper.batch_size
    os.environ["PYTHONPATH"] = ROOT   # the children: each setting alone decides the threads
    for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY"):
        os.environ.pop(k, None)
    settings = [("1 thread", {"OMP_NUM_THREADS": "1"}),
                (f"{cores} threads, OpenMP default wait", {"OMP_NUM_THREADS": str(cores)}),
                (f"{cores} threads, OMP_WAIT_POLICY=PASSIVE",
                 {"OMP_NUM_THREADS": str(cores), "OMP_WAIT_POLICY": "PASSIVE"}),
                ("fastgan's choice", None)]
    spec = {"variant": a.variant, "batch": batch, "precision": "fp32", "overrides": {},
            "path": f"fastgan-{a.backend}", "device": "cpu", "seed": 0, "profile": False,
            "budget_s": 120, "timing": {"warmup": 3, "reps": 7, "block_s": a.block_s,
                                        "min_iters": 1, "max_iters": 100000}}
    rows = []
    for n_load in [int(x) for x in a.load.split(",")]:
        burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                   for _ in range(n_load)]
        try:
            time.sleep(2.0 if n_load else 0.0)     # let the load average see them
            for name, extra in settings:
                env = {}
                if extra is None:
                    n, why = choose_threads(None)
                    env.update({"OMP_NUM_THREADS": str(n), "OMP_WAIT_POLICY": "PASSIVE"})
                    name = f"fastgan's choice: {n} ({why})"
                else:
                    env.update(extra)
                r = run_isolated(spec, timeout_s=600, env=env)
                rows.append((n_load, name, r.get("it_s"), r.get("spread_pct"), r.get("reason")))
                print(f"load {n_load}: {name}: {r.get('it_s') or r.get('reason')}",
                      file=sys.stderr, flush=True)
        finally:
            for b in burners:
                b.kill()
                b.wait()
    print(f"\n{a.variant} batch {batch}, fastgan-{a.backend}, {cores} cores "
          f"({os.uname().machine}); competitors: Python busy loops\n")
    print("| busy competitors | threads | it/s | spread |\n|--:|---|--:|--:|")
    for n_load, name, its, spread, why in rows:
        print(f"| {n_load} | {name} | {f'{its:.1f}' if its else why} | "
              f"{f'{spread:.0f}%' if spread else '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
