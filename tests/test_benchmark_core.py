"""The measurement core of `fastgan bench` (fastgan.benchmark): the FLOP/byte counter against
hand counts, the matrix plan and its skip reasons, ratios and the markdown table, the JSON schema,
and small end-to-end runs on CPU (in-process, in a child process, and through the CLI)."""
from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch

from fastgan.benchmark import (count_iteration, device_peaks, make_config, parse_path, plan,
                               run_matrix, select_paths, to_markdown, validate, write_json)
from fastgan.benchmark.environment import gpu_slug
from fastgan.benchmark.measure import measure_path
from fastgan.benchmark.roofline import roofline_row
from fastgan.benchmark.running import derive, summarize
from fastgan.variants import VARIANTS, get_variant

QUIET = dict(log=lambda s: None)


# ---- the roofline counter ----------------------------------------------------------------------

def _mlp_macs():
    g = 100 * 256 + 256 * 512 + 512 * 1024 + 1024 * 784      # G's four Linear layers
    d = 784 * 1024 + 1024 * 256 + 256 * 1                    # D's three
    return g, d


@pytest.mark.parametrize("batch", [64, 1024])
def test_flops_mlp_match_hand_count(batch):
    """mlp, as the engine runs it: D step = G forward on B/2 noise without grad, D forward and
    backward on [B/2 real; B/2 fake] (no input gradient for D's first layer); G step = G forward
    on B fresh noise, D forward, D input gradients only (D frozen), G weight and input gradients
    (none for G's first layer's input, the noise)."""
    g, d = _mlp_macs()
    B = batch
    d_step = 2 * (B // 2) * g + 2 * B * d + 2 * B * d + 2 * B * (1024 * 256 + 256 * 1)
    g_step = 2 * B * g + 2 * B * d + 2 * B * d + 2 * B * g + 2 * B * (g - 100 * 256)
    c = count_iteration("mlp", B)
    assert c.flops_d_step == d_step
    assert c.flops_g_step == g_step
    assert c.flops == d_step + g_step
    if B == 64:
        assert c.flops == 1_240_432_640


def test_flops_bigan_match_hand_count():
    """bigan: G(z) and E(x) with grad in the D step; the G step backpropagates through frozen D
    (input gradients of both its layers over the joint batch, no weight gradients) into G and E."""
    n = 32
    gm = 64 * 128 + 128 * 784
    em = 784 * 128 + 128 * 64
    dm = (784 + 64) * 128 + 128 * 1
    d_step = 2 * n * (gm + em) + 2 * 2 * (2 * n) * dm + 2 * (2 * n) * 128
    g_step = (2 * 2 * (2 * n) * dm + 2 * n * gm + 2 * n * 128 * 784
              + 2 * n * em + 2 * n * 128 * 64)
    c = count_iteration("bigan", n)
    assert (c.flops_d_step, c.flops_g_step) == (d_step, g_step)


def test_bytes_mlp_follow_the_stated_model():
    B = 64
    c = count_iteration("mlp", B)
    v = get_variant("mlp")
    nets = v.build({})
    pg = sum(p.numel() for p in nets["G"].parameters())
    pd = sum(p.numel() for p in nets["D"].parameters())
    assert (c.params_g, c.params_d) == (pg, pd)
    parts = c.bytes_parts
    assert parts["optimizer"] == 32 * (pg + pd)
    # G without grad in the D step (read once), with grad in the G step (read twice); D with
    # grad-carrying outputs in both steps.
    assert parts["weights"] == 4 * pg * (1 + 2) + 4 * pd * (2 + 2)
    g_out = 256 * 2 + 512 * 2 + 1024 * 2 + 784   # Linear and BatchNorm outputs of G per row
    # the D step's G (inference, no grad) folds each BatchNorm into its linear's epilogue
    g_out_folded = 256 + 512 + 1024 + 784
    d_out = 1024 + 256 + 1
    act = 4 * ((B // 2) * g_out_folded * 2 + B * d_out * 4 + B * g_out * 4 + B * d_out * 4)
    assert parts["activations"] == act
    assert parts["data"] == (B // 2) * 784 * 5 + (B // 2) * 100 * 4 + B * 100 * 4
    assert c.bytes == sum(parts.values())
    bf = count_iteration("mlp", B, precision="bf16")
    assert bf.flops == c.flops and bf.bytes_parts["activations"] == act // 2


@pytest.mark.parametrize("name", list(VARIANTS))
def test_counter_runs_for_every_variant_and_scales_with_batch(name):
    b = get_variant(name).hyper.batch_size
    ov = {"image_size": 32, "ngf": 8, "ndf": 8} if name == "dcgan" else {}
    c1, c4 = count_iteration(name, b, **ov), count_iteration(name, 4 * b, **ov)
    assert c1.flops > 0 and c1.flops_d_step > 0 and c1.flops_g_step > 0
    assert c4.flops == 4 * c1.flops       # every matmul/conv is linear in the batch
    assert c4.bytes_parts["optimizer"] == c1.bytes_parts["optimizer"]


def test_counting_leaves_real_training_as_it_was(monkeypatch):
    """The count runs an iteration on fake tensors: none of them may be kept (a fake unit
    gradient, cached, seeded every later real backward, and training in the same process then
    changed no weight)."""
    from torch._subclasses.fake_tensor import is_fake

    from fastgan.ops import units
    monkeypatch.setattr(units, "_UNITS", {})      # as in a fresh process: no unit made yet
    count_iteration("mlp", 8)
    assert not any(is_fake(t) for t in units._UNITS.values())
    assert not is_fake(units.unit_grad("cpu"))
    from fastgan import ops
    from fastgan.benchmark.paths import make_runner
    with ops.use_backend("reference"):
        r = make_runner("fastgan-reference", "mlp", 8, "fp32", {}, torch.device("cpu"))
        r.build()
        before = [p.detach().clone() for p in r.engine.nets["G"].parameters()]
        r.run(1)
        assert all(not torch.equal(a, p) for a, p in zip(before, r.engine.nets["G"].parameters()))
        r.close()


def test_peaks_and_floor(monkeypatch):
    monkeypatch.delenv("FASTGAN_PEAK_TFLOPS", raising=False)
    monkeypatch.delenv("FASTGAN_PEAK_TBPS", raising=False)
    pk = device_peaks("NVIDIA H100 80GB HBM3")
    assert (pk["tf32"], pk["bf16"], pk["bytes"]) == (400e12, 790e12, 3.0e12)
    assert device_peaks("NVIDIA H200")["bytes"] == 4.3e12
    assert device_peaks(None) is None and device_peaks("NVIDIA L4") is None
    c = count_iteration("mlp", 64)
    fl = c.floor(pk)
    assert fl["bound"] == "memory"
    assert fl["floor_s"] == pytest.approx(c.bytes / 3.0e12)
    assert fl["compute_s"] == pytest.approx(c.flops / 400e12)
    monkeypatch.setenv("FASTGAN_PEAK_TFLOPS", "100")
    monkeypatch.setenv("FASTGAN_PEAK_TBPS", "1")
    pk2 = device_peaks(None)
    assert pk2["tf32"] == 100e12 and pk2["bytes"] == 1e12
    row = roofline_row("mlp", 64, "fp32", {}, pk, best_ms=0.5, best_path="x")
    assert row["measured_over_floor"] == pytest.approx(0.5e-3 / fl["floor_s"])


# ---- paths and the plan ----------------------------------------------------------------------

def test_parse_and_select_paths():
    assert parse_path("eager-reference")["kind"] == "eager-reference"
    assert parse_path("compile-max-autotune") == {"kind": "compile", "mode": "max-autotune",
                                                  "backend": "reference", "graph": False}
    assert parse_path("fastgan-triton-graph") == {"kind": "fastgan", "mode": None,
                                                  "backend": "triton", "graph": True}
    for bad in ("compile-fast", "fastgan-", "eager"):
        with pytest.raises(ValueError):
            parse_path(bad)
    names = ["eager-reference", "compile-default", "fastgan-reference", "fastgan-cuda-graph"]
    assert select_paths(names, "fastgan-*,eager-reference") == [
        "eager-reference", "fastgan-reference", "fastgan-cuda-graph"]
    assert select_paths(names, None) == names
    with pytest.raises(ValueError, match="matches no path"):
        select_paths(names, "compile-turbo")


def test_plan_on_cpu_skips_with_reasons():
    items = plan(make_config(device="cpu", quick=True))
    assert {i.variant for i in items} == set(VARIANTS)
    by = {(i.variant, i.path): i for i in items}
    assert by[("mlp", "eager-reference")].skip is None
    assert by[("mlp", "fastgan-reference")].skip is None
    assert "CUDA graphs" in by[("mlp", "fastgan-reference-graph")].skip
    assert "torch.compile on CPU" in by[("mlp", "compile-default")].skip
    assert "CUDA only" in by[("mlp", "compile-reduce-overhead")].skip
    assert "interpreter" in by[("mlp", "fastgan-triton")].skip
    assert by[("dcgan", "eager-reference")].overrides["image_size"] == 32
    assert all(i.skip for i in items if i.path.startswith("compile-"))


def test_plan_gpu_quick_rules_and_order():
    cfg = make_config(device="cuda", quick=True)
    items = plan(cfg)
    run = sorted([i for i in items if not i.skip], key=lambda i: (i.priority, i.order))
    seed = {v: get_variant(v).hyper.batch_size for v in VARIANTS}
    # The seed batches without torch.compile come first.
    n_first = sum(1 for i in run if i.priority == run[0].priority)
    assert all(i.batch == seed[i.variant] and not i.path.startswith("compile-")
               for i in run[:n_first])
    ma = [i for i in items if i.path == "compile-max-autotune" and not i.skip]
    assert sorted((i.variant, i.batch) for i in ma) == [("dcgan", 128), ("mlp", 64)]
    assert all(i.isolate for i in items if i.path.startswith("compile-"))
    assert all(i.batch == seed[i.variant] for i in items
               if i.path.startswith("compile-") and not i.skip)
    batches = {(i.variant, i.batch) for i in items}
    assert {("mlp", 64), ("mlp", 1024), ("mlp", 8192), ("dcgan", 128), ("dcgan", 512)} <= batches
    assert any(i.precision == "bf16" and not i.skip for i in items)
    assert all(i.skip for i in items if i.skip is not None)   # every skip has a reason


def test_a_new_variant_needs_no_edit_in_the_bench_or_the_cli(monkeypatch):
    """A sixth variant without BenchSettings gets the defaults (tiny batch min(8, seed), its seed
    batch on a GPU), and its own flags join `fastgan train`, each flag once."""
    from fastgan.cli import build_parser
    from fastgan.variants import Option, cli_options
    from fastgan.variants.dcgan import DCGAN
    from fastgan.variants.mlp import MLP

    class Sixth(MLP):
        name = "sixth"
        bench = None
        cli_options = (Option("--width", "width", int, help="sixth: width"),
                       DCGAN.cli_options[0])

    monkeypatch.setitem(VARIANTS, "sixth", Sixth)
    tiny = plan(make_config(device="cpu", quick=True, variants=["sixth"]))
    assert {(i.batch, i.precision) for i in tiny} == {(8, "fp32")}
    gpu = plan(make_config(device="cuda", variants=["sixth"]))
    assert {(i.batch, i.precision) for i in gpu} == {(64, "fp32")}
    assert [o.flag for o in cli_options()] == ["--ngf", "--ndf", "--kernel", "--final", "--width"]
    a = build_parser().parse_args(["train", "--width", "3", "--ngf", "5"])
    assert (a.width, a.ngf) == (3, 5)


def test_gpu_slug():
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert gpu_slug("NVIDIA GeForce RTX 4090") == "rtx-4090"
    assert gpu_slug("NVIDIA A100-SXM4-80GB") == "a100"


# ---- ratios, the table, the schema ----------------------------------------------------------

def _row(path, it_s, status="ok", reason=None, batch=64, **kw):
    p = parse_path(path)
    r = {"variant": "mlp", "batch": batch, "precision": "fp32", "overrides": {}, "path": path,
         "kind": p["kind"], "backend": p["backend"], "compile_mode": p["mode"],
         "graph": p["graph"], "status": status, "reason": reason,
         "it_s": it_s, "img_s": it_s * batch if it_s else None,
         "ms_per_it": 1e3 / it_s if it_s else None, "spread_pct": 1.0 if it_s else None,
         "reps": 7 if it_s else None, "iters_per_rep": 10 if it_s else None,
         "x_vs_eager_ref": None, "x_vs_best_compile": None, "peak_mem_mib": 100.0,
         "mean_power_w": 150.0, "energy_j_per_1k_img": 2.5, "nvml_util_pct": 50.0,
         "gpu_busy_pct": 90.0 if it_s else None, "kernels_per_it": 100.0,
         "gpu_ms_per_it": 0.4, "compile_s": 1.5, "build_s": 0.1, "wall_s": 2.0,
         "finite": True}
    r.update(kw)
    return r


def _doc(rows):
    pk = device_peaks("NVIDIA H100 80GB HBM3")
    derive(rows)
    return {"schema": "fastgan-bench/1", "created_utc": "2026-01-01T00:00:00+00:00",
            "date": "2026-01-01",
            "env": {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3",
                    "gpu_slug": "h100", "torch": "2.11.0", "triton": "3.6.0", "cuda": "13.0",
                    "python": "3.12.3", "fastgan": "0.1.0", "backends": ["reference", "triton"],
                    "auto_backend": "triton", "tf32": True, "nvml": {"driver": "580"}},
            "config": {"quick": True, "tiny": False,
                       "timing": {"warmup": 5, "reps": 7, "block_s": 0.1}},
            "peaks": pk, "results": rows, "summary": summarize(rows),
            "roofline": [roofline_row("mlp", 64, "fp32", {}, pk, best_ms=1.0,
                                      best_path="fastgan-triton-graph")],
            "complete": True, "wall_s": 12.0}


def test_ratios_markdown_and_schema():
    rows = [_row("eager-reference", 100.0), _row("compile-default", 150.0),
            _row("compile-max-autotune", None, "skipped", "budget: killed after 120 s"),
            _row("compile-reduce-overhead", None, "error", "RuntimeError: cudagraphs | broke"),
            _row("fastgan-triton", 80.0), _row("fastgan-triton-graph", 1000.0),
            _row("fastgan-reference-graph", 900.0)]
    doc = _doc(rows)
    by = {r["path"]: r for r in doc["results"]}
    assert by["eager-reference"]["x_vs_eager_ref"] == pytest.approx(1.0)
    assert by["fastgan-triton-graph"]["x_vs_eager_ref"] == pytest.approx(10.0)
    assert by["fastgan-triton-graph"]["x_vs_best_compile"] == pytest.approx(1000 / 150)
    assert by["compile-max-autotune"]["x_vs_eager_ref"] is None
    s = doc["summary"][0]
    assert s["eager_fastest"]["path"] == "fastgan-triton"
    assert s["graph_fastest"]["path"] == "fastgan-triton-graph"
    assert s["graph_reference"]["it_s"] == 900.0 and s["best_compile"]["it_s"] == 150.0
    assert validate(doc) == []
    md = to_markdown(doc)
    lines = md.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("| variant | batch | path"))
    assert lines[head].count("|") == lines[head + 1].count("|") == 16
    assert "NVIDIA H100 80GB HBM3" in lines[0] and "2026-01-01" in lines[0]
    assert "torch 2.11.0" in md and "triton 3.6.0" in md
    row = next(ln for ln in lines if "| fastgan-triton-graph |" in ln)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:8] == ["mlp", "64", "fastgan-triton-graph", "1,000", "64,000", "10.0x",
                         "6.67x", "1.00"]
    assert cells[-1] == "ok"
    assert "skipped: budget: killed after 120 s" in md
    assert "error: RuntimeError: cudagraphs / broke" in md      # no stray column separator
    assert "400 TFLOP/s tf32" in md and "3.0 TB/s" in md and "x the floor" in md
    assert "GFLOP/iter" in md


def test_validate_catches_problems():
    doc = _doc([_row("eager-reference", 100.0)])
    assert validate(doc) == []
    bad = copy.deepcopy(doc)
    del bad["env"]["torch"]
    assert any("torch" in e for e in validate(bad))
    bad = copy.deepcopy(doc)
    bad["results"][0]["status"] = "fine"
    assert validate(bad)
    bad = copy.deepcopy(doc)
    bad["results"][0]["it_s"] = None
    assert any("without a positive it_s" in e for e in validate(bad))
    bad = copy.deepcopy(doc)
    bad["results"][0].update(status="skipped", reason=None)
    assert any("without a reason" in e for e in validate(bad))
    bad = copy.deepcopy(doc)
    del bad["results"][0]["peak_mem_mib"]
    assert validate(bad)
    assert validate({"schema": "x"})


# ---- end to end on CPU -------------------------------------------------------------------------

def test_matrix_end_to_end_on_cpu(tmp_path):
    cfg = make_config(device="cpu", quick=True, variants=["mlp"],
                      paths="eager-reference,fastgan-reference,fastgan-reference-graph")
    seen = []
    doc = run_matrix(cfg, on_update=lambda d: seen.append(len(d["results"])), **QUIET)
    assert seen, "partial results are published after each path"
    by = {r["path"]: r for r in doc["results"]}
    assert set(by) == {"eager-reference", "fastgan-reference", "fastgan-reference-graph"}
    for p in ("eager-reference", "fastgan-reference"):
        r = by[p]
        assert r["status"] == "ok", r
        assert r["it_s"] > 0 and r["ms_per_it"] == pytest.approx(1e3 / r["it_s"])
        assert r["img_s"] == pytest.approx(r["it_s"] * 16)
        assert r["reps"] >= 2 and r["finite"] is True
        assert r["peak_mem_mib"] is None and r["mean_power_w"] is None   # CPU: no GPU numbers
    assert by["eager-reference"]["x_vs_eager_ref"] == pytest.approx(1.0)
    assert by["fastgan-reference-graph"]["status"] == "skipped"
    assert doc["complete"] and validate(doc) == []
    rf = doc["roofline"][0]
    assert rf["flops"] == count_iteration("mlp", 16).flops and rf["floor"] is None
    out = tmp_path / "r.json"
    write_json(doc, str(out))
    back = json.loads(out.read_text())
    assert validate(back) == []
    assert "| mlp | 16 | eager-reference |" in to_markdown(back)


def test_a_failing_path_is_recorded_not_raised():
    r = measure_path({"variant": "mlp", "batch": 8, "path": "fastgan-nosuchbackend",
                      "device": "cpu", "timing": {"warmup": 0, "reps": 2, "block_s": 0}})
    assert r["status"] == "error" and "nosuchbackend" in r["reason"]
    assert r["it_s"] is None


def test_isolated_worker_result_and_timeout():
    from fastgan.benchmark.worker import run_isolated
    spec = {"variant": "bigan", "batch": 8, "precision": "fp32", "overrides": {},
            "path": "eager-reference", "device": "cpu", "threads": 1,
            "timing": {"warmup": 1, "reps": 2, "block_s": 0}}
    r = run_isolated(spec, timeout_s=120)
    assert r["status"] == "ok" and r["it_s"] > 0 and r["isolated"] is True
    r = run_isolated(spec, timeout_s=0.5)
    assert r["status"] == "skipped" and r["reason"].startswith("budget: killed")


def test_bench_cli(tmp_path, capsys):
    from fastgan.cli.bench import run as main

    def args(**kw):
        base = dict(variant=["bigan"], quick=True, batch_size=None, device="cpu",
                    json=str(tmp_path / "b.json"), md=str(tmp_path / "b.md"),
                    paths="eager-reference,fastgan-reference")
        base.update(kw)
        return argparse.Namespace(**base)

    assert main(args()) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert validate(doc) == [] and doc["config"]["tiny"] is True
    assert [r["status"] for r in doc["results"]] == ["ok", "ok"]
    md = (tmp_path / "b.md").read_text()
    assert "| bigan | 8 | fastgan-reference |" in md
    assert "| bigan | 8 | eager-reference |" in capsys.readouterr().out
    assert main(args(variant=["nope"])) == 2
    assert main(args(paths="compile-turbo")) == 2
    assert main(args(batch_size=[1])) == 2
    if not torch.cuda.is_available():
        assert main(args(device="cuda")) == 2
    assert "fastgan: error:" in capsys.readouterr().err
    # output into a missing folder: refused before anything is measured
    for opt in ("json", "md"):
        assert main(args(**{opt: str(tmp_path / "no" / f"b.{opt}")})) == 2
        captured = capsys.readouterr()
        assert f"--{opt} " in captured.err and "folder does not exist" in captured.err
        assert "eager-reference" not in captured.out


# ---- on a GPU (run by make gpu-check) ------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_paths_measure_memory_busy_and_graphs():
    timing = {"warmup": 2, "reps": 3, "block_s": 0.02}
    rows = {p: measure_path({"variant": "mlp", "batch": 64, "path": p, "device": "cuda",
                             "timing": timing})
            for p in ("eager-reference", "fastgan-reference", "fastgan-reference-graph")}
    for p, r in rows.items():
        assert r["status"] == "ok", (p, r.get("reason"), r.get("traceback"))
        assert r["peak_mem_mib"] > 0 and r["finite"] is True
    g = rows["fastgan-reference-graph"]
    assert g["gpu_busy_pct"] is None or 0 < g["gpu_busy_pct"] <= 100
    assert g["compile_s"] is not None
