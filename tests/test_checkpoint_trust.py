"""Checkpoints and run files you can trust (issue 16): nothing a user hands fastgan runs code,
damaged checkpoints are refused in one line and never overwritten, every stop saves (SIGTERM
too), --resume keeps the run's settings unless given again, a full disk is one line, and the
metrics history survives a kill during a resume."""
from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from fastgan.cli import main
from fastgan.engine import checkpoint as ckpt
from fastgan.engine import trainer
from fastgan.engine.loop import metrics as loop_metrics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def data_dir(make_idx_dataset):
    return make_idx_dataset(128, seed=1)


def run_cli(args, capsys):
    rc = main(args)
    out, err = capsys.readouterr()
    return rc, out, err


def train_args(data_dir, out, *extra):
    return ["train", "--data-dir", data_dir, "--out", str(out), "--device", "cpu",
            "--backend", "reference", "--quiet", "--batch-size", "8", "--variant", "mlp",
            *extra]


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("fastgan: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def run_dir(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli(train_args(data_dir, out, "--steps", "4", "--log-every", "2"), capsys)
    assert rc == 0, err
    return out


def commands(path, tmp_path, data_dir):
    return {
        "sample": ["sample", "--checkpoint", str(path), "--device", "cpu", "--n", "4",
                   "--out", str(tmp_path / "g.png")],
        "eval": ["eval", "--checkpoint", str(path), "--device", "cpu", "--n", "10",
                 "--data-dir", data_dir],
        "resume": train_args(data_dir, tmp_path / "resumed", "--resume", str(path),
                             "--steps", "6"),
    }


# ---- 1. a crafted checkpoint never runs code ------------------------------------------------

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("kind", ["inside-a-checkpoint", "plain-pickle"])
@pytest.mark.parametrize("cmd", ["sample", "eval", "resume"])
def test_crafted_checkpoint_runs_nothing(run_dir, data_dir, tmp_path, capsys, kind, cmd):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil"
    evil.mkdir()
    if kind == "inside-a-checkpoint":   # a real checkpoint, with a payload in its config
        state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
        state["config"]["note"] = Payload(marker)
        torch.save(state, evil / "checkpoint.pt")
    else:                               # not a checkpoint at all: a bare pickle
        (evil / "checkpoint.pt").write_bytes(pickle.dumps(Payload(marker)))
    rc, _, err = run_cli(commands(evil, tmp_path, data_dir)[cmd], capsys)
    assert not marker.exists(), "the payload ran"
    assert rc == 2, err
    assert "not a fastgan checkpoint" in one_error_line(err)


def test_classifier_weights_and_fid_cache_run_nothing(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": {}, "meta": Payload(marker)}, evil)
    rc, _, err = run_cli(["classifier", "info", "--weights", str(evil)], capsys)
    assert not marker.exists() and rc == 2
    assert "cannot read the classifier weights" in one_error_line(err)
    # a cached FID statistics file replaced by a payload: ignored (recomputed), never run
    from fastgan.quality import metrics
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path / "cache"))
    imgs = torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8)
    metrics.real_stats(imgs, "cpu")
    (cached,) = (tmp_path / "cache" / "fid-stats").glob("*.pt")
    torch.save({"mu": Payload(marker)}, cached)
    st = metrics.real_stats(imgs, "cpu")
    assert not marker.exists() and st["n"] == 20


# ---- 4 and 9. damage is found, said in one short line, never overwritten ---------------------

