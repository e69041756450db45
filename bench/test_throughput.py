"""Throughput of every variant × batch × path, as pytest-benchmark runs.

    pytest bench/                                   the quick matrix (GPU), tiny mode (CPU)
    pytest (bench in testpaths), pytest tests bench  tiny mode on CPU, also on a GPU machine
    FASTGAN_BENCH_FULL=1 pytest bench/              the full matrix
    FASTGAN_BENCH_VARIANTS=mlp,dcgan FASTGAN_BENCH_PATHS='eager-*,fastgan-*' pytest bench/
    pytest bench/ --benchmark-disable               each path built, warmed up and run once

The rows, their order and their skip reasons are the ones `fastgan bench` uses
(``fastgan.benchmark.plan``); a row the matrix skips is a pytest skip with the same reason. On a
CPU (CI) the matrix is the tiny one: one small batch per variant, 1 warm-up iteration and 2
rounds of one iteration, so the files run in seconds and cannot rot; torch.compile, CUDA graphs
and Triton (its interpreter) are skipped there with the reason printed by ``-ra``.
Each round is one block of iterations followed by a device synchronize; ``extra_info`` holds the
iterations/s, images/s and the one-time costs. `fastgan bench` adds memory, energy and GPU busy.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

pytest.importorskip("pytest_benchmark")

from fastgan.benchmark import make_config, plan, run_matrix, to_markdown, validate  # noqa: E402
from fastgan.benchmark.measure import warmed_runner  # noqa: E402
from fastgan.benchmark.paths import sync  # noqa: E402

# The GPU matrix only when bench/ is asked for by name (bench/conftest.py); inside a whole test
# run it is the CPU smoke test, also on a GPU machine.
_EXPLICIT = os.environ.get("FASTGAN_BENCH_EXPLICIT") == "1"
DEVICE = os.environ.get("FASTGAN_BENCH_DEVICE") or (
    "cuda" if torch.cuda.is_available() and _EXPLICIT else "cpu")
FULL = os.environ.get("FASTGAN_BENCH_FULL") == "1"
_VARIANTS = [v for v in os.environ.get("FASTGAN_BENCH_VARIANTS", "").split(",") if v] or None
CFG = make_config(device=DEVICE, quick=not FULL, variants=_VARIANTS,
                  paths=os.environ.get("FASTGAN_BENCH_PATHS") or None)
ITEMS = plan(CFG)


def _id(it) -> str:
    return f"{it.variant}-{it.batch}{'-bf16' if it.precision == 'bf16' else ''}-{it.path}"


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """Tiny mode is a smoke test: one thread keeps it fast on a loaded 2-core CI machine."""
    n = torch.get_num_threads()
    if CFG.tiny:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("item", ITEMS, ids=[_id(i) for i in ITEMS])
def test_throughput(benchmark, item):
    if item.skip:
        pytest.skip(item.skip)
    spec = {"variant": item.variant, "batch": item.batch, "precision": item.precision,
            "overrides": item.overrides, "path": item.path, "device": CFG.device,
            "seed": CFG.seed, "timing": vars(CFG.timing)}
    device = torch.device(CFG.device)
    with warmed_runner(spec) as (runner, info):
        n = info["n"]

        def block():
            runner.run(n)
            sync(device)

        benchmark.group = f"{item.variant} batch {item.batch} {item.precision}"
        benchmark.extra_info.update(variant=item.variant, batch=item.batch,
                                    precision=item.precision, path=item.path,
                                    iterations_per_round=n, build_s=info["build_s"],
                                    warmup_s=info["warm_s"])
        benchmark.pedantic(block, rounds=max(2, CFG.timing.reps), iterations=1,
                           warmup_rounds=0)
        stats = getattr(benchmark, "stats", None)
        median = getattr(getattr(stats, "stats", None), "median", None) if stats else None
        if median:
            benchmark.extra_info.update(it_s=n / median, img_s=n / median * item.batch,
                                        ms_per_it=median / n * 1e3)
        # Not a performance assertion: the path must still train (finite losses).
        if hasattr(runner, "read_stats"):
            st = runner.read_stats()
            assert math.isfinite(st["d_loss"]) and math.isfinite(st["g_loss"]), st
        else:
            assert all(math.isfinite(x) for x in runner.losses), runner.losses


def test_matrix_document(tmp_path):
    """The whole `fastgan bench` pipeline (plan, run, ratios, roofline, JSON, markdown) on one
    variant of this machine's quick matrix, restricted to its eager paths."""
    if not CFG.tiny:
        pytest.skip("the CPU tiny-mode check of the report (the GPU matrix is test_throughput)")
    cfg = make_config(device="cpu", quick=True, variants=["mlp"],
                      paths="eager-reference,fastgan-reference")
    doc = run_matrix(cfg, log=lambda s: None)
    assert validate(doc) == []
    assert [r["status"] for r in doc["results"]] == ["ok", "ok"]
    md = to_markdown(doc)
    assert "| mlp | 16 | eager-reference |" in md and "GFLOP/iter" in md
