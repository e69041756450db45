"""The benchmark matrix: which (variant, batch, precision) × path runs, in what order, within
which budgets; running it; the results document that ``report.py`` prints.

Cases (GPU): each variant at its seed batch, 4x and 16x (mlp also 8192), fp32 (TF32 math);
in quick mode dcgan 512 also in bf16. CPU (CI) quick = tiny mode: one small batch per variant
(dcgan at 32x32 with 16 filters), a few iterations, so that the whole matrix runs in seconds.

Paths (``paths.py``): eager-reference, compile-default / -reduce-overhead / -max-autotune,
fastgan-<backend> and fastgan-<backend>-graph for each op backend the registry knows; a backend
that does not load, a graph on CPU, Triton's interpreter on CPU, or a torch.compile the mode's
rules leave out becomes a row that says why ("skipped: ...").

Order: the most important rows first, so that a run cut short by its budget still answers the
main questions: (1) every variant at its seed batch, without torch.compile; (2) compile-default
and (3) compile-reduce-overhead for mlp and dcgan; (4) 16x the seed batch (and mlp 8192) for
eager-reference, fastgan-reference-graph and the auto backend eager and graphed;
(5) compile-max-autotune for mlp and dcgan; (6) the 4x batches; (7-9) the other variants'
compiles; (10) bf16; (11) the other backends at larger batches; (12) compiles at larger batches.
Triton's first use of a shape (JIT + autotuning, 5-30 s on an H100) is the largest cost of the
quick matrix after torch.compile; it shows in the compile/capture column.
"""
from __future__ import annotations

import datetime as _dt
import gc
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .paths import make_dataset, parse_path, path_names, select_paths

SCHEMA = "fastgan-bench/1"

GPU_BATCHES = {"mlp": [64, 256, 1024, 8192], "bigan": [32, 128, 512], "gancls": [10, 40, 160],
               "convgan": [16, 64, 256], "dcgan": [128, 512, 2048]}
# CPU tiny mode (CI): small batches, dcgan at 32x32 with 8 filters: seconds for the matrix.
TINY = {"mlp": (16, {}), "bigan": (8, {}), "gancls": (4, {}), "convgan": (4, {}),
        "dcgan": (4, {"image_size": 32, "ngf": 8, "ndf": 8})}
HEAVY = ("mlp", "dcgan")   # the variants with speed targets of their own: compiled first


@dataclass
class Timing:
    warmup: int = 5
    reps: int = 7
    block_s: float = 0.1
    min_iters: int = 1
    max_iters: int = 100000


@dataclass
class BenchConfig:
    device: str
    quick: bool = False
    variants: List[str] = field(default_factory=list)
    batch_sizes: Optional[List[int]] = None
    paths: Optional[str] = None
    total_budget_s: float = math.inf
    timing: Timing = field(default_factory=Timing)
    budgets: Dict[str, float] = field(default_factory=dict)   # per path kind, seconds
    profile: bool = True
    tiny: bool = False
    seed: int = 0
    isolate_compile: bool = True
    compile_on_cpu: bool = False
    gpu_check: bool = False     # make gpu-check's order (``check_tier``), on top of quick

    def to_dict(self) -> dict:
        d = asdict(self)
        d["total_budget_s"] = None if not math.isfinite(self.total_budget_s) else \
            self.total_budget_s
        return d


