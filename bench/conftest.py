"""bench/ as part of a whole test run is a smoke test; asked for by name it is the benchmark.

`pytest` (with bench in testpaths) or `pytest tests bench` on any machine: the tiny CPU matrix
(seconds). `pytest bench/` or `pytest bench/test_throughput.py` on a GPU machine: the quick GPU
matrix (minutes). FASTGAN_BENCH_DEVICE=cpu|cuda overrides either way.
"""
from __future__ import annotations

import os
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def _inside_bench(arg: str) -> bool:
    p = pathlib.Path(str(arg).split("::")[0])
    try:
        p = p.resolve()
    except OSError:
        return False
    return p == HERE or HERE in p.parents


def pytest_configure(config):
    args = [a for a in config.invocation_params.args if not str(a).startswith("-")]
    explicit = bool(args) and all(_inside_bench(a) for a in args if os.path.exists(
        str(a).split("::")[0]))
    os.environ.setdefault("FASTGAN_BENCH_EXPLICIT", "1" if explicit else "0")
