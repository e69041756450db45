"""Issue 20's targets checked against one bench document: one line each, met, missed or not
measured, with the number behind it (never a number the document does not hold). Printed by
``fastgan.benchmark.publish`` into the run's .md and the README's Latest results.

The graph row of a variant is its auto backend's (:func:`auto_pick`, the measured pick for the
variant in a CUDA graph), else its fastest graph row; the eager row is the eager pick's.
"""
from __future__ import annotations

from typing import Dict, List, Optional

# (variant, seed batch): the throughput targets per variant
US_GOAL, US_MILESTONE = 60.0, 120.0          # mlp 64, µs per iteration
X_EAGER = {"bigan": (32, 15.0), "gancls": (10, 15.0), "convgan": (16, 15.0)}
X_COMPILE = 2.0                                # over the best torch.compile mode, same case
MLP_KERNELS = 30
ROOFLINE = (("mlp", 1024), ("mlp", 8192), ("convgan", 256))


def _rows(doc: dict, variant: str, batch: int) -> List[dict]:
    return [r for r in doc["results"] if r["variant"] == variant and r["batch"] == batch
            and r.get("precision", "fp32") == "fp32" and not r.get("overrides")
            and r["status"] == "ok" and r.get("it_s")]


def auto_pick(doc: dict, variant: str, graph: bool) -> Optional[str]:
    """The backend auto runs for ``variant`` in this mode on the document's device: as the run
    recorded it (``env["auto"]``), else (documents older than that record) the first of the
    run's complete backends in auto's order for that device (fastgan/backends/measured.py)."""
    env = doc.get("env") or {}
    got = ((env.get("auto") or {}).get(variant) or {}).get("graph" if graph else "eager")
    if got or not env.get("device"):
        return got
    from fastgan import backends
    order, _ = backends.auto_choice(env["device"], graph, variant, env.get("device_name"))
    return next((b for b in order if b in (env.get("backends") or order)), None)


def _pick(doc: dict, rows: List[dict], variant: str, graph: bool) -> Optional[dict]:
    auto = auto_pick(doc, variant, graph)
    path = f"fastgan-{auto}" + ("-graph" if graph else "") if auto else None
    mine = [r for r in rows if r["path"] == path]
    if mine:
        return mine[0]
    if not graph:
        return None   # the eager target is the auto pick's, not the fastest backend's
    cands = [r for r in rows if r["kind"] == "fastgan" and r.get("graph")]
    return max(cands, key=lambda r: r["it_s"]) if cands else None


def _best(rows: List[dict], pred) -> Optional[dict]:
    c = [r for r in rows if pred(r)]
    return max(c, key=lambda r: r["it_s"]) if c else None


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _x_compile(rows: List[dict], graph: Optional[dict]) -> str:
    comp = _best(rows, lambda r: r["kind"] == "compile")
    if graph is None or comp is None:
        return f"x best torch.compile >= {X_COMPILE:g}: not measured"
    modes = sorted({r["path"].replace("compile-", "") for r in rows if r["kind"] == "compile"})
    x = graph["it_s"] / comp["it_s"]
    verdict = _verdict(x >= X_COMPILE)
    if x >= X_COMPILE and "reduce-overhead" not in modes:   # the target includes it
        verdict = "met over the modes measured; reduce-overhead not measured"
    return (f"{x:.2f}x the best torch.compile ({comp['path']}, of {', '.join(modes)}; target "
            f">= {X_COMPILE:g}): {verdict}")


def target_lines(doc: dict) -> List[str]:
    out: List[str] = []
    rows = _rows(doc, "mlp", 64)
    g = _pick(doc, rows, "mlp", True)
    if g is None:
        out.append("- mlp 64 in a CUDA graph: not measured")
    else:
        us = g["ms_per_it"] * 1e3
        state = ("met" if us <= US_GOAL else "milestone met, goal MISSED" if us <= US_MILESTONE
                 else "MISSED")
        out.append(f"- mlp 64 ({g['path']}): {us:.0f} us per iteration (goal <= {US_GOAL:g}, "
                   f"milestone <= {US_MILESTONE:g}): {state}; " + _x_compile(rows, g))
        k = g.get("kernels_per_it")
        out.append(f"- mlp 64 kernels per iteration ({g.get('kernels_source', 'profiler')}): "
                   + (f"{k:.0f} (target <= {MLP_KERNELS}): {_verdict(k <= MLP_KERNELS)}"
                      if k else "not measured"))
    for v, (b, want) in X_EAGER.items():
        rows = _rows(doc, v, b)
        g = _pick(doc, rows, v, True)
        ref = _best(rows, lambda r: r["path"] == "eager-reference")
        if g is None or ref is None:
            out.append(f"- {v} {b}: not measured")
            continue
        x = g["it_s"] / ref["it_s"]
        out.append(f"- {v} {b} ({g['path']}): {x:.1f}x eager PyTorch (target >= {want:g}): "
                   f"{_verdict(x >= want)}; " + _x_compile(rows, g))
    eager: Dict[str, str] = {}
    from fastgan.variants import VARIANTS
    for v in sorted({r["variant"] for r in doc["results"]} & set(VARIANTS)):
        rows = _rows(doc, v, VARIANTS[v].hyper.batch_size)
        e, ref = _pick(doc, rows, v, False), _best(rows, lambda r: r["path"] == "eager-reference")
        if e is not None and ref is not None:
            x = e["it_s"] / ref["it_s"]
            eager[v] = f"{v} {x:.2f}x ({e['backend']})" + ("" if x >= 1.0 else " MISSED")
    out.append("- eager, auto backend, >= 1.0x eager PyTorch at the seed batch: "
               + (", ".join(eager.values()) if eager else "not measured"))
    floors = {(x["variant"], x["batch"]): x for x in doc.get("roofline") or []
              if "error" not in x and x.get("precision", "fp32") == "fp32"}
    rl = [f"{v} {b} {floors[(v, b)]['measured_over_floor']:.1f}x the floor"
          for v, b in ROOFLINE if floors.get((v, b), {}).get("measured_over_floor")]
    out.append("- larger batches with their roofline ratio: "
               + (", ".join(rl) if rl else "not measured"))
    return out
