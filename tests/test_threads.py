"""CPU threads: one per core free now by default, following the load while training (a loaded
machine does not collapse), --threads or
OMP_NUM_THREADS decide instead, the start-up line says which and why, and the caller's torch
setting comes back after the run."""
from __future__ import annotations

import os

import pytest
import torch

from fastgan import threads
from fastgan.cli import main


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def machine(monkeypatch):
    """A machine with ``cores`` cores on which other processes keep ``others`` cores busy (and
    this process ``mine``): /proc/stat and os.times advance with the fake clock."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    clock = FakeClock()
    load = {"others": 0.0, "mine": 0.0}
    acc = {"t": 0.0, "sys": 0.0, "self": 0.0}

    def advance():
        dt, acc["t"] = clock.t - acc["t"], clock.t
        acc["sys"] += dt * (load["others"] + load["mine"])
        acc["self"] += dt * load["mine"]

    def sys_busy():
        advance()
        return acc["sys"]

    def self_busy():
        advance()
        return acc["self"]

    monkeypatch.setattr(threads, "_system_busy_s", sys_busy)
    monkeypatch.setattr(threads, "_self_busy_s", self_busy)
    monkeypatch.setattr(threads.time, "monotonic", clock)
    monkeypatch.setattr(threads.time, "sleep", lambda s: setattr(clock, "t", clock.t + s))

    def set_(cores, others, mine=0.0):
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cores)))
        load.update(others=others, mine=mine)
    set_.clock = clock
    return set_


@pytest.mark.parametrize("cores,others,want", [(2, 0.1, 2), (2, 0.6, 1), (2, 1.4, 1),
                                               (2, 5.0, 1), (16, 3.2, 13), (1, 0.0, 1)])
def test_one_thread_per_core_free_now(machine, cores, others, want):
    machine(cores, others)
    n, why, adapt = threads.choose_threads()
    assert n == want and f"{cores} cores" in why and adapt


def test_without_proc_stat_the_load_average_decides(machine, monkeypatch):
    machine(4, 0.0)
    monkeypatch.setattr(threads, "_system_busy_s", lambda: None)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (2.1, 2.0, 2.0))
    assert threads.choose_threads()[0] == 2


def test_explicit_choices_win_and_do_not_adapt(machine, monkeypatch):
    machine(8, 7.0)
    assert threads.choose_threads(3) == (3, "--threads", False)
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert threads.choose_threads() == (5, "OMP_NUM_THREADS", False)
    assert threads.choose_threads(2) == (2, "--threads", False)


def test_governor_follows_other_processes(machine):
    """Load arrives while training with a thread per core, then leaves: the count follows,
    and between polls nothing is read."""
    machine(2, 0.0, mine=2.0)
    calls = []
    g = threads.ThreadGovernor(2, calls.append, interval_s=3.0)
    clock = machine.clock
    clock.t += 1.0
    assert g.poll() is None and calls == []               # not yet time to look
    clock.t += 2.5
    assert g.poll() is None and calls == []               # idle: stays at 2
    machine(2, 0.7, mine=1.3)                             # a competitor takes a core's share
    clock.t += 3.0
    note = g.poll()
    assert calls == [1] and "2 -> 1" in note and "--threads" in note
    machine(2, 1.0, mine=1.0)
    clock.t += 3.0
    assert g.poll() is None and calls == [1]              # still busy
    machine(2, 0.05, mine=1.0)                            # it left
    clock.t += 3.0
    assert "1 -> 2" in g.poll() and calls == [1, 2]


def test_start_up_line_names_the_threads_and_the_setting_is_restored(make_idx_dataset, tmp_path,
                                                                     capsys):
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    rc = main(["train", "--data-dir", make_idx_dataset(64), "--out", str(tmp_path / "r"),
               "--device", "cpu", "--backend", "reference", "--steps", "4", "--log-every", "2",
               "--batch-size", "8", "--threads", str(want)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert f"on cpu, {want} CPU thread(s) (--threads) with backend reference" in err
    assert "batch 8 of 1x28x28" in err          # the image size is said too
    assert torch.get_num_threads() == before
