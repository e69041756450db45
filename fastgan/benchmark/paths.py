"""The benchmark paths: one training iteration of a variant, run each way the comparison needs.

    eager-reference           the seeds' loop (``SeedLoop``): plain PyTorch modules on the
                              reference backend, separate Adam (default = foreach) per network,
                              ``zero_grad``/``backward``/``step``, both losses read with ``.item()``
                              every iteration, a fresh batch each iteration drawn on the host
                              (``torch.randint``) and gathered from the GPU-resident dataset
    compile-<mode>            the same loop with G and D (and E) wrapped in
                              ``torch.compile(mode=<mode>)`` and each optimizer step compiled
                              (``torch.compile`` of a function that calls ``opt.step()``);
                              modes: default, reduce-overhead, max-autotune
    fastgan-<backend>         ``Engine.step()`` eagerly with that op backend
                              (static buffers, device-side draws, fused Adam (capturable for graphs), no sync)
    fastgan-<backend>-graph   the same iteration captured once in a CUDA graph
                              (``GraphedIteration``) and replayed

A ``Runner`` builds its path (``build``), runs ``n`` iterations (``run``) and frees itself
(``close``). Nothing here times anything: ``measure.py`` does.
"""
from __future__ import annotations

import contextlib
import fnmatch
import gc
import os
from typing import Dict, List, Optional, Tuple

import torch

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
BASE_PATHS = ("eager-reference",) + tuple(f"compile-{m}" for m in COMPILE_MODES)


def path_names(backends: List[str]) -> List[str]:
    """Every path of the matrix, in report order, for the given fastgan backends."""
    return (list(BASE_PATHS) + [f"fastgan-{b}" for b in backends]
            + [f"fastgan-{b}-graph" for b in backends])


def parse_path(name: str) -> dict:
    """{kind: eager-reference|compile|fastgan, mode, backend, graph} for a path name."""
    if name == "eager-reference":
        return {"kind": "eager-reference", "mode": None, "backend": "reference", "graph": False}
    if name.startswith("compile-"):
        mode = name[len("compile-"):]
        if mode not in COMPILE_MODES:
            raise ValueError(f"unknown torch.compile mode in path {name!r}; "
                             f"modes: {', '.join(COMPILE_MODES)}")
        return {"kind": "compile", "mode": mode, "backend": "reference", "graph": False}
    if name.startswith("fastgan-"):
        rest = name[len("fastgan-"):]
        graph = rest.endswith("-graph")
        backend = rest[:-len("-graph")] if graph else rest
        if not backend:
            raise ValueError(f"path {name!r} names no backend")
        return {"kind": "fastgan", "mode": None, "backend": backend, "graph": graph}
    raise ValueError(f"unknown path {name!r}; paths are eager-reference, compile-<mode>, "
                     "fastgan-<backend>, fastgan-<backend>-graph")


def select_paths(all_paths: List[str], patterns: Optional[str]) -> List[str]:
    """Filter by a comma-separated list of names or shell patterns ("fastgan-*,compile-default").
    Raises ValueError naming a pattern that matches nothing."""
    if not patterns:
        return list(all_paths)
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    keep = []
    for p in pats:
        hit = [n for n in all_paths if fnmatch.fnmatchcase(n, p)]
        if not hit:
            raise ValueError(f"--paths: {p!r} matches no path; paths here: "
                             f"{', '.join(all_paths)}")
        keep += [h for h in hit if h not in keep]
    return [n for n in all_paths if n in keep]


# ---- the data every path draws from ----------------------------------------------------------