def make_config(device: Optional[str] = None, quick: bool = False,
                variants: Optional[List[str]] = None, batch_sizes: Optional[List[int]] = None,
                paths: Optional[str] = None, budget_s: Optional[float] = None,
                tiny: Optional[bool] = None, gpu_check: bool = False) -> BenchConfig:
    """The configuration ``fastgan bench`` uses for these arguments on this machine."""
    from fastgan.variants import VARIANTS
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    vs = list(variants) if variants else list(VARIANTS)
    for v in vs:
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    for b in batch_sizes or []:
        if b < 2:
            raise ValueError(f"--batch-size must be at least 2, not {b}")
    cpu = not dev.startswith("cuda")
    quick = quick or gpu_check
    tiny = (cpu and quick) if tiny is None else tiny
    if cpu:
        timing = Timing(warmup=1, reps=2, block_s=0.0) if tiny else Timing(2, 5, 0.5)
        budgets = {"eager": 20.0 if tiny else 120.0, "compile": 300.0, "max-autotune": 600.0}
        default_total = 120.0 if quick else math.inf
    elif quick:
        timing = Timing(warmup=5, reps=7, block_s=0.1)
        budgets = {"eager": 60.0, "compile": 100.0, "max-autotune": 120.0}
        default_total = 420.0
    else:
        timing = Timing(warmup=10, reps=15, block_s=0.3)
        budgets = {"eager": 120.0, "compile": 300.0, "max-autotune": 600.0}
        default_total = math.inf
    env_budget = os.environ.get("FASTGAN_BENCH_BUDGET_S")
    total = float(budget_s if budget_s is not None else
                  (env_budget if env_budget else default_total))
    return BenchConfig(device=dev, quick=quick, variants=vs, batch_sizes=batch_sizes,
                       paths=paths, total_budget_s=total, timing=timing, budgets=budgets,
                       profile=not cpu, tiny=tiny, gpu_check=gpu_check,
                       compile_on_cpu=os.environ.get("FASTGAN_BENCH_COMPILE_CPU") == "1")


# ---- the plan ---------------------------------------------------------------------------------

@dataclass
class Item:
    variant: str
    batch: int
    precision: str
    overrides: Dict[str, object]
    path: str
    priority: int
    budget_s: float
    isolate: bool = False
    skip: Optional[str] = None
    order: int = 0

    @property
    def case(self) -> Tuple:
        return case_key(self.variant, self.batch, self.precision, self.overrides)


def case_key(variant, batch, precision, overrides) -> Tuple:
    return (variant, int(batch), precision, tuple(sorted((overrides or {}).items())))


def backend_rows(device_type: str) -> Tuple[List[str], Dict[str, str]]:
    """(backends to list as paths, {backend: why it is skipped}) on ``device_type``."""
    from fastgan import ops
    avail = ops.available_backends(device_type)
    listed, why = [], {}
    for b in ops.BACKENDS:
        listed.append(b)
        if device_type == "cpu" and b == "triton":
            why[b] = ("Triton on CPU is its interpreter (TRITON_INTERPRET=1, for tests, not "
                      "speed): benchmark it on a GPU")
            continue
        if b in avail:
            continue
        if not ops.ensure_loaded(b):
            err = ops.load_error(b) or "does not load"
            why[b] = f"backend {b} unavailable: {err.splitlines()[0][:120]}"
        else:
            missing = [op for op in ops.OPS if not ops.has_impl(op, b, device_type)]
            why[b] = f"backend {b} has no {', '.join(missing)} on {device_type}"
    for b in avail:   # backends registered by plug-ins
        if b not in listed:
            listed.append(b)
    return listed, why


# Priorities: lower runs first (see the module docstring).
(P_SEED, P_COMPILE_HEAVY, P_REDUCE_HEAVY, P_LARGE_16X, P_AUTOTUNE_HEAVY, P_LARGE_4X,
 P_COMPILE_OTHERS, P_REDUCE_OTHERS, P_AUTOTUNE_OTHERS, P_BF16, P_LARGER_REST,
 P_COMPILE_LARGER) = range(1, 13)


