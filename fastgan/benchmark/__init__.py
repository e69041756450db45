"""fastgan's measurement core, shared by ``fastgan bench``, the pytest-benchmark files in
``bench/`` and ``make gpu-check``.

    paths.py      the paths compared: eager-reference, compile-<mode>, fastgan-<backend>[-graph]
    measure.py    timing one path (warm-up, CUDA events, medians, memory, energy, GPU busy)
    telemetry.py  NVML energy/power/utilization (optional: null without pynvml)
    matrix.py     which rows run in what order within which budgets
    environment.py  the machine and software of a run
    running.py    running the plan; the results document
    roofline.py   FLOPs and minimum bytes of one iteration, and the floor on a device
    report.py     markdown table, JSON, and the document's schema
    worker.py     one path in a child process (torch.compile paths: killable budgets)
"""
from .environment import environment, gpu_slug
from .matrix import SCHEMA, BenchConfig, Timing, make_config, plan
from .running import run_matrix
from .paths import BASE_PATHS, COMPILE_MODES, make_runner, parse_path, path_names, select_paths
from .report import append_jsonl, to_markdown, validate, write_json, write_markdown
from .roofline import IterationCount, count_iteration, device_peaks

__all__ = ["SCHEMA", "BenchConfig", "Timing", "environment", "gpu_slug", "make_config", "plan",
           "run_matrix", "BASE_PATHS", "COMPILE_MODES", "make_runner", "parse_path",
           "path_names", "select_paths", "append_jsonl", "to_markdown", "validate", "write_json",
           "write_markdown", "IterationCount", "count_iteration", "device_peaks"]
