"""--backend auto from measurements (fastgan/backends/measured.py): the committed table equals
the committed benchmark results, the ranking rules, the lookup per device, mode and variant,
and the trainer's use of it."""
from __future__ import annotations

import glob
import json
import os

import pytest

from fastgan import backends, ops
from fastgan.backends import measured

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = sorted(glob.glob(os.path.join(ROOT, "bench", "results", "*.json")))


def test_the_table_is_the_committed_results():
    if not RESULTS:
        pytest.skip("no bench/results in this checkout")
    with open(measured.TABLE) as f:
        shipped = json.load(f)
    assert shipped == json.loads(json.dumps(measured.build(RESULTS))), (
        "fastgan/backends/measured.json is stale: run "
        "python -m fastgan.backends.measured bench/results/*.json")


def _row(backend, it_s, graph=False, spread=1.0, variant="mlp", batch=64, status="ok"):
    return {"variant": variant, "batch": batch, "precision": "fp32", "overrides": {},
            "kind": "fastgan", "backend": backend, "graph": graph, "status": status,
            "it_s": it_s, "spread_pct": spread}


def _results(rows, device="cuda", name="GPU X", date="2026-12-03"):
    return {"schema": "fastgan-bench/1", "date": date,
            "env": {"device": device, "device_name": name}, "results": rows}


def test_ranking_fastest_first_ties_and_failures():
    rows = [_row("reference", 100.0, True), _row("cuda", 150.0, True), _row("triton", 101.5, True),
            _row("reference", 50.0), _row("triton", 10.0, status="error"), _row("cuda", 40.0),
            _row("cuda", 999.0, True, batch=128)]           # another batch: not the seed's
    e = measured.derive(_results(rows), {"mlp": 64})
    # cuda fastest; triton within 2 % of reference: the catalogue's order (triton first)
    assert e["graph"]["mlp"] == ["cuda", "triton", "reference"]
    # triton failed: after those measured, in the catalogue's order
    assert e["eager"]["mlp"] == ["reference", "cuda", "triton"]
    wide = [_row("cuda", 100.0, True, spread=10.0), _row("triton", 105.0, True)]
    assert measured.derive(_results(wide), {"mlp": 64})["graph"]["mlp"][:2] == ["triton", "cuda"]
    wide[1]["it_s"] = 115.0
    assert measured.derive(_results(wide), {"mlp": 64})["graph"]["mlp"][:2] == ["triton", "cuda"]
    wide[0]["it_s"], wide[1]["it_s"] = 115.0, 100.0
    assert measured.derive(_results(wide), {"mlp": 64})["graph"]["mlp"][:2] == ["cuda", "triton"]


def test_ties_are_clusters_around_the_fastest():
    """3 % apart is not a tie at 2 % even through a backend between them (a pairwise sort with
    a tolerance would keep the catalogue's triton-last order here)."""
    rows = [_row("cuda", 100.0, True), _row("reference", 101.5, True), _row("triton", 103.0, True)]
    assert measured.derive(_results(rows), {"mlp": 64})["graph"]["mlp"] == \
        ["triton", "reference", "cuda"]


def test_a_cpu_needs_ten_percent():
    """A CPU's runs vary by about 10 %: 8 % apart keeps the catalogue's order (cuda first)."""
    rows = [_row("reference", 108.0), _row("cuda", 100.0)]
    cpu = lambda rs: measured.derive(_results(rs, device="cpu", name="CPU"),  # noqa: E731
                                     {"mlp": 64})["eager"]["mlp"]
    assert cpu(rows) == ["cuda", "reference"]
    rows[0]["it_s"] = 111.0
    assert cpu(rows) == ["reference", "cuda"]


def test_cpu_has_no_graph_order_and_never_picks_the_interpreter():
    rows = [_row("reference", 10.0), _row("cuda", 20.0), _row("triton", 99.0)]
    e = measured.derive(_results(rows, device="cpu", name="CPU"), {"mlp": 64})
    assert e["graph"] == {} and e["eager"]["mlp"] == ["cuda", "reference"]


def test_lookup_per_device_mode_and_variant(tmp_path, monkeypatch):
    older = _results([_row("reference", 9.0, True), _row("cuda", 1.0, True)], name="GPU A",
                     date="2026-01-01")
    newer = _results([_row("cuda", 9.0, True), _row("reference", 1.0, True),
                      _row("cuda", 1.0), _row("reference", 9.0)], name="GPU B")
    paths = []
    for i, r in enumerate((older, newer)):
        paths.append(str(tmp_path / f"2026-0{i + 1}-x.json"))
        with open(paths[-1], "w") as f:
            json.dump(r, f)
    table = tmp_path / "measured.json"
    measured.main([*paths, "--out", str(table)])
    monkeypatch.setattr(measured, "TABLE", str(table))
    measured.table.cache_clear()
    try:
        order, where = measured.lookup("cuda", True, "mlp", "GPU A")
        assert order[:2] == ["reference", "cuda"] and where.startswith("measured on GPU A (")
        order, where = measured.lookup("cuda", False, "mlp", "GPU B")
        assert order[:2] == ["reference", "cuda"]
        # a GPU never measured: the newest measured one's, said so
        order, where = measured.lookup("cuda", True, "mlp", "GPU C")
        assert order[:2] == ["cuda", "reference"] and "GPU B, not this device" in where
        assert measured.lookup("cuda", True, None, "GPU A") is None       # no variant
        assert measured.lookup("cuda", True, "dcgan", "GPU A") is None    # not measured
        assert measured.lookup("cpu", False, "mlp") is None               # no CPU entry
        order, why = backends.auto_choice("cuda", True, "dcgan", "GPU A")
        assert order == backends.auto_order("cuda", True) and "catalogue" in why
    finally:
        measured.table.cache_clear()


def test_a_missing_table_is_the_catalogue(monkeypatch, tmp_path):
    monkeypatch.setattr(measured, "TABLE", str(tmp_path / "none.json"))
    measured.table.cache_clear()
    try:
        assert backends.auto_choice("cpu", False, "mlp")[0] == backends.auto_order("cpu")
    finally:
        measured.table.cache_clear()


def test_the_trainer_resolves_auto_for_its_variant(monkeypatch):
    """validate passes the run's variant: auto is the table's pick for it."""
    seen = []
    real = ops.auto_backend

    def spy(device_type, graph=True, variant=None):
        seen.append((device_type, graph, variant))
        return real(device_type, graph=graph, variant=variant)
    import fastgan.ops as O
    monkeypatch.setattr(O, "auto_backend", spy)
    assert O.resolve_backend("auto", "cpu", graph=False, variant="bigan") == \
        real("cpu", graph=False, variant="bigan")
    assert seen == [("cpu", False, "bigan")]
    order, _ = ops.auto_choice("cpu", False, "bigan")
    avail = ops.available_backends("cpu")
    assert real("cpu", False, "bigan") == next(b for b in order if b in avail)
