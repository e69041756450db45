"""`fastgan train --tensorboard`: the event file, read back with tensorboard's own reader, holds
each log step's values as metrics.jsonl records them, and the sample grid; without the package,
one line naming `pip install tensorboard`, exit 2, nothing written."""
from __future__ import annotations

import glob
import json
import math
import sys

import pytest

from fastgan.cli import main


@pytest.fixture
def data_dir(make_idx_dataset):
    return make_idx_dataset(64, seed=4)


def args(data_dir, out, *extra):
    return ["train", "--data-dir", data_dir, "--out", str(out), "--device", "cpu",
            "--backend", "reference", "--quiet", "--batch-size", "8", "--n-samples", "4",
            "--tensorboard", *extra]


def test_event_file_matches_metrics_jsonl(data_dir, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    rc = main(args(data_dir, out, "--steps", "4", "--log-every", "2", "--sample-every", "2",
                   "--eval-every", "4", "--eval-n", "32"))
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4]
    files = glob.glob(str(out / "tensorboard" / "events.out.tfevents.*"))
    assert len(files) == 1
    ea = EventAccumulator(files[0], size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    tags = ea.Tags()
    for key, tag in (("d_loss", "loss/D"), ("g_loss", "loss/G"), ("d_real", "D/real (D(x))"),
                     ("d_fake", "D/fake (D(G(z)))"), ("it_s", "speed/it_s"),
                     ("img_s", "speed/images_s")):
        assert tag in tags["scalars"], (tag, tags)
        ev = ea.Scalars(tag)
        assert [e.step for e in ev] == [2, 4], tag
        for e, r in zip(ev, rows):      # stored as float32
            assert math.isclose(e.value, r[key], rel_tol=1e-6, abs_tol=1e-30), (tag, e, r)
    assert not any(t.startswith("gpu/") for t in tags["scalars"])     # a CPU run
    (m,) = [json.loads(ln) for ln in (out / "eval.jsonl").read_text().splitlines()]
    evals = {k: v for k, v in m.items() if k not in ("step", "seconds")
             and isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert evals and sorted(f"eval/{k}" for k in evals) == sorted(
        t for t in tags["scalars"] if t.startswith("eval/"))
    for k, v in evals.items():
        (e,) = ea.Scalars(f"eval/{k}")
        assert e.step == 4 and math.isclose(e.value, v, rel_tol=1e-6, abs_tol=1e-30), k
    assert "samples" in tags["images"]
    im = ea.Images("samples")
    assert [i.step for i in im] == [2, 4]
    from PIL import Image
    assert (im[-1].width, im[-1].height) == Image.open(out / "samples" / "latest.png").size


def test_resume_appends(data_dir, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "run"
    assert main(args(data_dir, out, "--steps", "2", "--log-every", "1")) == 0
    # continues with --tensorboard resumed from the checkpoint (not typed again)
    rc = main(["train", "--resume", str(out), "--steps", "3", "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    ea = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("loss/D")] == [1, 2, 3]


def test_missing_package_one_line_exit_2(data_dir, tmp_path, capsys, monkeypatch):
    # torch.utils.tensorboard imports tensorboard: both as if not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    out = tmp_path / "run"
    rc = main(args(data_dir, out, "--steps", "2"))
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("fastgan: error: ") and "Traceback" not in err
    assert "pip install tensorboard" in lines[0]
    assert not out.exists()


def test_torchrun_rank_0_writes_alone(data_dir, tmp_path, request):
    """Two gloo ranks: one event file (rank 0's), its values those of metrics.jsonl; rank 0
    alone evaluates (FID-MNIST, and standard FID where pytorch-fid is installed)."""
    pytest.importorskip("tensorboard")
    try:
        weights = ["--inception-weights", str(request.getfixturevalue("inception_weights"))]
    except pytest.skip.Exception:
        weights = []
    import os
    import socket
    import subprocess

    import torch.distributed as dist
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK")}
    env.update(PYTHONPATH=repo + os.pathsep + env.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                        "--master-addr", "127.0.0.1", "--master-port", str(port), "-m",
                        "fastgan", "train", *args(data_dir, out, "--steps", "2",
                                                  "--log-every", "1", "--eval-every", "2",
                                                  "--eval-n", "10", *weights)[1:]],
                       env=env, capture_output=True, text=True, timeout=180, cwd=repo)
    assert p.returncode == 0, p.stderr[-4000:]
    files = glob.glob(str(out / "tensorboard" / "events.out.tfevents.*"))
    assert len(files) == 1, files
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    ea = EventAccumulator(files[0], size_guidance={"scalars": 0})
    ea.Reload()
    ev = ea.Scalars("loss/D")
    assert [e.step for e in ev] == [r["step"] for r in rows] == [1, 2]
    assert all(math.isclose(e.value, r["d_loss"], rel_tol=1e-6) for e, r in zip(ev, rows))
    (m,) = [json.loads(ln) for ln in (out / "eval.jsonl").read_text().splitlines()]
    keys = ["fid"] + (["inception_fid"] if weights else [])
    for k in keys:
        (e,) = ea.Scalars(f"eval/{k}")
        assert e.step == m["step"] == 2 and math.isclose(e.value, m[k], rel_tol=1e-6), k
