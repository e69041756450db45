"""How many CPU threads a run's tensor work uses, and why (the start-up line says both).

OpenMP's threads spin while they wait for each other: on a machine whose cores are busy with
other processes, a thread per core makes every parallel region wait for a core that is not free
(mlp fell from ~40 to ~1 it/s on 2 loaded cores; bench/threads_under_load.py measures it). So
the default is one thread per core that is free now: the cores this process may use less the
runnable processes of the last minute's load average. ``--threads N`` or ``OMP_NUM_THREADS``
decide instead. The CLI also asks OpenMP to sleep rather than spin while it waits
(``OMP_WAIT_POLICY=PASSIVE``, unless set), which must happen before torch is imported.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def choose_threads(requested: Optional[int] = None) -> Tuple[int, str]:
    """(threads, the reason in a few words)."""
    if requested is not None:
        return int(requested), "--threads"
    env = (os.environ.get("OMP_NUM_THREADS") or "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS"
    cores = usable_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores, f"{cores} cores"
    busy = int(load + 0.5)
    n = max(1, min(cores, cores - busy))
    return n, f"{cores} cores, {busy} busy (load {load:.1f})"


def prefer_passive_wait() -> None:
    """OpenMP threads sleep while waiting instead of spinning (only effective before torch, and
    so libgomp, is loaded; the user's own setting wins)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
