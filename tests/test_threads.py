"""CPU threads: one per free core by default (a loaded machine does not collapse), --threads or
OMP_NUM_THREADS decide instead, the start-up line says which and why, and the caller's torch
setting comes back after the run."""
from __future__ import annotations

import os

import pytest
import torch

from fastgan import threads
from fastgan.cli import main


@pytest.fixture
def machine(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def set_(cores, load):
        monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(cores)))
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
    return set_


@pytest.mark.parametrize("cores,load,want", [(2, 0.1, 2), (2, 0.6, 1), (2, 1.4, 1), (2, 5.0, 1),
                                             (16, 3.2, 13), (1, 0.0, 1)])
def test_one_thread_per_free_core(machine, cores, load, want):
    machine(cores, load)
    n, why = threads.choose_threads()
    assert n == want and f"{cores} cores" in why


def test_explicit_choices_win(machine, monkeypatch):
    machine(8, 0.0)
    assert threads.choose_threads(3) == (3, "--threads")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert threads.choose_threads() == (5, "OMP_NUM_THREADS")
    assert threads.choose_threads(2) == (2, "--threads")


def test_passive_wait_only_when_unset(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.prefer_passive_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.prefer_passive_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


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
