"""Running the benchmark plan: each row measured in process or in a child within its budget,
the derived columns (ratios, the per-case summary, the roofline) and the results document."""
from __future__ import annotations

import datetime as _dt
import gc
import sys
import time
from dataclasses import asdict
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .environment import environment
from .matrix import SCHEMA, BenchConfig, Item, case_key, plan
from .paths import make_dataset


def _skip_row(it: Item, reason: str, status: str = "skipped") -> dict:
    from .measure import base_row
    row = base_row({"variant": it.variant, "batch": it.batch, "precision": it.precision,
                    "overrides": it.overrides, "path": it.path})
    row.update(status=status, reason=reason, wall_s=0.0)
    return row


def derive(rows: List[dict]) -> None:
    """Fill the ratio columns: vs eager-reference and vs the best torch.compile of the case."""
    by_case: Dict[Tuple, List[dict]] = {}
    for r in rows:
        by_case.setdefault(case_key(r["variant"], r["batch"], r["precision"],
                                    r.get("overrides")), []).append(r)
    for rs in by_case.values():
        ok = [r for r in rs if r["status"] == "ok" and r.get("it_s")]
        ref = next((r["it_s"] for r in ok if r["path"] == "eager-reference"), None)
        comp = [r["it_s"] for r in ok if r["kind"] == "compile"]
        best_c = max(comp) if comp else None
        for r in rs:
            if r["status"] == "ok" and r.get("it_s"):
                r["x_vs_eager_ref"] = r["it_s"] / ref if ref else None
                r["x_vs_best_compile"] = r["it_s"] / best_c if best_c else None


def summarize(rows: List[dict]) -> List[dict]:
    """Per case: the four numbers issue 5 asks (eager-reference, fastest eager backend, graph on
    the reference backend, fastest graph) with GPU busy %, and the best torch.compile."""
    out = []
    seen = []
    for r in rows:
        k = case_key(r["variant"], r["batch"], r["precision"], r.get("overrides"))
        if k not in seen:
            seen.append(k)
    for k in seen:
        rs = [r for r in rows if case_key(r["variant"], r["batch"], r["precision"],
                                          r.get("overrides")) == k and r["status"] == "ok"]

        def pick(pred):
            cand = [r for r in rs if pred(r)]
            if not cand:
                return None
            best = max(cand, key=lambda r: r["it_s"])
            return {"path": best["path"], "it_s": best["it_s"],
                    "gpu_busy_pct": best.get("gpu_busy_pct"),
                    "nvml_util_pct": best.get("nvml_util_pct")}

        out.append({
            "variant": k[0], "batch": k[1], "precision": k[2], "overrides": dict(k[3]),
            "eager_reference": pick(lambda r: r["path"] == "eager-reference"),
            "eager_fastest": pick(lambda r: r["kind"] == "fastgan" and not r["graph"]),
            "graph_reference": pick(lambda r: r["path"] == "fastgan-reference-graph"),
            "graph_fastest": pick(lambda r: r["kind"] == "fastgan" and r["graph"]),
            "best_compile": pick(lambda r: r["kind"] == "compile"),
        })
    return out


def roofline(rows: List[dict], peaks: Optional[dict], cache: Optional[dict] = None) -> List[dict]:
    from .roofline import roofline_row
    cache = {} if cache is None else cache
    out, seen = [], []
    for r in rows:
        k = case_key(r["variant"], r["batch"], r["precision"], r.get("overrides"))
        if k in seen:
            continue
        seen.append(k)
        ok = [x for x in rows if x["status"] == "ok" and x.get("ms_per_it") and
              case_key(x["variant"], x["batch"], x["precision"], x.get("overrides")) == k]
        best = min(ok, key=lambda x: x["ms_per_it"]) if ok else None
        if k not in cache:
            cache[k] = roofline_row(k[0], k[1], k[2], dict(k[3]), peaks)
        row = dict(cache[k])
        if "error" not in row:
            row["best_path"] = best["path"] if best else None
            row["best_ms"] = best["ms_per_it"] if best else None
            fl = row.get("floor")
            row["measured_over_floor"] = (best["ms_per_it"] / 1e3 / fl["floor_s"]
                                          if best and fl and fl["floor_s"] > 0 else None)
        out.append(row)
    return out