def plan(cfg: BenchConfig) -> List[Item]:
    """Every row of the matrix with its priority, budget and skip reason (see module doc)."""
    from fastgan import ops
    from fastgan.variants import get_variant
    dev_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    backends, why = backend_rows(dev_type)
    all_paths = select_paths(path_names(backends), cfg.paths)
    auto = ops.auto_backend(dev_type)
    cases: List[Tuple[str, int, str, dict, bool]] = []   # variant, batch, precision, ovr, seed?
    for v in cfg.variants:
        seed_b = get_variant(v).hyper.batch_size
        if cfg.batch_sizes:
            ovr = TINY[v][1] if cfg.tiny else {}
            cases += [(v, b, "fp32", ovr, True) for b in cfg.batch_sizes]
        elif cfg.tiny:
            cases.append((v, TINY[v][0], "fp32", TINY[v][1], True))
        elif dev_type == "cpu":
            cases.append((v, seed_b, "fp32", {}, True))
        else:
            cases += [(v, b, "fp32", {}, b == seed_b) for b in GPU_BATCHES.get(v, [seed_b])]
    if dev_type == "cuda" and not cfg.batch_sizes:
        extra = [("dcgan", 512)] if cfg.quick else [("dcgan", 512), ("mlp", 8192)]
        if cfg.gpu_check:
            extra = [("dcgan", 128)] + extra
        cases += [(v, b, "bf16", {}, False) for v, b in extra if v in cfg.variants]

    items: List[Item] = []
    for (v, b, prec, ovr, seed) in cases:
        heavy = v in HEAVY
        sizes = sorted(c[1] for c in cases if c[0] == v and c[2] == prec)
        largest = b == sizes[-1]
        # Larger-batch tiers: 16x the seed (and mlp's 8192) before 4x.
        big = not seed and (largest or b >= 16 * get_variant(v).hyper.batch_size)
        for path in all_paths:
            p = parse_path(path)
            skip, isolate = None, False
            kind = p["kind"]
            budget = cfg.budgets.get("eager", 60.0)
            if kind == "compile":
                isolate = cfg.isolate_compile
                mode = p["mode"]
                budget = cfg.budgets.get("max-autotune" if mode == "max-autotune"
                                         else "compile", 300.0)
                prio = {"default": P_COMPILE_HEAVY if heavy else P_COMPILE_OTHERS,
                        "reduce-overhead": P_REDUCE_HEAVY if heavy else P_REDUCE_OTHERS,
                        "max-autotune": P_AUTOTUNE_HEAVY if heavy else P_AUTOTUNE_OTHERS}[mode]
                if dev_type == "cpu":
                    if mode == "reduce-overhead":
                        skip = "reduce-overhead is torch.compile with CUDA graphs: CUDA only"
                    elif cfg.tiny or (cfg.quick and not cfg.compile_on_cpu):
                        skip = ("torch.compile on CPU generates C++ (minutes on 2 cores): not in "
                                "tiny/quick mode; run without --quick or set "
                                "FASTGAN_BENCH_COMPILE_CPU=1")
                    elif mode == "max-autotune" and not cfg.compile_on_cpu:
                        skip = "max-autotune on CPU: set FASTGAN_BENCH_COMPILE_CPU=1 to run it"
                if skip is None and prec == "bf16" and cfg.quick:
                    skip = "quick mode: bf16 rows without torch.compile"
                if skip is None and not seed:
                    if cfg.quick:
                        skip = "quick mode: torch.compile only at the seed batch"
                    elif mode == "max-autotune" and not largest:
                        skip = "max-autotune only at the seed and the largest batch"
                    prio = P_COMPILE_LARGER
                if skip is None and mode == "max-autotune" and cfg.quick and not heavy:
                    skip = "quick mode: max-autotune only for mlp and dcgan at the seed batch"
            else:
                b_name = p["backend"]
                if kind == "fastgan" and b_name in why:
                    skip = why[b_name]
                if p["graph"] and dev_type != "cuda":
                    skip = "CUDA graphs need a CUDA GPU"
                main_path = (kind == "eager-reference" or b_name == auto
                             or (b_name == "reference" and p["graph"]))
                if seed:
                    prio = P_SEED
                elif main_path:
                    prio = P_LARGE_16X if big else P_LARGE_4X
                else:
                    prio = P_LARGER_REST
                    if cfg.quick:
                        skip = skip or ("quick mode: larger batches only for eager-reference, "
                                        "fastgan-reference-graph and the auto backend")
            if prec == "bf16":
                prio = P_BF16
                if cfg.quick and kind == "fastgan" and p["backend"] not in ("reference", auto):
                    skip = skip or "quick mode: bf16 only for the reference and auto backends"
            if cfg.gpu_check:
                prio = 100 * check_tier(v, b, prec, p, seed, auto) + prio
            items.append(Item(v, b, prec, dict(ovr), path, prio, budget, isolate, skip,
                              order=len(items)))
    return items


