"""Data-parallel training under torchrun (gloo on CPU, two processes).

* The gradients two ranks at B/2 all-reduce equal one process's at B (BN-free, synchronized BN,
  mean and summed losses), and per-rank BN is the only thing that makes them differ.
* ``torchrun ... fastgan train`` at 2 x B/2 ends with the parameters of ``fastgan train`` at B.
* A checkpoint resumes on another number of ranks and continues the same run.
* A rank killed mid-run ends the whole job quickly, with one clear line and an intact checkpoint.

Run as a script under torchrun (``--worker``), this file is also the gradient test's worker.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_LAUNCH_TIMEOUT = 180

if __name__ != "__main__":
    import torch.distributed as dist
    pytestmark = pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed with gloo is not available in this PyTorch build")


# ---- helpers ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def torchrun_cmd(args, nproc=2):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args]


def torchrun_train(args, nproc=2, timeout=ONE_LAUNCH_TIMEOUT):
    p = subprocess.run(torchrun_cmd(["-m", "fastgan", "train", *args], nproc), env=_env(),
                       capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


def one_process_train(args):
    from fastgan.cli import main
    assert "WORLD_SIZE" not in os.environ
    assert main(["train", *args]) == 0


def load_params(run_dir):
    from fastgan.engine import checkpoint as ckpt
    st = ckpt.load_checkpoint(str(run_dir))
    return st["step"], {f"{r}.{k}": v.float() for r, sd in st["nets"].items()
                        for k, v in sd.items()}


def worst_rel(a, b):
    """max over tensors of ||a - b|| / ||b|| (and the tensor's name). A tensor whose norm is
    below 1e-12 in both is zero: gancls' deconvolution bias feeds a BatchNorm, so its exact
    gradient is 0 and what is left is rounding (~1e-17), different in each."""
    out = (0.0, "")
    for k in b:
        assert torch.isfinite(a[k]).all(), k
        if b[k].norm() < 1e-12 and a[k].norm() < 1e-12:
            continue
        d = ((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)).item()
        if d > out[0]:
            out = (d, k)
    return out


def fake_data(v, n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, c = v.hyper.image_size, v.hyper.channels
    return (torch.randint(0, 256, (n, c, s, s), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g))


# Gradient cases: (name, variant, global batch, sync_bn)
GRAD_CASES = [("bigan", "bigan", 32, False), ("mlp-sync", "mlp", 32, True),
              ("gancls-sync", "gancls", 10, True), ("mlp-per-rank", "mlp", 32, False)]


def grads_of_one_step(variant_name, batch, rank=0, world=1, sync_bn=False, d=None):
    """Build the variant from seed 0, run one Engine.step at global batch ``batch`` (this rank's
    slice of it), return the gradients of every parameter and the logged statistics.

    In float64: the split changes the order of the sums (per-rank partials, then the
    all-reduce), so in fp32 two correct runs differ by rounding that depends even on the thread
    count (gancls-sync reached 2.4e-5 with one thread); in float64 they agree to ~1e-13, and a
    wrong split or a missed term still shows at 1e-3 or more."""
    from fastgan.engine import Engine, EngineOptions
    from fastgan.engine import distributed as ddp
    from fastgan import ops
    from fastgan.nn.sync_bn import convert_sync_bn
    from fastgan.variants import get_variant
    v = get_variant(variant_name, batch_size=batch)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        nets = v.build({})
        imgs, labels = fake_data(v)
        eng = Engine(v, nets, imgs, labels, EngineOptions(batch_size=batch, rank=rank,
                                                          world=world), torch.device("cpu"))
        if d is not None:
            if sync_bn:
                assert convert_sync_bn(nets.values()) > 0
            ddp.attach(eng, d, v)
        with ops.use_backend("reference"):
            eng.step()
    finally:
        torch.set_default_dtype(previous)
    grads = {f"{r}.{k}": p.grad.detach().clone() for r, net in nets.items()
             for k, p in net.named_parameters() if p.grad is not None}
    return grads, eng.read_stats()


def _worker(out_path):
    """Under torchrun: every gradient case on this rank, saved for the test to compare."""
    from fastgan.engine import distributed as ddp
    d = ddp.setup("cpu", 60)
    assert d is not None and d.world == 2
    res = {}
    for name, variant, batch, sync in GRAD_CASES:
        res[name] = grads_of_one_step(variant, batch, d.rank, d.world, sync, d)
    torch.save(res, f"{out_path}.rank{d.rank}")
    ddp.shutdown()


# ---- gradients: 2 x B/2 == 1 x B ------------------------------------------------------------

@pytest.fixture(scope="module")
def two_rank_grads(tmp_path_factory):
    out = tmp_path_factory.mktemp("grads") / "g.pt"
    p = subprocess.run(torchrun_cmd([os.path.abspath(__file__), "--worker", str(out)]),
                       env=_env(), capture_output=True, text=True, timeout=ONE_LAUNCH_TIMEOUT,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr[-4000:]
    return [torch.load(f"{out}.rank{r}", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("name,variant,batch,sync", [c for c in GRAD_CASES
                                                      if c[0] != "mlp-per-rank"])
def test_two_ranks_half_batch_grads_equal_one_process(two_rank_grads, name, variant, batch,
                                                      sync):
    """One iteration's D and G gradients after the all-reduce, and the logged losses, equal
    those of one process at the global batch: mean losses (averaged over ranks), gancls'
    summed LSGAN losses (summed), synchronized BN (global statistics, dX through them)."""
    ref, ref_stats = grads_of_one_step(variant, batch)
    (g0, st0), (g1, st1) = two_rank_grads[0][name], two_rank_grads[1][name]
    assert set(g0) == set(ref) and ref
    for k in ref:
        assert torch.equal(g0[k], g1[k]), f"{name}: ranks disagree on {k}"
    assert all(g.dtype == torch.float64 for g in ref.values())
    err, where = worst_rel(g0, ref)
    assert err < 1e-10, f"{name}: gradient of {where} differs by {err:.2e} (relative)"
    for k in ref_stats:
        # the logged statistics are kept in fp32 (Engine.stats): an average of the ranks'
        # fp32 values vs one fp32 value, so a few fp32 ulps
        assert st0[k] == pytest.approx(ref_stats[k], rel=1e-6, abs=1e-7), (name, k)
        assert st0[k] == st1[k]


def test_per_rank_bn_is_the_only_difference(two_rank_grads):
    """mlp's G has BatchNorm: per rank (the default) each rank normalizes its 16 samples, so the
    gradients differ from one process at 32 (while --sync-bn matched above)."""
    ref, _ = grads_of_one_step("mlp", 32)
    g0, _ = two_rank_grads[0]["mlp-per-rank"]
    err, _ = worst_rel(g0, ref)
    assert err > 1e-3
    assert all(torch.isfinite(g).all() for g in g0.values())


# ---- the CLI end to end ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    import numpy as np

    from fastgan.data import write_idx
    d = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(3)
    write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (256, 28, 28), np.uint8))
    write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, (256,), np.uint8))
    return str(d)


def common(data_dir, out, variant="bigan", steps=4, *extra):
    return ["--variant", variant, "--data-dir", data_dir, "--out", str(out), "--device", "cpu",
            "--backend", "reference", "--steps", str(steps), "--log-every", "2",
            "--checkpoint-every", "0", "--sample-every", "0", "--quiet", *extra]


@pytest.fixture(scope="module")
def bigan_runs(data_dir, tmp_path_factory):
    """bigan at global batch 32: 2 ranks x 4 steps, 1 process x 4 and x 8 steps."""
    t = tmp_path_factory.mktemp("bigan")
    torchrun_train(common(data_dir, t / "two4", "bigan", 4, "--batch-size", "32"))
    one_process_train(common(data_dir, t / "one4", "bigan", 4, "--batch-size", "32"))
    one_process_train(common(data_dir, t / "one8", "bigan", 8, "--batch-size", "32"))
    return t


def test_torchrun_two_ranks_equals_one_process(bigan_runs):
    step, two = load_params(bigan_runs / "two4")
    _, one = load_params(bigan_runs / "one4")
    assert step == 4
    err, where = worst_rel(two, one)
    assert err < 1e-4, f"{where} differs by {err:.2e}"
    # Rank 0 alone wrote the outputs: one metrics row per log point, not one per rank.
    rows = [json.loads(x) for x in open(bigan_runs / "two4" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [2, 4]
    one_rows = [json.loads(x) for x in open(bigan_runs / "one4" / "metrics.jsonl")]
    for a, b in zip(rows, one_rows):
        assert a["d_loss"] == pytest.approx(b["d_loss"], rel=1e-4)
        assert a["g_loss"] == pytest.approx(b["g_loss"], rel=1e-4)
    cfg = json.load(open(bigan_runs / "two4" / "config.json"))
    assert cfg["world_size"] == 2 and cfg["batch_size"] == 32


def test_sync_bn_two_ranks_equals_one_process(data_dir, tmp_path):
    """mlp (BN in G) with --sync-bn: 2 ranks x 16 == 1 process x 32 after 4 Adam steps (Adam's
    normalization magnifies fp32 rounding of near-zero gradients, hence the looser bound)."""
    torchrun_train(common(data_dir, tmp_path / "two", "mlp", 4, "--batch-size", "32",
                          "--sync-bn"))
    one_process_train(common(data_dir, tmp_path / "one", "mlp", 4, "--batch-size", "32"))
    _, two = load_params(tmp_path / "two")
    _, one = load_params(tmp_path / "one")
    err, where = worst_rel(two, one)
    assert err < 3e-3, f"{where} differs by {err:.2e}"


@pytest.mark.parametrize("saved,launch", [("two4", "one process"), ("one4", "two ranks")])
def test_resume_on_another_number_of_ranks(bigan_runs, data_dir, tmp_path, saved, launch):
    """4 steps on 2 ranks (or 1 process), then resume to 8 on 1 process (or 2 ranks) == 1 process
    x 8."""
    import shutil
    run = tmp_path / "r"
    shutil.copytree(bigan_runs / saved, run)
    train = one_process_train if launch == "one process" else torchrun_train
    train(["--resume", str(run), "--steps", "8", "--quiet", "--device", "cpu",
           "--data-dir", data_dir, "--log-every", "2", "--checkpoint-every", "0",
           "--sample-every", "0"])
    step, resumed = load_params(run)
    _, straight = load_params(bigan_runs / "one8")
    assert step == 8
    err, where = worst_rel(resumed, straight)
    assert err < 1e-4, f"{where} differs by {err:.2e}"


def test_existing_run_dir_stops_every_rank_with_one_reason(bigan_runs, data_dir, tmp_path):
    """Rank 0 alone writes, so it alone judges --out: a directory holding another run stops
    every rank with its reason (none is left to fail in a collective with a traceback), and the
    run there is untouched."""
    import shutil
    run = tmp_path / "r"
    shutil.copytree(bigan_runs / "two4", run)
    before = (run / "checkpoint.pt").read_bytes()
    p = subprocess.run(torchrun_cmd(["-m", "fastgan", "train",
                                     *common(data_dir, run, "bigan", 8, "--batch-size", "32")]),
                       env=_env(), capture_output=True, text=True, timeout=ONE_LAUNCH_TIMEOUT,
                       cwd=REPO)
    assert p.returncode != 0
    lines = sorted(ln for ln in p.stderr.splitlines() if ln.startswith("fastgan: error:"))
    assert len(lines) == 2, p.stderr[-3000:]
    assert lines[1].startswith("fastgan: error: [rank 1] ")
    assert all("already holds a run's checkpoint" in ln and "--resume" in ln for ln in lines)
    assert "fastgan/engine" not in p.stderr, p.stderr[-3000:]     # no traceback of ours
    assert (run / "checkpoint.pt").read_bytes() == before


def test_indivisible_batch_is_a_clear_error():
    from fastgan.engine import distributed as ddp
    from fastgan.variants import get_variant
    ddp.check_batch(get_variant("mlp"), 64, 2)
    with pytest.raises(ddp.DistributedSetupError, match=r"use --batch-size 12\b"):
        ddp.check_batch(get_variant("mlp"), 10, 2)     # D sees 5 real: needs a multiple of 4
    with pytest.raises(ddp.DistributedSetupError, match="does not split over 4 ranks"):
        ddp.check_batch(get_variant("gancls"), 10, 4)


# ---- a rank dies -----------------------------------------------------------------------------

def _children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        return int(env.get(b"RANK", b"-1"))
    except (OSError, ValueError):
        return -1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the rank through /proc")
def test_killed_rank_ends_the_run_cleanly(data_dir, tmp_path):
    """SIGKILL rank 1 mid-run: the whole torchrun job ends within a bound, non-zero, rank 0
    says in one line where the last checkpoint is, and that checkpoint is intact."""
    out = tmp_path / "run"
    args = common(data_dir, out, "bigan", 10**7, "--batch-size", "32")
    args[args.index("--checkpoint-every") + 1] = "5"
    args[args.index("--log-every") + 1] = "5"
    args.remove("--quiet")
    proc = subprocess.Popen(torchrun_cmd(["-m", "fastgan", "train", *args]), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.2)
        victims = [p for p in _children(proc.pid) if _rank_of(p) == 1]
        assert len(victims) == 1, victims
        t0 = time.time()
        os.kill(victims[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=90)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode != 0
    assert took < 90
    lines = [ln for ln in err.splitlines() if ln.startswith("fastgan: error:")]
    assert len(lines) == 1, err[-3000:]
    assert "rank 0 of 2: the distributed run stopped" in lines[0]
    assert f"--resume {out}" in lines[0] and "the last checkpoint (step " in lines[0]
    step, params = load_params(out)                 # intact, and training goes on from it
    assert step >= 5 and step % 5 == 0
    one_process_train(["--resume", str(out), "--steps", str(step + 2), "--quiet", "--device",
                       "cpu", "--data-dir", data_dir, "--log-every", "1",
                       "--checkpoint-every", "0", "--sample-every", "0"])
    assert load_params(out)[0] == step + 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SIGTERM semantics")
def test_survivor_of_a_killed_rank_0_exits_4_under_sigterm(data_dir, tmp_path):
    """Rank 0 SIGKILLed, and the survivor sent SIGTERM again and again (torchrun sends it as soon
    as it sees a rank die, at any moment of the survivor's exit): the survivor still ends with
    code 4, not 143 (it did in 2 of 3 torchrun runs), and any line it prints names the
    checkpoint really on disk. The ranks are started without torchrun to see the survivor's own
    exit code."""
    out = tmp_path / "run"
    port = free_port()
    args = common(data_dir, out, "bigan", 10**7, "--batch-size", "32")
    args[args.index("--checkpoint-every") + 1] = "5"
    procs = []
    for r in range(2):
        env = dict(_env(), RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, "-m", "fastgan", "train", *args],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, cwd=REPO))
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint.pt").exists():
            assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        procs[0].kill()
        deadline = time.time() + 90
        while procs[1].poll() is None and time.time() < deadline:
            procs[1].send_signal(signal.SIGTERM)
            time.sleep(0.02)
        err = procs[1].communicate(timeout=30)[1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert procs[1].returncode == 4, err[-3000:]
    step, _ = load_params(out)
    for ln in err.splitlines():
        if ln.startswith("fastgan: error:"):
            assert f"the last checkpoint (step {step})" in ln, ln


# ---- GPUs (not run on CPU-only machines) -----------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
@pytest.mark.parametrize("graphs", [False, True])
def test_two_gpus_nccl_equals_one_gpu(data_dir, tmp_path, graphs):
    """NCCL on 2 GPUs (eager, and with the all-reduce captured in the CUDA graph) ends with the
    parameters of one GPU at the global batch (tf32 off)."""
    extra = ["--batch-size", "32", "--no-tf32", "--cuda-graphs" if graphs else "--no-cuda-graphs"]
    base = [a if a != "cpu" else "cuda" for a in common(data_dir, tmp_path / "two", "bigan", 6)]
    torchrun_train(base + extra)
    one = [a if a != "cpu" else "cuda" for a in common(data_dir, tmp_path / "one", "bigan", 6)]
    one_process_train(one + extra)
    err, where = worst_rel(load_params(tmp_path / "two")[1], load_params(tmp_path / "one")[1])
    assert err < 1e-3, f"{where} differs by {err:.2e}"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(sys.argv[2])