def run_matrix(cfg: BenchConfig, on_update: Optional[Callable[[dict], None]] = None,
               log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
               on_row: Optional[Callable[[dict], None]] = None) -> dict:
    """Run the plan and return the results document (``report.validate`` describes it).
    ``on_update(doc)`` is called after every path, so partial results survive a kill;
    ``on_row(row)`` with each row as it is measured (or skipped for the budget)."""
    from .roofline import device_peaks
    from .telemetry import Nvml

    t_start = time.perf_counter()
    deadline = t_start + cfg.total_budget_s
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch.cuda.is_available() is False")
    # Tiny mode is a smoke test of the benchmark code, not a measurement: one thread keeps it at
    # seconds on a loaded CI machine (two OpenMP threads on two busy cores spin).
    threads = torch.get_num_threads()
    env = environment(cfg.device, 1 if cfg.tiny else None)
    peaks = device_peaks(env.get("device_name")) if device.type == "cuda" else device_peaks(None)
    items = plan(cfg)
    now = _dt.datetime.now(_dt.timezone.utc)
    doc = {"schema": SCHEMA, "created_utc": now.isoformat(timespec="seconds"),
           "date": now.strftime("%Y-%m-%d"), "env": env, "config": cfg.to_dict(),
           "peaks": peaks, "results": [], "roofline": [], "summary": [], "complete": False,
           "wall_s": 0.0}
    rows: Dict[int, dict] = {}
    for it in items:
        if it.skip:
            rows[it.order] = _skip_row(it, it.skip)
    todo = sorted([it for it in items if not it.skip], key=lambda i: (i.priority, i.order))
    nvml = Nvml(device)
    cache: dict = {}

    def publish(final=False):
        ordered = [rows[i.order] for i in items if i.order in rows]
        derive(ordered)
        doc["results"] = ordered
        doc["summary"] = summarize(ordered)
        doc["wall_s"] = time.perf_counter() - t_start
        if final:
            doc["roofline"] = roofline(ordered, peaks, cache)
            doc["complete"] = True
        if on_update is not None:
            on_update(doc)

    if cfg.tiny:
        torch.set_num_threads(1)
        doc["env"]["threads"] = 1
    try:
        _run_items(cfg, todo, rows, deadline, device, nvml, log, publish, on_row)
    finally:
        torch.set_num_threads(threads)
    publish(final=True)
    return doc


def _run_items(cfg, todo, rows, deadline, device, nvml, log, publish, on_row=None) -> None:
    from .measure import cuda_healthy, measure_path
    from .worker import run_isolated
    data_key, data = None, None
    broken = False
    n_total = len(todo)
    for i, it in enumerate(todo, 1):
        left = deadline - time.perf_counter()
        # A compile path runs in a child killed at its budget; an in-process path cannot be
        # interrupted (a Triton JIT at a new shape can take 30 s), so it needs some room.
        need = 20.0 if it.path.startswith("compile-") else 10.0
        if left < need:
            rows[it.order] = _skip_row(
                it, f"budget: {max(left, 0):.0f} s left of the run's "
                    f"{cfg.total_budget_s:.0f} s")
            if on_row is not None:
                on_row(rows[it.order])
            continue
        spec = {"variant": it.variant, "batch": it.batch, "precision": it.precision,
                "overrides": it.overrides, "path": it.path, "device": cfg.device,
                "seed": cfg.seed, "budget_s": min(it.budget_s, left), "profile": cfg.profile,
                "timing": asdict(cfg.timing)}
        if cfg.tiny:
            spec["threads"] = 1
        if it.isolate or broken:
            if device.type == "cuda":
                data, data_key = None, None
                gc.collect()
                torch.cuda.empty_cache()
            row = run_isolated(spec, timeout_s=min(it.budget_s, left))
        else:
            key = (it.variant, it.batch, tuple(sorted(it.overrides.items())))
            if key != data_key:
                data = None
                gc.collect()
                from fastgan.variants import get_variant
                from .paths import variant_overrides
                v = get_variant(it.variant, batch_size=it.batch, **variant_overrides(it.overrides))
                data = make_dataset(v, v.batch_sizes(it.batch)[0], device, cfg.seed)
                data_key = key
            row = measure_path(spec, data=data, nvml=nvml)
            if row["status"] == "error" and not cuda_healthy(device):
                broken = True
                data, data_key = None, None
                log("fastgan bench: the CUDA context is broken; the remaining paths run in "
                    "child processes")
        rows[it.order] = row
        log(_progress(i, n_total, row))
        if on_row is not None:
            on_row(row)
        publish()


def _progress(i: int, n: int, r: dict) -> str:
    bf = " bf16" if r["precision"] == "bf16" else ""
    what = f"[{i:>3}/{n}] {r['variant']} {r['batch']}{bf} {r['path']}"
    if r["status"] == "ok":
        extra = f" (compile/capture {r['compile_s']:.1f} s)" if (r.get("compile_s") or 0) > 1 \
            else ""
        return f"{what}: {r['it_s']:,.1f} it/s, {r['ms_per_it']:.3f} ms/it{extra} " \
               f"[{r['wall_s']:.1f} s]"
    return f"{what}: {r['status']}: {r['reason']} [{(r.get('wall_s') or 0):.1f} s]"
