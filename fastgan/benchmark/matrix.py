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

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .paths import parse_path, path_names, select_paths

SCHEMA = "fastgan-bench/1"

# Each variant's batches, tiny-mode settings and tiers are its own (``Variant.bench``,
# fastgan/variants/base.py: BenchSettings), so a new variant needs no edit here.


def heavy_variants() -> List[str]:
    """The variants with speed targets of their own: compiled first."""
    from fastgan.variants import VARIANTS
    return [v for v in VARIANTS if VARIANTS[v].bench_settings().heavy]


def bf16_cases(variants: List[str], quick: bool, gpu_check: bool) -> List[Tuple[str, int]]:
    """The GPU matrix's bf16 rows: gpu-check's own first, then those of --quick, then the rest."""
    from fastgan.variants import VARIANTS
    settings = {v: VARIANTS[v].bench_settings() for v in VARIANTS if v in variants}
    out = [(v, b) for v, s in settings.items() if s.bf16_quick for b in s.bf16_batches]
    if not quick:
        out += [(v, b) for v, s in settings.items() if not s.bf16_quick for b in s.bf16_batches]
    if gpu_check:
        out = [(v, b) for v, s in settings.items() for b in s.check_batches
               if (v, b) not in out] + out
    return out


# Issue 21's rows for the variants whose kernels are the time (BenchSettings.top_kernels: dcgan):
# both memory formats at the check batches in fp32 and bf16, the largest batch in bf16, and
# larger images. Only the fastgan paths run them (the seed loop is the seeds' NCHW fp32/bf16).
IMAGE_SIZES = (96, 128)
CL = {"memory_format": "channels_last"}


def layout_cases(variants: List[str]) -> List[Tuple[str, int, str, dict]]:
    """(variant, batch, precision, overrides) of those rows, in the order they run."""
    from fastgan.variants import VARIANTS
    out: List[Tuple[str, int, str, dict]] = []
    for v in variants:
        s = VARIANTS[v].bench_settings() if v in VARIANTS else None
        if s is None or not s.top_kernels:
            continue
        seed_b = VARIANTS[v]().hyper.batch_size
        for b in s.check_batches:
            out += [(v, b, "fp32", dict(CL)), (v, b, "bf16", dict(CL))]
        if s.gpu_batches:
            big = max(s.gpu_batches)
            out += [(v, big, "bf16", {}), (v, big, "bf16", dict(CL))]
        for size in IMAGE_SIZES:
            for prec in ("fp32", "bf16"):
                for ovr in ({}, CL):
                    out.append((v, seed_b, prec, {"image_size": size, **ovr}))
    return out


# Issue 22's training options, each a row at the seed batch next to the plain one (its cost):
# R1 every D step (a captured iteration repeats one pattern; lazy R1 divides this cost by K).
OPTION_ROWS = {"ema": {"ema_decay": 0.999}, "augment": {"augment": "translation,cutout,color"},
               "r1": {"r1_gamma": 1.0, "r1_every": 1}, "hinge": {"loss": "hinge"},
               "spectral_norm": {"spectral_norm": True}}
OPTION_VARIANTS = ("mlp", "convgan", "dcgan")


def option_cases(variants: List[str]) -> List[Tuple[str, int, str, dict]]:
    """(variant, batch, precision, overrides) of the training options' rows (not R1 for dcgan:
    its BatchNorm D has no double backward in the fused backends)."""
    from fastgan.variants import get_variant
    return [(v, get_variant(v).hyper.batch_size, "fp32", dict(ovr))
            for v in variants if v in OPTION_VARIANTS
            for name, ovr in OPTION_ROWS.items() if not (v == "dcgan" and name == "r1")]