def flip_tensor_bytes(path):
    """Flip bytes in the middle of the largest tensor's data (not in any zip header)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(open(path, "rb").read())
    name_len, extra_len = (int.from_bytes(raw[info.header_offset + o:info.header_offset + o + 2],
                                          "little") for o in (26, 28))
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    for i in range(at, at + 8):
        raw[i] ^= 0xFF
    open(path, "wb").write(bytes(raw))


@pytest.mark.parametrize("cmd", ["sample", "eval", "resume"])
def test_flipped_bytes_are_refused_and_never_overwritten(run_dir, data_dir, tmp_path, capsys,
                                                         cmd):
    path = run_dir / "checkpoint.pt"
    flip_tensor_bytes(path)
    damaged = path.read_bytes()
    args = commands(run_dir, tmp_path, data_dir)[cmd]
    if cmd == "resume":       # into its own folder: the damaged file must survive
        args = train_args(data_dir, run_dir, "--resume", str(run_dir), "--steps", "6")
    rc, _, err = run_cli(args, capsys)
    assert rc == 2, err
    line = one_error_line(err)
    assert "damaged" in line and "CRC" in line
    assert path.read_bytes() == damaged


def test_read_errors_are_short_with_detail_behind_verbose(run_dir, tmp_path, capsys):
    path = run_dir / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:5000])      # truncated
    args = ["sample", "--checkpoint", str(run_dir), "--device", "cpu",
            "--out", str(tmp_path / "g.png")]
    rc, _, err = run_cli(args, capsys)
    line = one_error_line(err)
    assert rc == 2 and "truncated or corrupt" in line and "start a new run" in line
    assert len(line) < 300 and "PytorchStreamReader" not in line and "zip" in line
    rc, _, err = run_cli(args + ["--verbose"], capsys)
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 2 and lines[1].startswith("fastgan: detail: ")


# ---- 3. SIGTERM saves like SIGINT; a second signal exits at once; ^C at start-up -------------

def test_sigterm_saves_a_checkpoint_and_exits_143(data_dir, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "fastgan"] + train_args(
        data_dir, out, "--steps", "1000000", "--log-every", "10"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").stat().st_size == 0:
        assert p.poll() is None, p.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err and "stopped by SIGTERM; checkpoint at step" in err
    step = ckpt.load_checkpoint(str(out))["step"]
    assert step > 0 and f"step {step} saved" in err


def test_second_signal_exits_at_once(tmp_path, monkeypatch, capfd):
    class FakeRun:
        out, main, last_saved = str(tmp_path), True, 7
    mine = tmp_path / os.path.basename(ckpt.temp_name(str(tmp_path / "checkpoint.pt")))
    mine.write_bytes(b"half a checkpoint")         # a save in progress when the signal lands
    exits = []
    monkeypatch.setattr(trainer.StopSignals, "_exit", staticmethod(exits.append))
    stop = trainer.StopSignals(False, FakeRun())
    stop(signal.SIGTERM, None)
    assert stop.first == "SIGTERM" and not exits   # the first: stop at the next boundary
    stop(signal.SIGINT, None)
    assert exits == [128 + signal.SIGINT]          # the second: at once
    assert not mine.exists()
    assert "stopped at once by a second SIGINT; the last checkpoint (step 7)" in \
        capfd.readouterr().err


def test_ctrl_c_during_start_up_is_one_line(data_dir, tmp_path, capsys, monkeypatch):
    import fastgan.data

    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(fastgan.data, "load_dataset", interrupted)
    try:
        rc, _, err = run_cli(train_args(data_dir, tmp_path / "run", "--steps", "4"), capsys)
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C during start-up escaped as a KeyboardInterrupt (a traceback)")
    assert rc == 130
    assert err.strip().splitlines() == ["fastgan: interrupted while starting; nothing was trained"]


# ---- 2 and 5. --resume keeps the run's settings; given again, they take effect ---------------

def saves(monkeypatch):
    steps = []
    orig = ckpt.save_checkpoint

    def record(run_dir, engine, step, config):
        steps.append(step)
        return orig(run_dir, engine, step, config)
    monkeypatch.setattr(ckpt, "save_checkpoint", record)
    return steps


def rows(out, name="metrics.jsonl"):
    return [json.loads(x) for x in open(out / name)]


def test_resume_reuses_every_setting(data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    rc, _, err = run_cli(train_args(data_dir, out, "--steps", "4", "--seed", "3",
                                    "--log-every", "2", "--sample-every", "3",
                                    "--checkpoint-every", "3", "--n-samples", "16",
                                    "--lr-d", "0.001"), capsys)
    assert rc == 0, err
    before = json.load(open(out / "config.json"))
    saved = saves(monkeypatch)
    rc, _, err = run_cli(train_args(data_dir, out, "--resume", str(out), "--steps", "8"),
                         capsys)
    assert rc == 0, err
    assert "resuming" not in err              # nothing changed, nothing to say
    cfg = json.load(open(out / "config.json"))
    for k in ("seed", "log_every", "sample_every", "checkpoint_every", "n_samples", "lr_d"):
        assert cfg[k] == before[k], k
    assert [r["step"] for r in rows(out)] == [2, 4, 6, 8]
    assert saved == [6, 8]
    assert sorted(os.listdir(out / "samples")) == ["latest.png", "step_0000003.png",
                                                   "step_0000004.png", "step_0000006.png",
                                                   "step_0000008.png"]
    st = ckpt.load_checkpoint(str(out))
    assert st["config"]["seed"] == 3
    assert float(st["opt_d"]["param_groups"][0]["lr"]) == pytest.approx(0.001)


def _check_lr(out, which, value):
    st = ckpt.load_checkpoint(str(out))
    assert float(st[f"opt_{which}"]["param_groups"][0]["lr"]) == pytest.approx(value)
    assert st["hyper"][f"lr_{which}"] == pytest.approx(value)


# setting, new value, check(out, saved_steps) that it took effect
CHANGEABLE = {
    "lr-d": ("0.005", lambda out, s: _check_lr(out, "d", 0.005)),
    "lr-g": ("0.007", lambda out, s: _check_lr(out, "g", 0.007)),
    "d-steps": ("2", lambda out, s: ckpt.load_checkpoint(str(out))["hyper"]["d_steps"] == 2),
    "label-smoothing": ("0.25", lambda out, s: ckpt.load_checkpoint(str(out))["hyper"][
        "label_smoothing"] == 0.25),
    "log-every": ("3", lambda out, s: [r["step"] for r in rows(out)] == [2, 4, 6, 9, 10]),
    "checkpoint-every": ("3", lambda out, s: s == [6, 9, 10]),
    "sample-every": ("3", lambda out, s: {"step_0000006.png", "step_0000009.png"}
                     <= set(os.listdir(out / "samples"))),
    "n-samples": ("4", lambda out, s: __import__("PIL.Image").Image.open(
        out / "samples" / "latest.png").size == (2 * 30 + 2, 2 * 30 + 2)),
    "precision": ("bf16", lambda out, s: True),
    "eval-every": ("3", lambda out, s: [r["step"] for r in rows(out, "eval.jsonl")] == [6, 9, 10]),
    "backend": ("triton", lambda out, s: json.load(open(out / "config.json"))[
        "resolved_backend"] == "triton"),
}


@pytest.mark.parametrize("opt", list(CHANGEABLE))
def test_a_setting_given_again_takes_effect_and_is_recorded(data_dir, tmp_path, capsys,
                                                            monkeypatch, opt):
    if opt == "backend":
        pytest.importorskip("triton")
    out = tmp_path / "run"
    rc, _, err = run_cli(train_args(data_dir, out, "--steps", "4", "--log-every", "2",
                                    "--checkpoint-every", "2"), capsys)
    assert rc == 0, err
    value, took_effect = CHANGEABLE[opt]
    saved = saves(monkeypatch)
    args = train_args(data_dir, out, "--resume", str(out), "--steps", "10", f"--{opt}", value)
    if opt == "eval-every":    # 10 samples per evaluation, not 10,000; the cache in tmp
        args += ["--eval-n", "10"]
        monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path / "cache"))
    args.remove("--quiet")
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    assert took_effect(out, saved) is not False
    key = opt.replace("-", "_")
    recorded = json.load(open(out / "config.json"))[key]
    assert str(recorded) == value or float(recorded) == float(value)
    assert ckpt.load_checkpoint(str(out))["config"][key] == recorded
    notice = [ln for ln in err.splitlines() if ln.startswith("fastgan: resuming")]
    assert len(notice) == 1 and f"--{opt} " in notice[0] and f"-> {value}" in notice[0], err


def test_eval_n_and_data_dir_given_again(data_dir, tmp_path, capsys, monkeypatch):
    import shutil
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "run"
    rc, _, err = run_cli(train_args(data_dir, out, "--steps", "4", "--eval-every", "4",
                                    "--eval-n", "10"), capsys)
    assert rc == 0, err
    moved = shutil.copytree(data_dir, tmp_path / "moved")
    args = train_args(str(moved), out, "--resume", str(out), "--steps", "10", "--eval-n", "20")
    args.remove("--quiet")
    rc, _, err = run_cli(args, capsys)
    assert rc == 0, err
    assert [(r["step"], r["n"]) for r in rows(out, "eval.jsonl")] == [(4, 10), (8, 20), (10, 20)]
    cfg = json.load(open(out / "config.json"))
    assert cfg["eval_n"] == 20 and cfg["data_dir"] == str(moved) and cfg["eval_every"] == 4
    assert "--data-dir " in err and "--eval-n 10 -> 20" in err


@pytest.mark.parametrize("opt,value", [("seed", "5"), ("batch-size", "16"),
                                       ("max-images", "64"), ("dataset", "fashion-mnist")])
def test_a_setting_that_cannot_change_is_refused(run_dir, data_dir, capsys, opt, value):
    before = (run_dir / "checkpoint.pt").read_bytes()
    args = train_args(data_dir, run_dir, "--resume", str(run_dir), "--steps", "8")
    if opt == "batch-size":
        args[args.index("--batch-size") + 1] = value
    else:
        args += [f"--{opt}", value]
    rc, _, err = run_cli(args, capsys)
    assert rc == 2
    line = one_error_line(err)
    assert f"--{opt} {value}: " in line and "cannot change on resume" in line
    assert (run_dir / "checkpoint.pt").read_bytes() == before


def test_a_resume_with_nothing_to_train_writes_nothing(run_dir, data_dir, capsys):
    names = ("config.json", "metrics.jsonl", "loss_curve.svg", "checkpoint.pt")
    for n in names:
        os.utime(run_dir / n, ns=(10**18, 10**18))
    before = {n: ((run_dir / n).read_bytes(), (run_dir / n).stat().st_mtime_ns) for n in names}
    rc, _, err = run_cli(train_args(data_dir, run_dir, "--resume", str(run_dir), "--steps", "4",
                                    "--log-every", "7"), capsys)
    assert rc == 0 and "nothing to train" in err
    assert {n: ((run_dir / n).read_bytes(), (run_dir / n).stat().st_mtime_ns)
            for n in names} == before


def test_each_cadence_is_independent_and_exact(data_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    saved = saves(monkeypatch)
    rc, _, err = run_cli(train_args(data_dir, out, "--steps", "10", "--log-every", "5",
                                    "--checkpoint-every", "3", "--sample-every", "4"), capsys)
    assert rc == 0, err
    assert saved == [3, 6, 9, 10]
    assert [r["step"] for r in rows(out)] == [5, 10]
    assert sorted(os.listdir(out / "samples")) == ["latest.png", "step_0000004.png",
                                                   "step_0000008.png", "step_0000010.png"]


# ---- 6. a full or read-only disk: one line, the old checkpoint intact, no temp file ---------

class FullDisk:
    """A file whose writes fail with ENOSPC after ``room`` bytes."""

    def __init__(self, f, room):
        self.f, self.room = f, room

    def write(self, b):
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)

    def __getattr__(self, k):
        return getattr(self.f, k)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.f.close()


@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_disk_is_one_line(run_dir, data_dir, capsys, monkeypatch, fault):
    before = (run_dir / "checkpoint.pt").read_bytes()
    import builtins

    def faulty_open(path, mode="r", *a, **k):
        if ".tmp-" in str(path) and "w" in mode and "checkpoint" in str(path):
            if fault == errno.EROFS:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return FullDisk(builtins.open(path, mode, *a, **k), 3000)
        return builtins.open(path, mode, *a, **k)
    monkeypatch.setattr(ckpt, "open", faulty_open, raising=False)
    rc, _, err = run_cli(train_args(data_dir, run_dir, "--resume", str(run_dir),
                                    "--steps", "8", "--checkpoint-every", "2"), capsys)
    assert rc == 2, err
    line = one_error_line(err)
    assert f"in {run_dir}" in line and "previous checkpoint.pt is intact" in line
    if fault == errno.ENOSPC:
        assert "the disk is full (it needs about" in line and "MB free" in line
    else:
        assert "Read-only file system" in line
    assert (run_dir / "checkpoint.pt").read_bytes() == before
    assert not [f for f in os.listdir(run_dir) if ".tmp-" in f]


def test_stale_temp_files_of_dead_processes_are_removed(run_dir, data_dir, capsys):
    import socket
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()
    names = {".checkpoint.pt.tmp-%d" % dead.pid: False,
             f".checkpoint.pt.tmp-{socket.gethostname()}-{dead.pid}": False,
             f".checkpoint.pt.tmp-{socket.gethostname()}-{live}": True,
             f".checkpoint.pt.tmp-otherhost-{dead.pid}": True}
    for n in names:
        (run_dir / n).write_bytes(b"x" * 1000)
    rc, _, err = run_cli(train_args(data_dir, run_dir, "--resume", str(run_dir), "--steps", "5"),
                         capsys)
    assert rc == 0, err
    assert {n: (run_dir / n).exists() for n in names} == names


# ---- 7. the metrics history survives a kill while a resume cuts it --------------------------

class Killed(BaseException):
    pass


def test_metrics_history_survives_a_kill_during_the_cut(data_dir, tmp_path, capsys,
                                                        monkeypatch):
    out = tmp_path / "run"
    rc, _, err = run_cli(train_args(data_dir, out, "--steps", "4", "--log-every", "2"), capsys)
    assert rc == 0, err
    at4 = (out / "checkpoint.pt").read_bytes()
    rc, _, err = run_cli(train_args(data_dir, out, "--resume", str(out), "--steps", "10",
                                    "--log-every", "2"), capsys)
    assert rc == 0, err
    (out / "checkpoint.pt").write_bytes(at4)     # the run's last checkpoint is at step 4 again
    history = (out / "metrics.jsonl").read_bytes()
    assert len(history.splitlines()) == 5
    import builtins

    class Dying:
        def __init__(self, f):
            self.f = f

        def write(self, s):
            self.f.write(s[:len(s) // 2])
            raise Killed

        def writelines(self, lines):
            self.write("".join(lines))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def dying_open(path, mode="r", *a, **k):
        f = builtins.open(path, mode, *a, **k)
        return Dying(f) if "metrics.jsonl" in str(path) and "w" in mode else f
    monkeypatch.setattr(loop_metrics, "open", dying_open, raising=False)
    with pytest.raises(Killed):
        main(train_args(data_dir, out, "--resume", str(out), "--steps", "10"))
    assert (out / "metrics.jsonl").read_bytes() == history
    monkeypatch.undo()
    rc, _, err = run_cli(train_args(data_dir, out, "--resume", str(out), "--steps", "6"), capsys)
    assert rc == 0, err
    assert [r["step"] for r in rows(out)] == [2, 4, 6]


# ---- 8. a survivor's message names the checkpoint really on disk ----------------------------

def test_failure_message_reads_the_checkpoint_back(run_dir, tmp_path):
    from types import SimpleNamespace
    r = trainer.Run.__new__(trainer.Run)
    r.dist = SimpleNamespace(rank=1, world=2)
    r.out, r.step, r.last_saved = str(run_dir), 12, 12   # rank 0 died while saving step 12
    msg = r._failure_message("another rank failed")
    assert "the last checkpoint (step 4) is in" in msg
    (tmp_path / "empty").mkdir()
    r.out = str(tmp_path / "empty")
    assert "there is no readable checkpoint in" in r._failure_message("another rank failed")
    r.out = str(tmp_path / "on-another-node")
    assert "is not visible from this rank" in r._failure_message("another rank failed")


def test_full_disk_on_another_run_file_is_one_line(run_dir, data_dir, capsys, monkeypatch):
    import builtins

    def full_open(path, mode="r", *a, **k):
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return builtins.open(path, mode, *a, **k)
    monkeypatch.setattr(loop_metrics, "open", full_open, raising=False)
    rc, _, err = run_cli(train_args(data_dir, run_dir, "--resume", str(run_dir),
                                    "--steps", "8"), capsys)
    assert rc == 2, err
    line = one_error_line(err)
    assert f"cannot write metrics.jsonl in {run_dir} (the disk is full: the next checkpoint " \
           "needs about" in line
    assert "the last checkpoint (step 4) is intact" in line
