"""The results document as markdown (the table the README shows) and JSON, and its schema."""
from __future__ import annotations

import json
import math
import os
from typing import List, Optional

COLUMNS = ["variant", "batch", "path", "it/s", "img/s", "x eager-ref", "x best compile",
           "ms/it", "peak MiB", "W", "J/1k img", "GPU busy %", "kernels/it", "compile/capture s",
           "status"]

# key -> allowed types, for every result row (None allowed where noted by the NoneType)
_NUM = (int, float, type(None))
ROW_SCHEMA = {
    "variant": (str,), "batch": (int,), "precision": (str,), "overrides": (dict,),
    "path": (str,), "kind": (str,), "backend": (str,), "compile_mode": (str, type(None)),
    "graph": (bool,), "status": (str,), "reason": (str, type(None)),
    "it_s": _NUM, "img_s": _NUM, "ms_per_it": _NUM, "spread_pct": _NUM, "reps": _NUM,
    "iters_per_rep": _NUM, "x_vs_eager_ref": _NUM, "x_vs_best_compile": _NUM,
    "peak_mem_mib": _NUM, "mean_power_w": _NUM, "energy_j_per_1k_img": _NUM,
    "nvml_util_pct": _NUM, "gpu_busy_pct": _NUM, "kernels_per_it": _NUM,
    "gpu_ms_per_it": _NUM, "compile_s": _NUM, "build_s": _NUM, "wall_s": _NUM,
}
DOC_SCHEMA = {"schema": (str,), "created_utc": (str,), "date": (str,), "env": (dict,),
              "config": (dict,), "peaks": (dict, type(None)), "results": (list,),
              "roofline": (list,), "summary": (list,), "complete": (bool,)}
ENV_KEYS = ("device", "device_name", "gpu_slug", "torch", "triton", "python", "backends")
STATUSES = ("ok", "skipped", "error")


def validate(doc: dict) -> List[str]:
    """Problems with a results document (empty list: it follows the schema)."""
    errs = []
    for k, types in DOC_SCHEMA.items():
        if k not in doc:
            errs.append(f"missing key {k!r}")
        elif not isinstance(doc[k], types):
            errs.append(f"{k!r} is {type(doc[k]).__name__}")
    if errs:
        return errs
    if doc["schema"] != "fastgan-bench/1":
        errs.append(f"unknown schema {doc['schema']!r}")
    for k in ENV_KEYS:
        if k not in doc["env"]:
            errs.append(f"env lacks {k!r}")
    for i, r in enumerate(doc["results"]):
        for k, types in ROW_SCHEMA.items():
            if k not in r:
                errs.append(f"results[{i}] lacks {k!r}")
            elif isinstance(r[k], bool) and bool not in types:
                errs.append(f"results[{i}].{k} is bool")
            elif not isinstance(r[k], types):
                errs.append(f"results[{i}].{k} is {type(r[k]).__name__}")
        if r.get("status") not in STATUSES:
            errs.append(f"results[{i}].status is {r.get('status')!r}")
        elif r["status"] == "ok":
            if not (isinstance(r.get("it_s"), (int, float)) and r["it_s"] > 0):
                errs.append(f"results[{i}] is ok without a positive it_s")
        elif not r.get("reason"):
            errs.append(f"results[{i}] is {r['status']} without a reason")
    for i, r in enumerate(doc["roofline"]):
        if "error" not in r:
            for k in ("variant", "batch", "flops", "bytes", "gflop_per_iter", "min_mb_per_iter"):
                if k not in r:
                    errs.append(f"roofline[{i}] lacks {k!r}")
    return errs


