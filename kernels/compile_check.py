"""Compile every fastgan Triton kernel, with every autotune config, for Hopper (sm_90) on any
machine (no GPU needed), and report registers, shared memory, spills and whether the PTX uses
``wgmma``. Used by ``tests/backends/test_triton_sm90_compile.py``; also a tool:

    python -m fastgan.kernels.compile_check [--json] [--filter NAME]

Must run with ``TRITON_INTERPRET`` unset (the interpreter replaces the JIT functions); the test
runs it in a subprocess for that reason. Works with the ASTSource API of Triton 3.3+ (signature
dict with ``"constexpr"`` entries, ``constexprs`` keyed by name, ``attrs`` keyed by index tuple).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

from .compile_cases import Case, _jit, cases  # noqa: F401 (the cases, also for the test)

_FLOAT_ARGS = {"slope", "eps", "bn_eps", "momentum", "count", "scale", "t_val"}


@dataclass
class Result:
    name: str
    ok: bool
    registers: Optional[int] = None
    shared: Optional[int] = None
    spill_stores: Optional[int] = None
    spill_loads: Optional[int] = None
    stack: Optional[int] = None
    wgmma: Optional[bool] = None
    expect_wgmma: bool = False
    seconds: float = 0.0
    error: str = ""


def _ptxas_path() -> Optional[str]:
    try:
        import triton
        p = triton.knobs.nvidia.ptxas.path
        if p and os.path.exists(p):
            return p
    except Exception:
        pass
    try:
        import triton
        cand = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
        if os.path.exists(cand):
            return cand
    except Exception:
        pass
    return shutil.which("ptxas") or (
        "/usr/local/cuda/bin/ptxas" if os.path.exists("/usr/local/cuda/bin/ptxas") else None)


def _ptxas_stats(ptx: str) -> Dict[str, int]:
    ptxas = _ptxas_path()
    if ptxas is None:
        return {}
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        arch = re.search(r"\.target\s+(sm_\w+)", ptx)
        out = subprocess.run([ptxas, "-v", f"--gpu-name={arch.group(1) if arch else 'sm_90a'}",
                              src, "-o", os.path.join(d, "k.o")], capture_output=True, text=True)
    log = out.stdout + out.stderr
    stats = {}
    m = re.search(r"Used (\d+) registers", log)
    if m:
        stats["registers"] = int(m.group(1))
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads",
                  log)
    if m:
        stats["stack"], stats["spill_stores"], stats["spill_loads"] = map(int, m.groups())
    return stats


def _signature(fn, case: Case) -> Dict[str, str]:
    sig = {}
    for name in fn.arg_names:
        if name in case.constexprs:
            sig[name] = "constexpr"
        elif name in case.ptr_types:
            sig[name] = case.ptr_types[name]
        elif name.endswith("_ptr"):
            sig[name] = "*" + case.dtype
        elif name in _FLOAT_ARGS:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_case(case: Case, arch: int = 90) -> Result:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit(case.fn)
    t0 = time.time()
    res = Result(case.name, ok=False, expect_wgmma=case.expect_wgmma)
    try:
        sig = _signature(fn, case)
        # Pointers are 16-byte aligned (torch allocations are) and integer sizes/strides are
        # multiples of 16, as Triton specialises them at launch for the variants' shapes
        # (1024, 784, 256...): without that, 16-bit loads are not vectorised and not pipelined.
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(fn.arg_names)
                 if sig.get(n, "").startswith("*") or sig.get(n) == "i32"}
        src = ASTSource(fn, sig, constexprs=dict(case.constexprs), attrs=attrs)
        k = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                           options={"num_warps": case.num_warps, "num_stages": case.num_stages})
        ptx = k.asm["ptx"]
        res.wgmma = "wgmma" in ptx
        md = k.metadata
        res.shared = md.shared if hasattr(md, "shared") else md["shared"]
        st = _ptxas_stats(ptx)
        res.registers = st.get("registers")
        res.spill_stores = st.get("spill_stores")
        res.spill_loads = st.get("spill_loads")
        res.stack = st.get("stack")
        res.ok = True
    except Exception as e:  # a compile error is a test failure; keep the message
        res.error = f"{type(e).__name__}: {str(e)[:2000]}"
    res.seconds = time.time() - t0
    return res


def run(filter_: str = "", workers: int = 0) -> List[Result]:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("compile_check needs TRITON_INTERPRET unset (it compiles real kernels)")
    cs = [c for c in cases() if filter_ in c.name]
    workers = workers or min(4, os.cpu_count() or 1)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(compile_case, cs))
    return [compile_case(c) for c in cs]


def format_table(results: List[Result]) -> str:
    lines = [f"{'kernel':64s} {'ok':>3s} {'regs':>5s} {'smem':>7s} {'spill st/ld':>12s} "
             f"{'wgmma':>6s} {'s':>5s}"]
    for r in results:
        sp = f"{r.spill_stores}/{r.spill_loads}" if r.spill_stores is not None else "-"
        wg = "-" if r.wgmma is None else ("yes" if r.wgmma else "no")
        lines.append(f"{r.name:64s} {'ok' if r.ok else 'ERR':>3s} {str(r.registers):>5s} "
                     f"{str(r.shared):>7s} {sp:>12s} {wg:>6s} {r.seconds:5.1f}")
        if r.error:
            lines.append("    " + r.error.replace("\n", "\n    ")[:1500])
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    ap.add_argument("--filter", default="", help="only kernels whose name contains this")
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args(argv)
    res = run(a.filter, a.workers)
    if a.json:
        print(json.dumps([asdict(r) for r in res]))
    else:
        print(format_table(res))
    return 0 if all(r.ok for r in res) else 1


if __name__ == "__main__":
    sys.exit(main())
