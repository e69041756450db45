"""Issue 20's targets read from a bench document (fastgan/benchmark/targets.py): each line says
met, missed or not measured from the rows it names, never a number the document lacks."""
from __future__ import annotations

import json
import os

from fastgan.benchmark.targets import target_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _r(variant, batch, path, it_s, kernels=None, **kw):
    kind = path.split("-")[0] if not path.startswith("eager-") else "eager-reference"
    backend = path.split("-")[1] if kind == "fastgan" else None
    return {"variant": variant, "batch": batch, "precision": "fp32", "overrides": {},
            "path": path, "kind": kind, "backend": backend, "graph": path.endswith("-graph"),
            "status": "ok", "it_s": it_s, "ms_per_it": 1e3 / it_s, "kernels_per_it": kernels,
            **kw}


def _doc(rows, auto=None, roofline=()):
    return {"env": {"auto": auto or {}}, "results": rows, "roofline": list(roofline)}


def test_every_target_met():
    auto = {v: {"graph": "triton", "eager": "reference"}
            for v in ("mlp", "bigan", "gancls", "convgan")}
    rows = [_r("mlp", 64, "fastgan-triton-graph", 20000.0, 28),   # 50 us
            _r("mlp", 64, "fastgan-cuda-graph", 30000.0),           # faster, not auto's
            _r("mlp", 64, "compile-reduce-overhead", 9000.0), _r("mlp", 64, "compile-default", 1.0),
            _r("mlp", 64, "eager-reference", 500.0), _r("mlp", 64, "fastgan-reference", 510.0)]
    for v, b in (("bigan", 32), ("gancls", 10), ("convgan", 16)):
        rows += [_r(v, b, "eager-reference", 100.0), _r(v, b, "fastgan-triton-graph", 2000.0),
                 _r(v, b, "compile-reduce-overhead", 900.0), _r(v, b, "fastgan-reference", 101.0)]
    lines = target_lines(_doc(rows, auto, [{"variant": "mlp", "batch": 1024,
                                            "measured_over_floor": 1.7}]))
    text = "\n".join(lines)
    assert "MISSED" not in text and "not measured" not in text, text
    assert lines[0].startswith("- mlp 64 (fastgan-triton-graph): 50 us per iteration") and \
        "2.22x the best torch.compile (compile-reduce-overhead" in lines[0]
    assert "28 (target <= 30): met" in lines[1]
    assert "- bigan 32 (fastgan-triton-graph): 20.0x eager PyTorch" in text
    assert "mlp 1.02x (reference)" in text and "mlp 1024 1.7x the floor" in text


def test_misses_and_gaps_are_said():
    rows = [_r("mlp", 64, "fastgan-triton-graph", 5000.0, 40),    # 200 us
            _r("mlp", 64, "compile-default", 4000.0),
            _r("mlp", 64, "eager-reference", 500.0), _r("mlp", 64, "fastgan-reference", 400.0),
            _r("bigan", 32, "eager-reference", 100.0), _r("bigan", 32, "fastgan-cuda-graph", 900.0)]
    auto = {"mlp": {"graph": "triton", "eager": "reference"}}
    lines = target_lines(_doc(rows, auto))
    assert "200 us per iteration (goal <= 60, milestone <= 120): MISSED" in lines[0]
    assert "1.25x the best torch.compile (compile-default, of default; target >= 2): MISSED" \
        in lines[0]
    assert "40 (target <= 30): MISSED" in lines[1]
    assert "- bigan 32 (fastgan-cuda-graph): 9.0x eager PyTorch (target >= 15): MISSED; x best " \
        "torch.compile >= 2: not measured" in lines
    assert "- gancls 10: not measured" in lines
    assert any("mlp 0.80x (reference) MISSED" in ln for ln in lines)
    assert lines[-1].endswith("not measured")


def test_reduce_overhead_missing_is_not_a_met():
    rows = [_r("mlp", 64, "fastgan-triton-graph", 9000.0), _r("mlp", 64, "compile-default", 10.0)]
    line = target_lines(_doc(rows))[0]
    assert "met over the modes measured; reduce-overhead not measured" in line


def test_the_committed_h100_run():
    with open(os.path.join(ROOT, "bench", "results", "2026-11-23-h100-prelim.json")) as f:
        lines = target_lines(json.load(f))
    assert lines[0].startswith("- mlp 64 (fastgan-triton-graph): 401 us per iteration") and \
        "MISSED" in lines[0]
    assert lines[1].startswith("- mlp 64 kernels per iteration (profiler): 95 (target <= 30)")
