"""The command line: every kind of bad input gives one clear line, exit code 2 and nothing
written; sample/doctor work; Ctrl-C saves a checkpoint and exits cleanly."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from fastgan.cli import main

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
            "--backend", "reference", "--quiet", "--log-every", "5", "--batch-size", "8",
            *extra]


def one_error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("fastgan: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("extra,needle", [
    (["--variant", "wgan"], "unknown variant 'wgan'; choose one of: mlp, bigan, gancls, dcgan"),
    (["--variant", "mlp", "--image-size", "64"], "use --image-size 28 --channels 1 or the dcgan variant"),
    (["--variant", "dcgan", "--image-size", "28"], "4·2^k or 6·2^k"),
    (["--variant", "dcgan", "--image-size", "30"], "use --image-size 32"),   # the nearest
    (["--variant", "dcgan", "--image-size", "90"], "use --image-size 96"),
    (["--variant", "mlp", "--ngf", "32"], "has no option 'ngf'"),
    (["--device", "cuda"], "no CUDA GPU is available"),
    (["--cuda-graphs"], "--cuda-graphs needs a CUDA GPU"),
    (["--steps", "0"], "at least one step"),
    (["--batch-size", "-4"], "--batch-size must be at least 1, not -4"),
    # mlp's D sees half a batch: 3 gives passes of 1 sample, which BatchNorm cannot normalize
    (["--variant", "mlp", "--batch-size", "3"], "use --batch-size 4 or more"),
    (["--variant", "dcgan", "--image-size", "32", "--batch-size", "1"],
     "use --batch-size 2 or more"),
    (["--d-steps", "0"], "--d-steps must be at least 1"),
    (["--lr-d", "-1"], "--lr-d must be a positive number, not -1.0"),
    (["--lr-g", "nan"], "--lr-g must be a positive number, not nan"),
    (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
    (["--graph-unroll", "0"], "--graph-unroll must be at least 1"),
    (["--log-every", "0"], "--log-every must be at least 1"),
    (["--sample-every", "-2"], "--sample-every must be >= 0"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 0"),
    (["--n-samples", "0"], "--n-samples must be at least 1"),
    (["--variant", "mlp", "--n-samples", "1"], "use --n-samples 2 or more"),
    (["--dist-timeout", "-1"], "--dist-timeout must be a positive number"),
    (["--threads", "0"], "--threads must be at least 1 (CPU threads), not 0"),
])
def test_bad_input_one_line_exit_2_nothing_written(data_dir, tmp_path, capsys, extra, needle):
    if "cuda" in " ".join(extra) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = tmp_path / "run"
    args = train_args(data_dir, out)
    if "--device" in extra:
        args = [a for a in args if a not in ("--device", "cpu")]
    rc, _, err = run_cli(args + extra, capsys)
    assert rc == 2
    assert needle in one_error_line(err)
    assert not out.exists()


@pytest.mark.parametrize("name,words", [
    ("FASTGAN_ADAM_KERNEL", "auto, torch"), ("FASTGAN_CPU_KERNELS", "auto, always, never"),
    ("FASTGAN_TRITON_DOT_PRECISION", "tf32, ieee, tf32x3"),
    ("FASTGAN_TRITON_LAUNCH", "jit, cached")])
def test_bad_env_setting_is_one_line(name, words, data_dir, tmp_path, capsys, monkeypatch):
    """A typo in a FASTGAN_* word setting stops every command before any work (not a default
    taken silently, not the triton backend reported missing and another one picked)."""
    monkeypatch.setenv(name, "Bogus")
    out = tmp_path / "run"
    for args in (train_args(data_dir, out), ["doctor"]):
        rc, _, err = run_cli(args, capsys)
        assert rc == 2
        assert f"{name}='Bogus': set it to one of {words} or unset it" in one_error_line(err)
    assert not out.exists()
    monkeypatch.setenv(name, words.split(", ")[-1].upper() + " ")   # case and spaces: fine
    from fastgan.env_choices import env_problem
    assert env_problem() is None


def test_cuda_graphs_on_cpu_is_refused_before_the_data_loads(tmp_path, capsys):
    """The device's problem first: a missing data set would otherwise be fixed in vain."""
    rc, _, err = run_cli(train_args(str(tmp_path / "nowhere"), tmp_path / "run",
                                    "--cuda-graphs"), capsys)
    assert rc == 2 and "--cuda-graphs needs a CUDA GPU" in one_error_line(err)


