"""`fastgan doctor`: what this machine has, and how `fastgan train` would run on each device (a
CUDA graph or eager, and the backend `--backend auto` picks for that mode)."""
from __future__ import annotations

import platform
import shutil
import subprocess

NAME = "doctor"
HELP = "what is installed, and which path (graph or eager) and backend `fastgan train` runs"


def add_parser(sub):
    return sub.add_parser(NAME, help=HELP)


def run(a) -> int:
    print(report())
    return 0


def _nvcc() -> str:
    import os
    cands = [os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
             shutil.which("nvcc") or ""]
    for c in cands:
        if c and os.path.exists(c):
            try:
                out = subprocess.run([c, "--version"], capture_output=True, text=True,
                                     timeout=20).stdout.strip().splitlines()
                return f"{c} ({out[-1] if out else '?'})"
            except Exception as e:  # pragma: no cover
                return f"{c} (does not run: {e})"
    return "not found (the CUDA extension builds CPU-only)"


def report() -> str:
    import torch

    from fastgan import __version__, ops
    lines = [f"fastgan      {__version__}",
             f"python       {platform.python_version()} ({platform.machine()})",
             f"torch        {torch.__version__} (CUDA build {torch.version.cuda})"]
    try:
        import triton
        lines.append(f"triton       {triton.__version__}")
    except Exception as e:
        lines.append(f"triton       not importable: {e}")
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        lines.append(f"GPU          {p.name}, sm_{p.major}{p.minor}, {p.multi_processor_count} "
                     f"SMs, {p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("GPU          none (torch.cuda.is_available() is False)")
    lines.append(f"nvcc         {_nvcc()}")
    from fastgan import backends
    for b in [b.name for b in backends.BACKENDS if b.optional]:
        ok = ops.ensure_loaded(b)
        err = ops.load_error(b)
        lines.append(f"backend {b:<6} {'loaded' if ok else 'unavailable: ' + str(err)}")
    for dev in (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]):
        lines += path_lines(dev)
    lines.append("Adam on cpu  torch's fused kernel, one pass (the eps-hat form: with the step's eps)"
                 + ("; on cuda: one Triton launch per network, both forms (torch's fused Adam "
                    "without Triton)" if torch.cuda.is_available()
                    else ""))
    lines.append(f"quality      {_quality_line()}")
    from fastgan.threads import choose_threads
    n, why, _ = choose_threads()
    lines.append(f"CPU threads  {n} ({why}): what `fastgan train` would use now (--threads N "
                 "decides)")
    return "\n".join(lines)


def _auto(dev: str, graph: bool) -> str:
    """What auto picks for each variant on ``dev`` in this mode, and where its order is from."""
    from fastgan import ops
    from fastgan.variants import VARIANTS
    picks = ", ".join(f"{v} {ops.auto_backend(dev, graph=graph, variant=v)}" for v in VARIANTS)
    wheres = "; ".join(sorted({ops.auto_choice(dev, graph, v)[1] for v in VARIANTS}))
    return f"auto by variant: {picks} ({wheres})"


def path_lines(dev: str) -> list:
    """What `fastgan train --device DEV` runs by default: the path (validate.choose_graphs, the
    trainer's own decision, with a data set that fits on the device) and the auto backend of
    that path; on CUDA also the eager alternative, whose auto order differs."""
    import torch

    from fastgan import ops
    from fastgan.engine.validate import choose_graphs
    graph, why = choose_graphs(None, torch.device(dev))
    lines = [f"train on {dev:<4} {'CUDA graph' if graph else 'eager'} ({why}), backend "
             f"{_auto(dev, graph)}; complete here: {', '.join(ops.available_backends(dev))}"]
    if graph:
        lines.append(f"             eager (--no-cuda-graphs, or where the graph cannot apply): "
                     f"backend {_auto(dev, False)}")
    from fastgan.variants import VARIANTS
    if dev == "cpu" and any(ops.auto_backend(dev, graph=False, variant=v) == "cuda"
                            for v in VARIANTS):
        lines.append("             " + _cpu_policy_line())
    return lines


def _quality_line() -> str:
    """Which metrics `eval` / `--eval-every` can compute here (nothing is loaded or hashed)."""
    import importlib.util
    import os

    from fastgan.quality.inception import ENV, FILE_NAME
    line = "FID-MNIST (shipped classifier)"
    if importlib.util.find_spec("pytorch_fid") is None or \
            importlib.util.find_spec("torchvision") is None:
        return line + "; standard FID needs pip install 'fastgan[fid]'"
    where = os.environ.get(ENV)
    return line + ("; standard FID with " + (f"${ENV}={where}" if where else
                                            f"--inception-weights {FILE_NAME}"))


def _cpu_policy_line() -> str:
    """Which implementation the cuda backend runs on CPU tensors, and why."""
    from fastgan import backends
    return backends.hook(backends.get("cuda").cpu_policy)()
