"""`make gpu-check` cannot rot between the rare runs on a GPU: its dry run (no GPU: the same
steps in tiny mode) runs end to end here, its plan puts the questions in the issue's order, its
results become bench/results files and the README block, and the test outcomes stream as JSON
lines."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fastgan.benchmark import make_config, plan, validate
from fastgan.benchmark.matrix import T_COMPILE, T_DCGAN, T_SEED, check_tier
from fastgan.benchmark.paths import parse_path
from fastgan.benchmark.publish import LATEST_BEGIN, LATEST_END, STEPS, publish, step_records
from fastgan.variants import VARIANTS, get_variant

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    env = dict(os.environ, OMP_NUM_THREADS="1", FASTGAN_RESULTS=str(out))
    env.pop("FASTGAN_TEST_JSONL", None)
    p = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu_check.py"), "--tiny"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    return p, out


def _records(folder):
    with open(os.path.join(folder, "gpu-check.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_dry_run_runs_every_step_and_writes_as_it_goes(dry_run):
    p, out = dry_run
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    recs = _records(out)
    done = {r["step"]: r for r in step_records(recs)}
    for step in STEPS:
        allowed = ("ok", "partial", "skipped") if step == "build" else ("ok", "partial")
        assert done[step]["status"] in allowed, done[step]
    assert recs[0]["step"] == "start" and recs[-1]["step"] == "summary"
    # the steps are written in priority order, each when it ends
    order = [r["step"] for r in step_records(recs)]
    assert order == ["machine", "build", "tests", "warm", "peaks", "bench", "overhead"]
    # host µs per op call, per backend, the fused ops and the reference they replace
    over = [r for r in recs if r["step"] == "overhead" and "host_us_per_call" in r]
    assert {"reference", "cuda"} <= {r["backend"] for r in over}
    assert {"linear_act_head", "gan_loss_stats", "gather_scale"} <= {r["op"] for r in over}
    assert done["tests"]["collected"] > 100          # the GPU subset still exists
    assert "sm_90" in done["build"]["want_arch"]
    rows = [r for r in recs if r["step"] == "bench" and "path" in r]
    assert len(rows) == done["bench"]["rows"]["ok"] + done["bench"]["rows"]["error"] \
        + done["bench"]["rows"]["skipped"] and rows
    # CPU rows carry the dispatch-level kernel count (the GPU rows: the profiler's)
    assert any(r.get("kernels_source") == "dispatch proxy (CPU)" and r["kernels_per_it"] > 10
               for r in rows if r["status"] == "ok")
    docs = [f for f in os.listdir(out) if f.endswith(".json")]
    assert len(docs) == 1 and docs[0].endswith("-cpu.json")
    with open(out / docs[0]) as f:
        doc = json.load(f)
    assert validate(doc) == [] and doc["complete"]
    assert doc["env"]["device_name"].endswith(", 1 thread)")     # what tiny mode really ran
    assert doc["peaks"]["source"].startswith("measured in this run")  # the measured ceilings
    assert "| step | status |" in p.stdout and "| mlp |" in p.stdout    # the closing table
    assert len(os.listdir(out)) <= 8                  # what the device tool brings back


def test_publish_writes_results_and_the_readme_block(dry_run, tmp_path):
    _, out = dry_run
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{LATEST_BEGIN}\nold table\n{LATEST_END}\n\nafter\n")
    jp, mp = publish(str(out), str(tmp_path / "results"), str(readme))
    text = readme.read_text()
    assert text.startswith("# x\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old table" not in text and "### Latest results: CPU" in text
    assert "| mlp | 16 | fp32 |" in text and "- build: ok" in text
    first = text
    publish(str(out), str(tmp_path / "results"), str(readme))
    assert readme.read_text() == first                 # regenerated, not appended
    with open(jp) as f:
        doc = json.load(f)
    assert validate(doc) == [] and {s["step"] for s in doc["gpu_check"]} >= set(STEPS)
    md = open(mp).read()
    assert "The run's checks" in md
    assert "Host µs per op call" in md and "| linear_act_head | " in md   # the overhead step
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="markers"):
        publish(str(out), str(tmp_path / "results"), str(readme))


def test_the_readme_has_the_latest_results_markers():
    text = open(os.path.join(REPO, "README.md")).read()
    assert text.count(LATEST_BEGIN) == 1 and text.count(LATEST_END) == 1
    assert text.index(LATEST_BEGIN) < text.index(LATEST_END)


def test_make_gpu_check_runs_this_script():
    p = subprocess.run(["make", "-n", "gpu-check"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and "bench/gpu_check.py" in p.stdout, p.stdout + p.stderr


def test_gpu_check_plan_order():
    cfg = make_config(device="cuda", gpu_check=True)
    assert cfg.quick and cfg.gpu_check
    items = plan(cfg)
    run = sorted([i for i in items if not i.skip], key=lambda i: (i.priority, i.order))
    seed = {v: get_variant(v).hyper.batch_size for v in VARIANTS}
    tiers = [i.priority // 100 for i in run]
    assert tiers == sorted(tiers)
    first = [i for i in run if i.priority // 100 == T_SEED]
    # tier 1: every variant at its seed batch, eager-reference and every graph
    for v in VARIANTS:
        got = {i.path for i in first if i.variant == v}
        assert "eager-reference" in got, v
        assert {"fastgan-cuda", "fastgan-cuda-graph", "fastgan-reference"} <= got, (v, got)
        assert all(i.batch == seed[i.variant] and i.precision == "fp32" for i in first)
    assert not any(i.path.startswith("compile-") for i in first)
    comp = [i for i in items if i.priority // 100 == T_COMPILE]
    assert {(i.variant, i.path) for i in comp} == {
        (v, f"compile-{m}") for v in VARIANTS for m in ("default", "reduce-overhead")}
    dc = {(i.batch, i.precision) for i in items if i.priority // 100 == T_DCGAN}
    assert {(128, "bf16"), (512, "fp32"), (512, "bf16")} <= dc
    assert all(i.variant == "dcgan" for i in items if i.priority // 100 == T_DCGAN)


def test_check_tier_rules():
    ref = parse_path("eager-reference")
    assert check_tier("mlp", 64, "fp32", ref, True, "triton") == T_SEED
    # every backend eagerly too: auto's table (fastgan/backends/measured.py) needs them
    assert check_tier("mlp", 64, "fp32", parse_path("fastgan-cuda"), True, "triton") == T_SEED
    assert check_tier("mlp", 64, "fp32", parse_path("fastgan-cuda-graph"), True,
                      "triton") == T_SEED
    assert check_tier("mlp", 64, "fp32", parse_path("compile-max-autotune"), True,
                      "triton") != T_COMPILE
    assert check_tier("dcgan", 512, "bf16", parse_path("fastgan-triton-graph"), False,
                      "triton") == T_DCGAN
    assert check_tier("dcgan", 2048, "fp32", ref, False, "triton") not in (T_SEED, T_DCGAN)


def test_measured_peaks_file_feeds_the_roofline(tmp_path, monkeypatch):
    from fastgan.benchmark import device_peaks
    f = tmp_path / "peaks.json"
    f.write_text(json.dumps({"tf32": 3e14, "bf16": 7e14, "bytes": 4e12, "source": "measured"}))
    for k in ("FASTGAN_PEAK_TFLOPS", "FASTGAN_PEAK_TBPS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("FASTGAN_PEAKS_FILE", str(f))
    assert device_peaks("NVIDIA H200") == {"tf32": 3e14, "bf16": 7e14, "bytes": 4e12,
                                           "source": "measured"}
    f.write_text(json.dumps({"tf32": 0, "bf16": 7e14, "bytes": 4e12}))   # unusable: built-in
    assert device_peaks("NVIDIA H200")["bytes"] == 4.3e12


@pytest.mark.skipif(os.environ.get("FASTGAN_JSONL_PROBE") != "1",
                    reason="probe for test_test_outcomes_stream_as_json_lines")
@pytest.mark.parametrize("ok", [True, False])
def test_probe(ok):
    assert ok, "the probe's planted failure"


def test_test_outcomes_stream_as_json_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    env = dict(os.environ, FASTGAN_JSONL_PROBE="1", FASTGAN_TEST_JSONL=str(path))
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "tests/test_gpu_check.py::test_probe"], capture_output=True, text=True,
                       env=env, cwd=REPO, timeout=300)
    assert p.returncode == 1, p.stdout[-2000:]
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    by = {r["test"].split("[")[-1]: r for r in recs}
    assert by["True]"]["outcome"] == "passed"
    assert by["False]"]["outcome"] == "failed" and "planted failure" in by["False]"]["message"]


def test_top_kernels_per_iteration():
    """profile_busy's per-kernel table (calls and µs per iteration, share of kernel time), and
    the markdown's top-kernel section for dcgan rows."""
    from fastgan.benchmark import measure, to_markdown
    from test_benchmark_core import _doc, _row
    # two iterations: conv twice per iteration (30 µs each), bn once (20 µs), a memcpy
    iv = [(0, 30, "conv"), (40, 70, "conv"), (70, 90, "bn"), (95, 96, "Memcpy HtoD"),
          (100, 130, "conv"), (140, 170, "conv"), (170, 190, "bn"), (195, 196, "Memcpy HtoD")]
    pb = measure.kernel_stats(iv, 2)
    assert pb["kernels_per_it"] == 3
    top = {k["name"]: k for k in pb["top_kernels"]}
    assert top["conv"]["calls_per_it"] == 2 and top["conv"]["us_per_it"] == 60
    assert top["bn"]["us_per_it"] == 20
    assert abs(sum(k["share_pct"] for k in pb["top_kernels"]) - 100) < 1e-9
    assert pb["top_kernels"][0]["name"] == "conv"
    row = _row("fastgan-cuda-graph", 200.0, variant="dcgan", batch=128,
               top_kernels=pb["top_kernels"])
    md = to_markdown(_doc([_row("eager-reference", 100.0, variant="dcgan", batch=128), row]))
    assert "#### Top kernels: dcgan 128 fastgan-cuda-graph" in md
    assert "| `conv` | 2.00 | 60.0 |" in md


