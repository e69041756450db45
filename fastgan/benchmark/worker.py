"""Run one benchmark path in a child process: ``python -m fastgan.benchmark.worker`` reads the
path's spec (JSON) on stdin and prints its result row as one line starting with ``RESULT_TAG``.

The matrix runs torch.compile paths this way: a compile that outlives its budget (max-autotune
can take minutes) is killed with its whole process group, and a crash in a compiler takes only
the child down. A path that broke the CUDA context in the parent process also moves the rest of
the matrix here.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Optional

RESULT_TAG = "FASTGAN_BENCH_RESULT "


def run_isolated(spec: dict, timeout_s: float, env: Optional[dict] = None) -> dict:
    """The result row of ``spec`` run in a child; a timeout or crash gives a row that says so."""
    from .measure import base_row
    spec = dict(spec, isolated=True)
    t0 = time.perf_counter()
    e = dict(os.environ)
    e.update(env or {})
    e.setdefault("PYTHONUNBUFFERED", "1")
    proc = subprocess.Popen([sys.executable, "-m", "fastgan.benchmark.worker"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=e, start_new_session=True)
    try:
        out, err = proc.communicate(json.dumps(spec), timeout=max(1.0, timeout_s))
    except subprocess.TimeoutExpired:
        kill_group(proc)
        out, err = proc.communicate()
        row = base_row(spec)
        row.update(status="skipped", wall_s=time.perf_counter() - t0,
                   reason=f"budget: killed after {timeout_s:.0f} s (still compiling or running)")
        return row
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_TAG):
            row = json.loads(line[len(RESULT_TAG):])
            row["wall_s"] = time.perf_counter() - t0
            return row
    row = base_row(spec)
    tail = (err or "").strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
    row.update(status="error", wall_s=time.perf_counter() - t0,
               reason=f"worker died (exit {proc.returncode}): {tail[0][:240]}")
    return row


def kill_group(proc: subprocess.Popen) -> None:
    """Kill the child and what it started (inductor's compile workers): its own process group,
    created by start_new_session."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def main() -> int:
    spec = json.loads(sys.stdin.read())
    from .measure import measure_path
    row = measure_path(spec)
    sys.stdout.write(RESULT_TAG + json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
