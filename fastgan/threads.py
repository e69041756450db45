"""How many CPU threads a run's tensor work uses, and why (the start-up line says both).

OpenMP's threads spin while they wait for each other. On an idle machine a spinning thread per
core is the fastest setting, but when another process takes a core, a thread per core makes
every parallel region wait for the core that is not free, and training collapses
(bench/threads_under_load.py measures each setting; README "CPU threads"). So by default a run starts with one thread per core
that is free *now* (a short sample of /proc/stat, not the load average, which lags a minute),
and while it trains a ``ThreadGovernor`` re-measures every few seconds how many cores other
processes use and follows them with ``torch.set_num_threads`` (host work only, at most every
``interval_s``; no sync in the iteration). ``--threads N`` or ``OMP_NUM_THREADS`` fix the count
instead.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional, Tuple

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _system_busy_s() -> Optional[float]:
    """CPU-seconds all cores have spent busy since boot (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    v = [int(x) for x in fields[1:9]]
    return (sum(v) - v[3] - v[4]) / _TICK


def _self_busy_s() -> float:
    t = os.times()
    return t.user + t.system


class LoadMeter:
    """Cores used by *other* processes over the interval since the last reading."""

    def __init__(self, clock: Optional[Callable[[], float]] = None):
        self.clock = clock or time.monotonic
        self._last = self._read()

    def _read(self):
        sys_s = _system_busy_s()
        return None if sys_s is None else (self.clock(), sys_s, _self_busy_s())

    def others(self) -> Optional[float]:
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        wall = now[0] - last[0]
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall)


def free_cores(others: float, cores: int) -> int:
    # A competitor using most of a core counts as a whole one: sharing a core with it is what
    # makes a spinning thread wait.
    return max(1, min(cores, cores - int(others + 0.6)))


def choose_threads(requested: Optional[int] = None,
                   sample_s: float = 0.2) -> Tuple[int, str, bool]:
    """(threads, the reason in a few words, whether the run may adapt the count)."""
    if requested is not None:
        return int(requested), "--threads", False
    env = (os.environ.get("OMP_NUM_THREADS") or "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "OMP_NUM_THREADS", False
    cores = usable_cores()
    meter = LoadMeter()
    time.sleep(sample_s)
    others = meter.others()
    if others is None:
        try:
            others = os.getloadavg()[0]
        except (AttributeError, OSError):
            return cores, f"{cores} cores", False
    n = free_cores(others, cores)
    busy = cores - n
    return n, (f"{cores} cores, {busy} busy now; follows the load" if busy else
               f"{cores} cores free; follows the load"), True


class ThreadGovernor:
    """Follows the free cores while a run trains (``poll`` once per iteration: it only reads a
    clock until ``interval_s`` has passed). ``set_threads`` is torch.set_num_threads."""

    def __init__(self, threads: int, set_threads: Callable[[int], None],
                 cores: Optional[int] = None, interval_s: float = 3.0,
                 clock: Optional[Callable[[], float]] = None,
                 meter: Optional[LoadMeter] = None):
        clock = clock or time.monotonic
        self.threads, self.set_threads = threads, set_threads
        self.cores = cores or usable_cores()
        self.interval_s, self.clock = interval_s, clock
        self.meter = meter or LoadMeter(clock)
        self._next = clock() + interval_s
        self.changes = 0

    def poll(self) -> Optional[str]:
        """A one-line note when the count changed, else None."""
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        others = self.meter.others()
        if others is None:
            return None
        n = free_cores(others, self.cores)
        if n == self.threads:
            return None
        old, self.threads = self.threads, n
        self.set_threads(n)
        self.changes += 1
        return (f"fastgan: CPU threads {old} -> {n} (other processes use {others:.1f} of "
                f"{self.cores} cores; --threads N fixes the count)")
