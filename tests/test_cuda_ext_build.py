"""The CUDA sources of fastgan._C compile for sm_90 with nvcc (no GPU needed).

Each .cu file is compiled on its own with ``-arch=sm_90 -Xptxas -v``: a compile error fails the
test; the register count and spills of every kernel are printed (``pytest -s`` or the captured
output) and kernels that spill are reported as warnings in the summary. Skipped when nvcc is not
installed. Also checks that the kernel files (csrc/include, csrc/cuda, csrc/cpu) include no torch
headers (the CPU kernels: ATen/Parallel.h and c10's BFloat16 only), and (slow) that a CPU-only CMake
build works.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import pathlib
import re
import shutil
import subprocess
import sys
import warnings

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CSRC = REPO / "csrc"
INCLUDE = CSRC / "include"
CU_FILES = sorted((CSRC / "cuda").glob("*.cu"))


def find_nvcc():
    cands = [os.environ.get("CUDACXX")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            cands.append(os.path.join(os.environ[var], "bin", "nvcc"))
    cands += ["/usr/local/cuda/bin/nvcc", shutil.which("nvcc")]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


NVCC = find_nvcc()
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (CUDACXX / CUDA_HOME / PATH)")


def _demangle(names):
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else names


def _short(name: str) -> str:
    name = re.sub(r"\(anonymous namespace\)::|fastgan::|cu::", "", name)
    name = re.sub(r"\(.*\)$", "", name)  # drop the parameter list
    return name.replace("__nv_bfloat16", "bf16").replace("unsigned int", "u32").replace("long", "i64")


def parse_ptxas(log: str):
    """[(kernel, registers, spill_stores, spill_loads, stack)] from `-Xptxas -v` output."""
    rows, cur, props = [], None, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)'", line)
        if m:
            cur, props = m.group(1), None
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m and cur:
            props = tuple(int(v) for v in m.groups())
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m and cur:
            stack, st, ld = props or (0, 0, 0)
            rows.append((cur, int(m.group(1)), st, ld, stack))
            cur = None
    names = _demangle([r[0] for r in rows])
    return [(_short(n),) + r[1:] for n, r in zip(names, rows)]


def compile_cu(path: pathlib.Path, tmp: pathlib.Path):
    cmd = [NVCC, "-std=c++17", "-O3", "-arch=sm_90", "-Xptxas", "-v", "-I", str(INCLUDE), "-c", str(path),
           "-o", str(tmp / (path.stem + ".o"))]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=CSRC)


def test_cu_sources_exist():
    names = {p.name for p in CU_FILES}
    assert {"bias_act.cu", "bn_act.cu", "bn_act_backward.cu", "gan_loss.cu"} <= names, names


@needs_nvcc
def test_cuda_sources_compile_for_sm90(tmp_path):
    with cf.ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as ex:
        results = dict(zip(CU_FILES, ex.map(lambda p: compile_cu(p, tmp_path), CU_FILES)))
    failed = {p.name: r for p, r in results.items() if r.returncode != 0}
    assert not failed, "nvcc failed:\n" + "\n".join(
        f"--- {n}\n{r.stdout}\n{r.stderr}" for n, r in failed.items())
    spills = []
    print(f"\nnvcc: {NVCC}")
    for p, r in results.items():
        rows = parse_ptxas(r.stdout + r.stderr)
        assert rows or p.name == "cuda_common.cu", f"{p.name}: no kernel in the ptxas report"
        print(f"\n{p.name}: {len(rows)} kernels (sm_90)")
        for name, regs, st, ld, stack in sorted(rows):
            flag = "  SPILLS" if (st or ld) else ""
            print(f"  {regs:4d} regs  {st:5d}/{ld:<5d} spill st/ld  {stack:5d} stack  {name}{flag}")
            if st or ld:
                spills.append(f"{p.name}: {name}: {st} bytes spill stores, {ld} bytes spill loads")
        warn = [ln for ln in (r.stderr or "").splitlines() if "warning" in ln.lower()]
        for ln in warn:
            warnings.warn(f"nvcc warning in {p.name}: {ln}")
    for s in spills:
        warnings.warn(f"register spills: {s}")


# What the CPU kernels may include of torch (at::parallel_for, c10::BFloat16).
CPU_ALLOWED = {"ATen/Parallel.h", "c10/util/BFloat16.h"}


def test_cuda_sources_include_no_torch():
    """The kernel files stay torch-free, so they compile in seconds: the .cu files and every
    header in csrc/include and csrc/cuda include no torch header, the CPU kernels (csrc/cpu) only
    ATen/Parallel.h and c10's BFloat16. Torch is left to csrc/ops and module.cpp."""
    folders = {"include": set(), "cuda": set(), "cpu": CPU_ALLOWED}
    files = [(p, allowed) for d, allowed in folders.items() for p in sorted((CSRC / d).iterdir())]
    assert {p.name for p, _ in files} >= {"common.h", "cuda_common.cuh", "bn_act.cu", "bn_act.cpp"}
    for p, allowed in files:
        for line in p.read_text().splitlines():
            m = re.match(r'\s*#\s*include\s*[<"]([^>"]+)[>"]', line)
            if m:
                inc = m.group(1)
                assert inc in allowed or not re.match(r"(torch|ATen|c10|caffe2|pybind11)/", inc), \
                    f"{p.relative_to(CSRC)} includes {inc}"


@pytest.mark.slow
def test_cpu_only_cmake_build(tmp_path):
    """FASTGAN_CUDA=OFF builds and loads a CPU-only extension (what machines without nvcc get)."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake not found")
    out = tmp_path / "out"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run([cmake, "-S", str(REPO), "-B", str(tmp_path / "b"), *gen, "-DFASTGAN_CUDA=OFF",
                    f"-DPython3_EXECUTABLE={sys.executable}", f"-DFASTGAN_OUTPUT_DIR={out}"],
                   check=True, capture_output=True, text=True)
    subprocess.run([cmake, "--build", str(tmp_path / "b"), "-j", str(os.cpu_count() or 1)],
                   check=True, capture_output=True, text=True)
    so = list(out.glob("_C*"))
    assert len(so) == 1, so
    code = ("import importlib.util, torch, sys\n"
            f"spec = importlib.util.spec_from_file_location('fastgan._C', {str(so[0])!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "assert not m.has_cuda(), m.build_info()\n"
            "x = torch.randn(4, 3)\n"
            "y = torch.ops.fastgan.bias_act(x, torch.zeros(3), 0.0, 1)\n"
            "assert torch.equal(y, x.relu())\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