def make_dataset(variant, n_real: int, device: torch.device, seed: int = 0
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A device-resident uint8 dataset of uniformly random images (never zeros) and random class
    labels: at least 2048 images and 4 batches, at most ~256 MB."""
    h = variant.hyper
    per = h.channels * h.image_size * h.image_size
    n = max(2048, 4 * n_real)
    n = max(n_real, min(n, (256 << 20) // per))
    g = torch.Generator(device="cpu").manual_seed(seed)
    images = torch.randint(0, 256, (n, h.channels, h.image_size, h.image_size), generator=g,
                           dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return images.to(device), labels.to(device)


# Overrides that are the engine's, not the variant's (a row's case key holds them all).
# The engine's own settings a row may carry: --memory-format and the training options of
# issue 22 (EngineOptions fields; "spectral_norm" normalises D's weights before the optimizers).
OPTION_FIELDS = ("ema_decay", "augment", "r1_gamma", "r1_every", "loss")
ENGINE_OVERRIDES = ("memory_format", "spectral_norm") + OPTION_FIELDS


def variant_overrides(overrides: Optional[dict]) -> dict:
    """A row's overrides for ``get_variant``: without the engine's (``ENGINE_OVERRIDES``)."""
    return {k: v for k, v in (overrides or {}).items() if k not in ENGINE_OVERRIDES}


def set_math_mode(device: torch.device) -> None:
    """fp32 matmuls/convs in TF32 and cuDNN's algorithm search (``cudnn.benchmark``) on the GPU,
    for every path alike, as ``fastgan train`` does; FASTGAN_BENCH_CUDNN_BENCHMARK=0 turns the
    search off for every path."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = cudnn_benchmark()


def cudnn_benchmark() -> bool:
    return os.environ.get("FASTGAN_BENCH_CUDNN_BENCHMARK", "1") != "0"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Runner:
    """One path for one (variant, batch, precision): ``build()``, ``run(n)``, ``close()``."""
    name = ""
    one_time_s: Optional[float] = None    # capture (graphs): measured inside build
    warm_iters_in_build = 0               # iterations build() already ran

    def __init__(self, variant_name: str, batch: int, precision: str, overrides: dict,
                 device: torch.device, data=None, seed: int = 0):
        from fastgan.variants import get_variant
        self.variant_name, self.batch, self.precision = variant_name, batch, precision
        self.overrides, self.device, self.seed = dict(overrides), device, seed
        self.v = get_variant(variant_name, batch_size=batch, **variant_overrides(overrides))
        # --memory-format of the fastgan paths (the seed loop runs the seeds' NCHW).
        self.memory_format = self.overrides.get("memory_format", "nchw")
        h = self.v.hyper
        self.n_real, self.n_noise = self.v.batch_sizes(h.batch_size)
        self.images, self.labels = data if data is not None else make_dataset(
            self.v, self.n_real, device, seed)
        self.n_images = int(self.images.shape[0])

    def build(self) -> None:
        raise NotImplementedError

    def run(self, n: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        for k in list(vars(self)):
            if k not in ("name", "device", "variant_name", "batch", "precision"):
                setattr(self, k, None)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _build_nets(self) -> Dict[str, torch.nn.Module]:
        torch.manual_seed(self.seed)
        return {k: m.to(self.device) for k, m in self.v.build({}).items()}


class SeedLoopRunner(Runner):
    """eager-reference and compile-<mode>: the seeds' loop on the reference backend."""

    def __init__(self, *a, compile_mode: Optional[str] = None, **kw):
        super().__init__(*a, **kw)
        self.compile_mode = compile_mode
        self.name = "eager-reference" if compile_mode is None else f"compile-{compile_mode}"

    def build(self) -> None:
        from fastgan.engine.seed_loop import SeedLoop
        v, h, dev = self.v, self.v.hyper, self.device
        nets = self._build_nets()
        if self.compile_mode is not None:
            mode = None if self.compile_mode == "default" else self.compile_mode
            nets = {k: torch.compile(m, mode=mode, dynamic=False) for k, m in nets.items()}
        self.loop = SeedLoop(v, nets, dev)
        if self.compile_mode is not None:
            for opt in (self.loop.opt_d, self.loop.opt_g):
                _compile_optimizer_step(opt)
        self.scale, self.shift = ((2.0 / 255.0, -1.0) if h.data_range == "tanh"
                                  else (1.0 / 255.0, 0.0))
        self.g_n = None if v.g_reuses_fake else v.g_batch_size(h.batch_size)
        self.mark_step = (self.compile_mode == "reduce-overhead")
        self.losses = (0.0, 0.0)

    def _batch(self):
        from fastgan.variants import Batch
        v, dev = self.v, self.device
        # Host-side sampling, as the seeds do; the dataset itself lives on the device.
        idx = torch.randint(0, self.n_images, (self.n_real,)).to(dev)
        real = v.image_view(self.images[idx].float() * self.scale + self.shift)
        labels = mis = None
        if v.needs_labels:
            labels = self.labels[idx]
            mis = self.labels[torch.randint(0, self.n_images, (self.n_real,)).to(dev)]
        z = torch.empty(v.noise_shape(self.n_noise), device=dev)
        v.fill_noise(z, labels, None)
        z_g = None
        if self.g_n is not None:
            z_g = torch.empty(v.noise_shape(self.g_n), device=dev)
            v.fill_noise(z_g, None, None)
        return Batch(real=real, z=z, labels=labels, mis_labels=mis), z_g

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(self, n: int) -> None:
        for _ in range(n):
            if self.mark_step:
                torch.compiler.cudagraph_mark_step_begin()
            batch, z_g = self._batch()
            with self._autocast():
                self.losses = self.loop.step(batch, z_g, read_losses=True)


def _compile_optimizer_step(opt: torch.optim.Optimizer) -> None:
    """Replace ``opt.step`` by a compiled function calling the original (PyTorch's recipe for a
    compiled optimizer)."""
    orig = opt.step

    @torch.compile(fullgraph=False)
    def step():
        orig()

    opt.step = step  # SeedLoop calls self.opt_x.step()


class EngineRunner(Runner):
    """fastgan-<backend> and fastgan-<backend>-graph: the engine's static iteration."""

    def __init__(self, *a, backend: str = "reference", graph: bool = False, warmup: int = 3,
                 **kw):
        super().__init__(*a, **kw)
        self.backend, self.graph = backend, graph
        self.graph_warmup = warmup
        self.name = f"fastgan-{backend}" + ("-graph" if graph else "")

    def build(self) -> None:
        from fastgan.engine.iteration import Engine, EngineOptions
        h = self.v.hyper
        nets = self._build_nets()
        if self.overrides.get("spectral_norm"):
            from fastgan.engine.checkpoint import spectral_norm_nets
            spectral_norm_nets(self.v, nets, self.seed, self.device)
        options = {k: self.overrides[k] for k in OPTION_FIELDS if k in self.overrides}
        opts = EngineOptions(batch_size=h.batch_size, d_steps=h.d_steps,
                             label_smoothing=h.label_smoothing, precision=self.precision,
                             seed=self.seed, capturable=self.graph,
                             memory_format=self.memory_format, **options)
        self.engine = Engine(self.v, nets, self.images,
                             self.labels if self.v.needs_labels else None, opts, self.device)
        self.replay = None
        if self.graph:
            import time

            from fastgan.engine.graphs import GraphedIteration
            t0 = time.perf_counter()
            g = GraphedIteration(self.engine, warmup=self.graph_warmup, unroll=1)
            self.one_time_s = time.perf_counter() - t0
            self.graphed = g
            self.replay = g.replay

    def run(self, n: int) -> None:
        if self.replay is not None:
            for _ in range(n):
                self.replay()
        else:
            step = self.engine.step
            for _ in range(n):
                step()

    def read_stats(self):
        return self.engine.read_stats()


def make_runner(path: str, variant: str, batch: int, precision: str, overrides: dict,
                device: torch.device, data=None, seed: int = 0) -> Runner:
    p = parse_path(path)
    if p["kind"] == "fastgan":
        return EngineRunner(variant, batch, precision, overrides, device, data=data, seed=seed,
                            backend=p["backend"], graph=p["graph"])
    return SeedLoopRunner(variant, batch, precision, overrides, device, data=data, seed=seed,
                          compile_mode=p["mode"])


@contextlib.contextmanager
def backend_for(path: str):
    """The op backend a path runs with, active for its build, warm-up and timing."""
    from fastgan import ops
    with ops.use_backend(parse_path(path)["backend"]):
        yield