def test_plan_has_issue_21_rows():
    """dcgan 128/512 in fp32 and bf16 in both layouts, 2048 bf16, 96x96 and 128x128 images:
    in the dcgan tier on the auto backend's graph path; the seeds' loop skips channels_last."""
    from fastgan import ops
    from fastgan.benchmark.matrix import layout_cases
    cfg = make_config(device="cuda", quick=True, gpu_check=True)
    items = plan(cfg)
    auto = ops.auto_backend("cuda")
    graph_path = f"fastgan-{auto}-graph"
    cl = {"memory_format": "channels_last"}
    want = [(128, "fp32", cl), (512, "fp32", cl), (128, "bf16", cl), (512, "bf16", cl),
            (2048, "bf16", {}), (2048, "bf16", cl), (128, "bf16", {"image_size": 96}),
            (128, "fp32", {"image_size": 128, **cl})]
    have = {(b, p, tuple(sorted(o.items()))) for _, b, p, o in layout_cases(["dcgan"])}
    for b, p, o in want:
        assert (b, p, tuple(sorted(o.items()))) in have
        rows = [i for i in items if i.variant == "dcgan" and i.batch == b and i.precision == p
                and i.overrides == o]
        g = [i for i in rows if i.path == graph_path]
        assert g and g[0].skip is None and g[0].priority // 100 == T_DCGAN, (b, p, o)
        if "memory_format" in o:
            assert all(i.skip for i in rows if not i.path.startswith("fastgan-")), (b, p, o)
    # NCHW at the check batches stays where it was
    assert any(i.variant == "dcgan" and i.batch == 512 and i.precision == "bf16"
               and not i.overrides and i.path == graph_path and i.skip is None for i in items)