def test_missing_dataset(tmp_path, capsys):
    rc, _, err = run_cli(train_args(str(tmp_path / "nowhere"), tmp_path / "run"), capsys)
    assert rc == 2
    line = one_error_line(err)
    assert "mnist" in line and ("--data-dir" in line or "FASTGAN_DATA" in line)
    assert not (tmp_path / "run").exists()


def test_corrupt_dataset(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    (d / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    rc, _, err = run_cli(train_args(str(d), tmp_path / "run"), capsys)
    assert rc == 2
    assert "train-images-idx3-ubyte.gz" in one_error_line(err)


def test_train_sample_and_resume_checks(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli(train_args(data_dir, out, "--variant", "gancls", "--steps", "10",
                                    "--sample-every", "5"), capsys)
    assert rc == 0, err
    for f in ("checkpoint.pt", "metrics.jsonl", "config.json", "loss_curve.svg",
              "samples/latest.png", "samples/step_0000005.png", "samples/step_0000010.png"):
        assert (out / f).exists(), f
    from PIL import Image
    im = Image.open(out / "samples" / "latest.png")
    # one row per class: 10 rows of 6 digits, 28 px + 2 px padding
    assert im.size == (6 * 30 + 2, 10 * 30 + 2)

    grid = tmp_path / "g.png"
    rc, _, err = run_cli(["sample", "--checkpoint", str(out), "--n", "16", "--out", str(grid),
                          "--label", "3", "--device", "cpu"], capsys)
    assert rc == 0, err
    assert Image.open(grid).size == (4 * 30 + 2, 4 * 30 + 2)

    rc, _, err = run_cli(["sample", "--checkpoint", str(out), "--label", "12", "--out",
                          str(grid), "--device", "cpu"], capsys)
    assert rc == 2 and "class 0..9" in one_error_line(err)

    # a checkpoint of another variant
    rc, _, err = run_cli(train_args(data_dir, tmp_path / "r2", "--resume", str(out),
                                    "--variant", "mlp", "--steps", "20"), capsys)
    assert rc == 2 and "is of variant 'gancls', not 'mlp'" in one_error_line(err)

    # a missing checkpoint
    rc, _, err = run_cli(train_args(data_dir, tmp_path / "r3", "--resume",
                                    str(tmp_path / "nope")), capsys)
    assert rc == 2 and "no checkpoint" in one_error_line(err)

    # a corrupt checkpoint
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "checkpoint.pt").write_bytes(b"not a checkpoint")
    rc, _, err = run_cli(["sample", "--checkpoint", str(bad), "--out", str(grid)], capsys)
    assert rc == 2 and "corrupt" in one_error_line(err)


def test_existing_run_is_never_overwritten_by_mistake(data_dir, tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = run_cli(train_args(data_dir, out, "--variant", "bigan", "--steps", "2"), capsys)
    assert rc == 0, err
    before = (out / "checkpoint.pt").read_bytes()
    # the same --out again, without --resume: refused, the run left as it was
    rc, _, err = run_cli(train_args(data_dir, out, "--variant", "bigan", "--steps", "3"), capsys)
    assert rc == 2
    line = one_error_line(err)
    assert "already holds a run's checkpoint" in line and f"--resume {out}" in line
    assert "--overwrite" in line
    assert (out / "checkpoint.pt").read_bytes() == before
    # another run resumed into it: refused too
    other = tmp_path / "other"
    assert run_cli(train_args(data_dir, other, "--variant", "bigan", "--steps", "2",
                              "--seed", "5"), capsys)[0] == 0
    rc, _, err = run_cli(train_args(data_dir, out, "--resume", str(other), "--steps", "4"),
                         capsys)
    assert rc == 2 and "already holds" in one_error_line(err)
    assert (out / "checkpoint.pt").read_bytes() == before
    # continuing the run itself, through its directory or its checkpoint file: allowed
    rc, _, err = run_cli(train_args(data_dir, out, "--resume", str(out), "--steps", "3"),
                         capsys)
    assert rc == 0, err
    rc, _, err = run_cli(train_args(data_dir, out, "--resume", str(out / "checkpoint.pt"),
                                    "--steps", "4"), capsys)
    assert rc == 0, err
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 4
    # --steps is the run's total: asking for fewer than done trains nothing, and says so
    rc, _, err = run_cli(train_args(data_dir, out, "--resume", str(out), "--steps", "3"),
                         capsys)
    assert rc == 0 and "nothing to train" in err and "--steps N above 4" in err
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 4
    # --overwrite starts over
    rc, _, err = run_cli(train_args(data_dir, out, "--variant", "mlp", "--steps", "2",
                                    "--overwrite"), capsys)
    assert rc == 0, err
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    assert state["step"] == 2 and state["variant"] == "mlp"


def test_unwritable_out_fails_before_training(data_dir, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc, _, err = run_cli(train_args(data_dir, blocker / "run", "--steps", "2"), capsys)
    assert rc == 2
    assert "cannot write the run directory" in one_error_line(err)
    rc, _, err = run_cli(train_args(data_dir, tmp_path / "run", "--variant", "mlp",
                                    "--steps", "2"), capsys)
    assert rc == 0, err
    rc, _, err = run_cli(["sample", "--checkpoint", str(tmp_path / "run"), "--device", "cpu",
                          "--out", str(blocker / "g.png")], capsys)
    assert rc == 2 and "cannot write" in one_error_line(err)
    # one sample cannot be normalized with its own batch statistics; the running ones can
    rc, _, err = run_cli(["sample", "--checkpoint", str(tmp_path / "run"), "--device", "cpu",
                          "--n", "1", "--out", str(tmp_path / "g.png")], capsys)
    assert rc == 2 and "--bn running" in one_error_line(err)
    rc, _, err = run_cli(["sample", "--checkpoint", str(tmp_path / "run"), "--device", "cpu",
                          "--n", "1", "--bn", "running", "--out", str(tmp_path / "g.png")],
                         capsys)
    assert rc == 0, err


def test_resume_with_other_architecture(tmp_path, capsys, make_idx_dataset):
    d = make_idx_dataset(32, seed=2)
    out = tmp_path / "run"
    common = ["--variant", "dcgan", "--image-size", "32", "--ndf", "8", "--steps", "2"]
    rc, _, err = run_cli(train_args(d, out, *common, "--ngf", "8"), capsys)
    assert rc == 0, err
    rc, _, err = run_cli(train_args(d, out, "--resume", str(out), *common, "--ngf", "16",
                                    "--steps", "4"), capsys)
    assert rc == 2
    assert "networks differ" in one_error_line(err)


def test_doctor(capsys):
    rc, out, _ = run_cli(["doctor"], capsys)
    assert rc == 0
    for needle in ("torch", "triton", "GPU", "nvcc", "backend cuda", "train on cpu",
                   "CPU threads"):
        assert needle in out
    from fastgan import ops
    assert (f"train on cpu  eager (CUDA graphs need a GPU), backend auto by variant: mlp "
            f"{ops.auto_backend('cpu', variant='mlp')}, bigan "
            f"{ops.auto_backend('cpu', variant='bigan')}, ") in out
    assert ops.auto_choice("cpu", False, "mlp")[1] in out


def test_doctor_says_which_quality_metrics_apply(monkeypatch):
    import importlib.util

    from fastgan.cli.doctor import _quality_line
    monkeypatch.delenv("FASTGAN_INCEPTION_WEIGHTS", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "pytorch_fid" else real(n, *a))
    assert "pip install 'fastgan[fid]'" in _quality_line()
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object())
    assert "--inception-weights pt_inception-2015-12-05" in _quality_line()
    monkeypatch.setenv("FASTGAN_INCEPTION_WEIGHTS", "/w.pth")
    assert "$FASTGAN_INCEPTION_WEIGHTS=/w.pth" in _quality_line()


def test_doctor_says_the_path_and_backend_on_cuda(monkeypatch):
    """On a GPU (faked: the lines are the trainer's own decision and auto's measured picks):
    the graph by default with the graph-mode auto backend, and the eager alternative's."""
    from fastgan import backends, ops
    from fastgan.cli.doctor import path_lines
    from fastgan.variants import VARIANTS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA Unmeasured GPU")
    lines = path_lines("cuda")
    picks = lambda graph: ", ".join(  # noqa: E731
        f"{v} {ops.auto_backend('cuda', graph=graph, variant=v)}" for v in VARIANTS)
    assert lines[0].startswith(f"train on cuda CUDA graph (the default on a CUDA device), "
                               f"backend auto by variant: {picks(True)} (measured on ")
    assert lines[1].strip().startswith("eager (--no-cuda-graphs, or where the graph cannot "
                                       f"apply): backend auto by variant: {picks(False)} (")
    # a GPU never measured: the newest GPU measured, said so
    assert "not this device" in lines[0]


def test_train_help_names_both_graph_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--cuda-graphs, --no-cuda-graphs" in out
    assert "the default on a CUDA device" in out and "--no-cuda-graphs trains eagerly" in out
    assert "per device and path, graph or eager" in out


def test_no_cuda_graphs_is_accepted_and_on_cpu_the_default_is_silent(data_dir, tmp_path,
                                                                    capsys):
    for extra, name in (([], "default"), (["--no-cuda-graphs"], "off")):
        args = [a for a in train_args(data_dir, tmp_path / name, "--steps", "2",
                                      *extra) if a != "--quiet"]
        rc, _, err = run_cli(args, capsys)
        assert rc == 0, err
        assert "CUDA graph" not in err and "eagerly" not in err, err


def test_doctor_says_what_auto_runs_on_cpu(capsys, monkeypatch):
    from fastgan import ops
    if ops.auto_backend("cpu") != "cuda":
        pytest.skip("the C++ extension is not built")
    monkeypatch.delenv("FASTGAN_CPU_KERNELS", raising=False)
    out = run_cli(["doctor"], capsys)[1]
    assert "the C++ kernels from linear_act >= 4,000,000" in out and "bn_act >= 100,000" in out
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "never")
    assert "the reference code for every op" in run_cli(["doctor"], capsys)[1]


def test_ctrl_c_saves_checkpoint_and_exits_cleanly(data_dir, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-m", "fastgan"] + train_args(data_dir, out,
                         "--steps", "1000000", "--log-every", "10"),
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or (out / "metrics.jsonl").stat().st_size == 0:
        assert p.poll() is None, p.communicate()
        assert time.time() < deadline
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted; checkpoint" in err
    from fastgan.engine import checkpoint as ckpt
    st = ckpt.load_checkpoint(str(out))
    assert st["step"] > 0


@pytest.mark.parametrize("args,needle", [
    (["train", "--backend", "nonsense"],
     "argument --backend: invalid choice: 'nonsense' (choose from 'auto'"),
    (["train", "--steps", "x"], "argument --steps: invalid int value: 'x'; see 'fastgan train -h'"),
    (["nope"], "argument COMMAND: invalid choice: 'nope'"),
    (["sample"], "the following arguments are required: --checkpoint; see 'fastgan sample -h'"),
    (["data", "download", "foo"], "argument name: invalid choice: 'foo'"),
])
def test_argparse_errors_are_one_line(args, needle, capsys):
    """argparse's own errors (a bad choice or value, an unknown option) as one line naming the
    command's help, not its usage block."""
    with pytest.raises(SystemExit) as e:   # argparse's exit, with its code
        main(args)
    assert e.value.code == 2
    assert needle in one_error_line(capsys.readouterr().err)


def test_unknown_option_names_the_commands_help(capsys):
    rc, _, err = run_cli(["train", "--bogus", "3"], capsys)
    assert rc == 2
    assert "unrecognized arguments: --bogus 3; see 'fastgan train -h'" in one_error_line(err)
    rc, _, err = run_cli(["--bogus", "train"], capsys)      # before the command: the top level
    assert rc == 2 and "see 'fastgan -h'" in one_error_line(err)


def test_train_resolves_auto_for_its_variant(data_dir, tmp_path, capsys, monkeypatch):
    """The run's variant reaches auto (its measured order), in _place as in the eager fallback."""
    import fastgan.ops as O
    seen, real = [], O.resolve_backend

    def spy(name, dev, graph=True, variant=None):
        seen.append((name, variant))
        return real(name, dev, graph=graph, variant=variant)
    monkeypatch.setattr(O, "resolve_backend", spy)
    args = [a if a != "reference" else "auto" for a in train_args(data_dir, tmp_path / "r")]
    rc, _, err = run_cli(args + ["--variant", "bigan", "--steps", "1"], capsys)
    assert rc == 0, err
    assert ("auto", "bigan") in seen