def engine_only(overrides: dict) -> Optional[str]:
    """The skip reason of a seed-loop path on a row with engine overrides."""
    from .paths import ENGINE_OVERRIDES
    keys = [k for k in (overrides or {}) if k in ENGINE_OVERRIDES]
    if keys == ["memory_format"]:
        return "channels_last rows: the fastgan paths only (the seeds' loop runs NCHW)"
    if keys:
        return "training-option rows: the fastgan paths only (the seeds' loop has none)"
    return None


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
    from fastgan import backends, ops
    avail = ops.available_backends(device_type)
    listed, why = [], {}
    for b in ops.BACKENDS:
        listed.append(b)
        skip = (backends.get(b).not_benchmarked.get(device_type) if backends.get(b) else None)
        if skip:
            why[b] = skip
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
    from fastgan.variants import bench_settings, get_variant
    dev_type = "cuda" if cfg.device.startswith("cuda") else "cpu"
    backends, why = backend_rows(dev_type)
    all_paths = select_paths(path_names(backends), cfg.paths)
    autos = {v: ops.auto_backend(dev_type, variant=v) for v in cfg.variants}   # graph mode
    cases: List[Tuple[str, int, str, dict, bool]] = []   # variant, batch, precision, ovr, seed?
    for v in cfg.variants:
        seed_b = get_variant(v).hyper.batch_size
        bs = bench_settings(v)
        if cfg.batch_sizes:
            ovr = dict(bs.tiny_overrides) if cfg.tiny else {}
            cases += [(v, b, "fp32", ovr, True) for b in cfg.batch_sizes]
        elif cfg.tiny:
            cases.append((v, bs.tiny_batch, "fp32", dict(bs.tiny_overrides), True))
        elif dev_type == "cpu":
            cases.append((v, seed_b, "fp32", {}, True))
        else:
            cases += [(v, b, "fp32", {}, b == seed_b) for b in bs.gpu_batches or (seed_b,)]
    if dev_type == "cuda" and not cfg.batch_sizes:
        cases += [(v, b, "bf16", {}, False)
                  for v, b in bf16_cases(cfg.variants, cfg.quick, cfg.gpu_check)]
        extra = layout_cases(cfg.variants)
        if not cfg.gpu_check:       # --quick and the full matrix: the check batches' layouts
            extra = [c for c in extra if "image_size" not in c[3]]
        if cfg.gpu_check:           # the options' costs, last (tier T_REST)
            extra += option_cases(cfg.variants)
        have = {case_key(v, b, p, o) for v, b, p, o, _ in cases}
        cases += [(v, b, p, o, False) for v, b, p, o in extra if case_key(v, b, p, o) not in have]
    elif cfg.tiny and cfg.gpu_check and not cfg.batch_sizes:
        # The dry run keeps the channels_last path alive: one tiny row per such variant.
        cases += [(v, bench_settings(v).tiny_batch, "fp32",
                   {**bench_settings(v).tiny_overrides, **CL}, True)
                  for v, _, _, _ in layout_cases(cfg.variants)[:1]]
    issue21 = {case_key(v, b, p, o) for v, b, p, o in layout_cases(cfg.variants)}
    options = {case_key(v, b, p, o) for v, b, p, o in option_cases(cfg.variants)}
    heavy_names = heavy_variants()

    items: List[Item] = []
    for (v, b, prec, ovr, seed) in cases:
        heavy, auto = v in heavy_names, autos[v]
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
                    skip = (f"quick mode: max-autotune only for {' and '.join(heavy_names)} "
                            "at the seed batch")
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
            if skip is None and kind != "fastgan":
                skip = engine_only(ovr)
            if cfg.gpu_check:
                tier = check_tier(v, b, prec, p, seed, auto)
                # Issue 21's extra rows in the dcgan tier on the product's path only (the auto
                # backend graphed): each new shape costs Triton a JIT and autotune elsewhere.
                if case_key(v, b, prec, ovr) in options:   # issue 22's costs: last
                    tier = T_REST
                elif case_key(v, b, prec, ovr) in issue21:
                    tier = T_DCGAN if kind == "fastgan" and p["graph"] and p["backend"] == auto \
                        else T_REST
                prio = 100 * tier + prio
            items.append(Item(v, b, prec, dict(ovr), path, prio, budget, isolate, skip,
                              order=len(items)))
    return items


# make gpu-check's tiers (the order of its questions): (1) every variant at its seed batch,
# eager-reference and every backend eager and graphed; (2) torch.compile default
# and reduce-overhead there; (3) the check batches (dcgan at 128 and 512) in fp32 and bf16;
# (4) the rest of --quick.
(T_SEED, T_COMPILE, T_DCGAN, T_REST) = range(1, 5)


def check_tier(variant: str, batch: int, precision: str, p: dict, seed: bool,
               auto: Optional[str]) -> int:
    kind = p["kind"]
    main = kind == "eager-reference" or (kind == "fastgan" and (p["graph"]
                                                                 or p["backend"] == auto))
    if seed and precision == "fp32":
        # every backend in both modes: what auto's table needs (fastgan/backends/measured.py)
        if kind in ("eager-reference", "fastgan"):
            return T_SEED
        if kind == "compile" and p["mode"] in ("default", "reduce-overhead"):
            return T_COMPILE
    from fastgan.variants import VARIANTS
    check = VARIANTS[variant].bench_settings().check_batches if variant in VARIANTS else ()
    if batch in check and kind != "compile" and (
            main and (not p["graph"] or p["backend"] in ("reference", auto))):
        return T_DCGAN
    return T_REST