def write_json(doc: dict, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_clean(doc), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def append_jsonl(path: str, record: dict) -> None:
    """One JSON line appended and flushed to disk: what a killed run leaves stays readable."""
    with open(path, "a") as f:
        f.write(json.dumps(_clean(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _clean(x):
    """JSON without NaN/inf (they become null)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


# ---- number formatting --------------------------------------------------------------------------

def fnum(x: Optional[float], digits: int = 3) -> str:
    """``digits`` significant digits, thousands separated, no exponent; a dash for None."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    ax = abs(x)
    if ax >= 10 ** (digits - 1):
        return f"{x:,.0f}"
    if ax == 0:
        return "0"
    dec = max(0, digits - 1 - int(math.floor(math.log10(ax))))
    return f"{x:,.{dec}f}"


def fratio(x: Optional[float]) -> str:
    if x is None:
        return "-"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def variant_label(r: dict) -> str:
    ov = r.get("overrides") or {}
    if not ov:
        return r["variant"]
    return f"{r['variant']} (" + ", ".join(f"{k}={v}" for k, v in sorted(ov.items())) + ")"


def status_cell(r: dict) -> str:
    if r["status"] == "ok":
        s = "ok"
        if r.get("spread_pct") is not None and r["spread_pct"] > 5:
            s += f" ±{r['spread_pct'] / 2:.0f}%"
        if r.get("finite") is False:
            s += " (losses not finite)"
        if r.get("reason"):
            s += f" ({r['reason']})"
        return s
    reason = str(r.get("reason") or "")
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return f"{r['status']}: {reason}".replace("|", "/")


def row_cells(r: dict) -> List[str]:
    ok = r["status"] == "ok"
    batch = f"{r['batch']}" + (" bf16" if r.get("precision") == "bf16" else "")
    if not ok:
        return [variant_label(r), batch, r["path"]] + ["-"] * 11 + [status_cell(r)]
    return [variant_label(r), batch, r["path"], fnum(r["it_s"], 4), fnum(r["img_s"], 4),
            fratio(r.get("x_vs_eager_ref")), fratio(r.get("x_vs_best_compile")),
            fnum(r["ms_per_it"], 3), fnum(r.get("peak_mem_mib"), 3),
            fnum(r.get("mean_power_w"), 3), fnum(r.get("energy_j_per_1k_img"), 3),
            fnum(r.get("gpu_busy_pct"), 2),
            f"{r['kernels_per_it']:.0f}" if r.get("kernels_per_it") else "-",
            fnum(r.get("compile_s"), 2), status_cell(r)]


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    last = len(header) - 1
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < 3 or i == last else "--:" for i in range(len(header)))
           + "|"]
    out += ["| " + " | ".join(c) + " |" for c in rows]
    return out


def header_lines(doc: dict) -> List[str]:
    e, c = doc["env"], doc["config"]
    mode = "tiny (CPU CI)" if c.get("tiny") else ("quick" if c.get("quick") else "full")
    nv = e.get("nvml") or {}
    parts = [f"torch {e.get('torch')}", f"triton {e.get('triton')}"]
    if e.get("cuda"):
        parts.append(f"CUDA {e['cuda']}")
    if e.get("cudnn"):
        parts.append(f"cuDNN {e['cudnn']}")
    if nv.get("driver"):
        parts.append(f"driver {nv['driver']}")
    parts += [f"Python {e.get('python')}", f"fastgan {e.get('fastgan')}",
              f"backends on {'cuda' if str(e.get('device', '')).startswith('cuda') else 'cpu'}:"
              f" {', '.join(e.get('backends') or [])} (auto: {e.get('auto_backend')})",
              f"{mode} mode"]
    t = c.get("timing") or {}
    lines = [f"### fastgan benchmark: {e.get('device_name')}, {doc['date']}", "",
             " · ".join(parts), "",
             ("fp32 parameters" + (", TF32 matmuls/convs" if e.get("tf32") else "")
              + (", cudnn.benchmark on" if e.get("cudnn_benchmark") else "")
              + " (bf16 rows: autocast). Each row: median over "
              f"{t.get('reps')} blocks of iterations ("
              + (f"each block about {t.get('block_s')} s, " if t.get("block_s")
                 else "one iteration each, ")
              + ("CUDA events" if e.get("tf32") else "host clock after synchronize")
              + f") after {t.get('warmup')} warm-up iterations; fresh random batches from "
              "uint8 random images resident on the device; images/s = iterations/s × batch. "
              "x eager-ref / x best compile: speed over the eager-reference row and the fastest "
              "torch.compile row of the same batch. Peak MiB: torch.cuda.max_memory_allocated "
              "(dataset included). W and J/1k img: NVML energy over the timed blocks. GPU busy: "
              "kernel time per iteration (torch.profiler) over the iteration time. kernels/it: "
              "kernel launches per iteration from the profiler on a GPU; on a CPU a proxy, the "
              "dispatch-level count of the device work (fastgan.benchmark.kernel_count). "
              "compile/capture s: the first iterations' cost over the steady state "
              "(torch.compile, Triton JIT/autotune, CUDA-graph capture). ±: half the "
              "interquartile spread of the blocks when above 5%."), ""]
    return lines


def roofline_lines(doc: dict) -> List[str]:
    pk = doc.get("peaks")
    lines = ["#### Roofline (one iteration = D step + G step, as the engine runs them)", ""]
    if pk:
        lines.append(f"Peaks used: {pk['tf32'] / 1e12:.0f} TFLOP/s tf32, "
                     f"{pk['bf16'] / 1e12:.0f} TFLOP/s bf16, {pk['bytes'] / 1e12:.1f} TB/s "
                     f"({pk.get('source', '')}). Floor = max(FLOPs / peak, min bytes / "
                     "bandwidth). FLOPs: matmul/conv forward + backward counted on the "
                     "variants' layers (fastgan.benchmark.roofline); min bytes: Adam and gradient "
                     "traffic, weights, each activation (and its gradient) written and read once.")
    else:
        lines.append("No peak numbers for this device (set FASTGAN_PEAK_TFLOPS and "
                     "FASTGAN_PEAK_TBPS for a floor). FLOPs: matmul/conv forward + backward; "
                     "min bytes: Adam/gradient traffic, weights, activations once.")
    lines.append("")
    for r in doc.get("roofline", []):
        lab = variant_label(r) + f" @ {r['batch']} {r['precision']}"
        if "error" in r:
            lines.append(f"- {lab}: counter failed: {r['error']}")
            continue
        s = (f"- {lab}: {fnum(r['gflop_per_iter'], 3)} GFLOP/iter (D step "
             f"{fnum(r['flops_d_step'] / 1e9, 3)} + G step {fnum(r['flops_g_step'] / 1e9, 3)}), "
             f"min {fnum(r['min_mb_per_iter'], 3)} MB/iter")
        if r.get("floor"):
            fl = r["floor"]
            s += (f" → floor {fnum(fl['floor_s'] * 1e6, 3)} µs ({fl['bound']}-bound; compute "
                  f"{fnum(fl['compute_s'] * 1e6, 3)} µs, memory "
                  f"{fnum(fl['memory_s'] * 1e6, 3)} µs)")
        if r.get("best_ms"):
            s += f"; best measured {r['best_path']} {fnum(r['best_ms'], 3)} ms"
            if r.get("measured_over_floor"):
                s += f" = {r['measured_over_floor']:.1f}x the floor"
        lines.append(s)
    return lines


def summary_lines(doc: dict) -> List[str]:
    hdr = ["variant", "batch", "eager-reference it/s (busy)", "fastest eager it/s (busy)",
           "graph, reference backend it/s (busy)", "fastest graph it/s (busy)",
           "best torch.compile it/s"]
    rows = []

    def cell(x, name=False):
        if not x:
            return "-"
        s = fnum(x["it_s"], 4)
        if name:
            s += f" {x['path']}"
        if x.get("gpu_busy_pct") is not None:
            s += f" ({x['gpu_busy_pct']:.0f}%)"
        elif x.get("nvml_util_pct") is not None:
            s += f" (NVML {x['nvml_util_pct']:.0f}%)"
        return s

    for s in doc.get("summary", []):
        if not any(s.get(k) for k in ("eager_reference", "eager_fastest", "graph_reference",
                                      "graph_fastest", "best_compile")):
            continue
        bf = " bf16" if s["precision"] == "bf16" else ""
        rows.append([variant_label(s), f"{s['batch']}{bf}",
                     cell(s["eager_reference"]), cell(s["eager_fastest"], True),
                     cell(s["graph_reference"]), cell(s["graph_fastest"], True),
                     cell(s["best_compile"], True)])
    out = ["#### Eager vs graph, reference vs fastest backend", ""]
    out += ["| " + " | ".join(hdr) + " |", "|---|---|" + "--:|" * (len(hdr) - 2)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def top_kernel_lines(doc: dict) -> List[str]:
    """Where the GPU time goes, per measured row of the variants above: the kernels with the
    most time per iteration (name, calls, µs, share of the kernel time), from the profiler."""
    from fastgan.variants import VARIANTS
    # where the kernels themselves, not launches, are the time (``BenchSettings.top_kernels``)
    shown = [v for v in VARIANTS if VARIANTS[v].bench_settings().top_kernels]
    out = []
    for r in doc["results"]:
        if r["status"] != "ok" or not r.get("top_kernels") or r["variant"] not in shown:
            continue
        bf = " bf16" if r["precision"] == "bf16" else ""
        out += ["", f"#### Top kernels: {variant_label(r)} {r['batch']}{bf} {r['path']} "
                    f"({fnum(r.get('gpu_ms_per_it'))} ms of kernels per iteration)", "",
                "| kernel | calls/it | µs/it | share |", "|---|--:|--:|--:|"]
        for k in r["top_kernels"]:
            name = k["name"].replace("|", "/")
            name = name if len(name) <= 90 else name[:87] + "..."
            out.append(f"| `{name}` | {fnum(k['calls_per_it'])} | {fnum(k['us_per_it'])} | "
                       f"{k['share_pct']:.1f}% |")
    return out


def to_markdown(doc: dict) -> str:
    """The README table: every row, except those the quick mode leaves out by rule (counted in
    a note under the table; the JSON keeps them all)."""
    lines = header_lines(doc)
    shown, left_out, not_reached = [], {}, []
    for r in doc["results"]:
        reason = str(r.get("reason") or "")
        if r["status"] == "skipped" and reason.startswith("quick mode"):
            left_out[reason] = left_out.get(reason, 0) + 1
        elif r["status"] == "skipped" and reason.startswith("budget:") and "left of" in reason:
            not_reached.append(r)
        else:
            shown.append(r)
    lines += _table(COLUMNS, [row_cells(r) for r in shown])
    if not_reached:
        lines += ["", "Not reached within the run's time budget (rows \"skipped: budget\" in the "
                  "JSON): " + ", ".join(
                      f"{r['variant']} {r['batch']}{' bf16' if r['precision'] == 'bf16' else ''}"
                      f" {r['path']}" for r in not_reached) + "."]
    if left_out:
        lines += ["", "Left out by the quick mode: " + "; ".join(
            f"{n} rows ({reason[len('quick mode: '):]})" for reason, n in left_out.items())
            + "."]
    lines.append("")
    lines += summary_lines(doc)
    lines.append("")
    lines += roofline_lines(doc)
    lines += top_kernel_lines(doc)
    if not doc.get("complete"):
        lines += ["", "_Partial results: the run had not finished when this was written._"]
    lines += ["", f"_{len(doc['results'])} rows, {sum(r['status'] == 'ok' for r in doc['results'])}"
              f" measured, in {doc.get('wall_s', 0):.0f} s._", ""]
    return "\n".join(lines)


def write_markdown(doc: dict, path: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(to_markdown(doc))
    os.replace(tmp, path)
