"""The cost of each training option (issue 22) over the plain iteration, eager, as pytest-benchmark
rows: variant x option at the variant's tiny batch (CPU, the cuda backend's C++ kernels where
they are built, else the reference). ``extra_info["cost"]`` is the option's time per iteration
over the plain row's, measured in the same process.

    pytest bench/test_option_cost.py            CPU tiny rows
    FASTGAN_BENCH_DEVICE=cuda pytest bench/test_option_cost.py    the same rows on a GPU
"""
from __future__ import annotations

import os
import time

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from fastgan import ops  # noqa: E402
from fastgan.engine import Engine, EngineOptions  # noqa: E402
from fastgan.engine import checkpoint as ckpt  # noqa: E402
from fastgan.variants import get_variant  # noqa: E402

DEVICE = torch.device(os.environ.get("FASTGAN_BENCH_DEVICE") or "cpu")
BACKEND = "cuda" if "cuda" in ops.available_backends(DEVICE.type) else "reference"
OPTIONS = {"plain": {}, "ema": dict(ema_decay=0.999),
           "augment": dict(augment="translation,cutout,color"),
           "r1": dict(r1_gamma=1.0, r1_every=4), "hinge": dict(loss="hinge"), "spectral_norm": {}}
VARIANTS = {"mlp": dict(batch_size=8), "convgan": dict(batch_size=8),
            "dcgan": dict(image_size=32, ngf=8, ndf=8, batch_size=8, channels=1)}
_PLAIN = {}


def build(name: str, option: str, backend: str = BACKEND) -> Engine:
    v = get_variant(name, **VARIANTS[name])
    torch.manual_seed(0)
    nets = {k: m.to(DEVICE) for k, m in v.build({}).items()}
    if option == "spectral_norm":
        ckpt.spectral_norm_nets(v, nets, 0, DEVICE)
    g = torch.Generator().manual_seed(1)
    s, c = v.hyper.image_size, v.hyper.channels
    imgs = torch.randint(0, 256, (256, c, s, s), generator=g, dtype=torch.uint8)
    return Engine(v, nets, imgs, None, EngineOptions(batch_size=v.hyper.batch_size,
                                                     capturable=False, **OPTIONS[option]),
                  DEVICE)


def seconds_per_iteration(eng: Engine, iters: int = 8, rounds: int = 5) -> float:
    """The best of ``rounds`` blocks of ``iters`` eager iterations (with R1 every 4 D steps, a
    block of 8 holds two penalties)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            eng.step()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / iters)
    return best


def _skip(name, option, backend):
    if option == "r1" and name == "dcgan" and backend == "cuda":
        return "R1 with dcgan's BatchNorm D needs the reference backend"
    return None


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(VARIANTS))
def test_option_cost(benchmark, name, option):
    backend = "reference" if _skip(name, option, BACKEND) else BACKEND
    with ops.use_backend(backend):
        eng = build(name, option, backend)
        eng.step()                               # warm-up (allocations, first R1)
        if (name, backend) not in _PLAIN:
            base = build(name, "plain", backend)
            base.step()
            _PLAIN[name, backend] = seconds_per_iteration(base)
        t = seconds_per_iteration(eng)
        benchmark.pedantic(eng.step, rounds=2, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(backend=backend, s_per_it=t, plain_s_per_it=_PLAIN[name, backend],
                                cost=t / _PLAIN[name, backend] - 1.0)