# make gpu-check's tiers (the order of its questions): (1) every variant at its seed batch,
# eager-reference, the auto backend eager and every backend graphed; (2) torch.compile default
# and reduce-overhead there; (3) dcgan at 128 and 512 in fp32 and bf16; (4) the rest of --quick.
(T_SEED, T_COMPILE, T_DCGAN, T_REST) = range(1, 5)


def check_tier(variant: str, batch: int, precision: str, p: dict, seed: bool,
               auto: Optional[str]) -> int:
    kind = p["kind"]
    main = kind == "eager-reference" or (kind == "fastgan" and (p["graph"]
                                                                 or p["backend"] == auto))
    if seed and precision == "fp32":
        if main:
            return T_SEED
        if kind == "compile" and p["mode"] in ("default", "reduce-overhead"):
            return T_COMPILE
    if variant == "dcgan" and batch in (128, 512) and kind != "compile" and (
            main and (not p["graph"] or p["backend"] in ("reference", auto))):
        return T_DCGAN
    return T_REST


# ---- environment ------------------------------------------------------------------------------

def gpu_slug(name: Optional[str] = None) -> str:
    """A short file-name-safe name of the GPU: "NVIDIA H100 80GB HBM3" -> "h100"; "cpu"."""
    if name is None:
        if not torch.cuda.is_available():
            return "cpu"
        name = torch.cuda.get_device_name(0)
    words = [w for w in name.lower().replace("_", " ").replace("-", " ").split()
             if w not in ("nvidia", "geforce", "tesla", "quadro")]
    out = []
    for w in words:
        out.append("".join(c for c in w if c.isalnum()))
        if any(c.isdigit() for c in w):
            break
    return "-".join(x for x in out if x) or "gpu"


def environment(device: str, threads: Optional[int] = None) -> dict:
    """The machine and software of a run; ``threads``: the CPU threads it runs with (default:
    torch's current setting)."""
    from fastgan import __version__, ops
    dev = torch.device(device)
    env = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "fastgan": __version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "triton": None, "cudnn": None}
    try:
        import triton
        env["triton"] = triton.__version__
    except Exception as e:
        env["triton"] = f"not importable ({type(e).__name__})"
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env.update(device_name=p.name, gpu_slug=gpu_slug(p.name),
                   sm=f"{p.major}.{p.minor}", sms=p.multi_processor_count,
                   memory_gib=round(p.total_memory / 2**30, 1),
                   cudnn=torch.backends.cudnn.version())
        from .telemetry import Nvml
        env["nvml"] = Nvml(dev).info()
    else:
        n = threads or torch.get_num_threads()
        env.update(device_name=f"CPU ({platform.processor() or platform.machine()}, "
                               f"{n} thread{'s' if n != 1 else ''})",
                   gpu_slug="cpu", nvml={"available": False, "error": "CPU run"})
    dt = dev.type
    env["backends"] = ops.available_backends(dt)
    env["auto_backend"] = ops.auto_backend(dt)
    env["backend_errors"] = {b: ops.load_error(b) for b in ops.BACKENDS if ops.load_error(b)}
    env["tf32"] = dt == "cuda"
    from .paths import cudnn_benchmark
    env["cudnn_benchmark"] = bool(dt == "cuda" and cudnn_benchmark())
    env["triton_interpret"] = os.environ.get("TRITON_INTERPRET") == "1"
    return env


# ---- running ------------------------------------------------------------------------------------

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
                v = get_variant(it.variant, batch_size=it.batch, **it.overrides)
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