def test_gpu_check_plans_the_training_options_last():
    """Issue 22's option rows: the fastgan paths at the seed batch, in the last tier, never the
    seeds' loop; R1 not for dcgan (its BatchNorm D)."""
    from fastgan.benchmark.matrix import OPTION_ROWS, T_REST
    items = plan(make_config(device="cuda", gpu_check=True))
    opt_keys = {k for ovr in OPTION_ROWS.values() for k in ovr}
    rows = [i for i in items if set(i.overrides) & opt_keys]
    assert rows and all(i.priority // 100 == T_REST for i in rows)
    assert all(i.skip for i in rows if not i.path.startswith("fastgan-"))
    got = {(i.variant, tuple(sorted(i.overrides))) for i in rows}
    assert ("dcgan", ("r1_every", "r1_gamma")) not in got
    assert ("mlp", ("r1_every", "r1_gamma")) in got and ("dcgan", ("ema_decay",)) in got


@pytest.mark.parametrize("ovr", [{"ema_decay": 0.999}, {"augment": "translation,cutout"},
                                 {"r1_gamma": 1.0, "r1_every": 1}, {"loss": "hinge"},
                                 {"spectral_norm": True}])
def test_an_option_row_runs_on_cpu(ovr):
    """The engine runner takes a row's option overrides (and trains differently with them)."""
    import torch

    from fastgan import ops
    from fastgan.benchmark.paths import make_runner

    def params(o):
        with ops.use_backend("reference"):
            r = make_runner("fastgan-reference", "mlp", 8, "fp32", o, torch.device("cpu"))
            r.build()
            r.run(2)
            g = r.engine.ema.module if r.engine.ema is not None else r.engine.nets["G"]
            out = [p.detach().clone() for p in g.parameters()]
            r.close()
            return out
    a, b = params({}), params(ovr)
    assert len(a) == len(b) and any(not torch.equal(x, y) for x, y in zip(a, b)), ovr
