"""Every fastgan Triton kernel, with every autotune config, compiles for Hopper (sm_90).

No GPU needed: ``triton.compile(ASTSource(...), target=GPUTarget("cuda", 90, 32))`` runs the
whole pipeline down to ptxas. The work is done by ``fastgan.kernels.compile_check`` in a
subprocess with ``TRITON_INTERPRET`` unset (under the interpreter the kernels are not JIT
functions). The table of registers, shared memory, spills and wgmma use is printed (``pytest -s``
shows it; it is also in the failure message). The matmul kernel must use ``wgmma`` for fp32
(tf32) and bf16 operands in every config and mode.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

REPO = pathlib.Path(__file__).resolve().parents[2]
HOPPER_MAX_SMEM = 232448   # bytes of shared memory one block may use on sm_90 (227 KiB)


def _have_nvidia_backend() -> bool:
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
        import triton.backends.nvidia  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(scope="module")
def results():
    if not _have_nvidia_backend():
        pytest.skip("this triton has no NVIDIA backend")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import json, sys\n"
            "from fastgan.kernels import compile_check as cc\n"
            "if cc._ptxas_path() is None:\n"
            "    print('NO_PTXAS'); sys.exit(0)\n"
            "res = cc.run(workers=max(2, __import__('os').cpu_count() or 2))\n"
            "print('TABLE_BEGIN'); print(cc.format_table(res)); print('TABLE_END')\n"
            "print('JSON ' + json.dumps([r.__dict__ for r in res]))\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=str(REPO), capture_output=True,
                       text=True, timeout=1200)
    if "NO_PTXAS" in p.stdout:
        pytest.skip("no ptxas found (triton's bundled one, $PATH or /usr/local/cuda)")
    assert p.returncode == 0, f"compile_check crashed:\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("JSON "))
    table = p.stdout.split("TABLE_BEGIN\n", 1)[1].split("TABLE_END", 1)[0]
    print(f"\nTriton {triton.__version__}, sm_90:\n{table}")
    return json.loads(line[5:]), table


def test_every_kernel_compiles_for_sm90(results):
    res, table = results
    assert len(res) > 100, "fewer cases than expected: was a kernel module left out?"
    bad = [r for r in res if not r["ok"]]
    assert not bad, "compile errors:\n" + "\n".join(f"{r['name']}: {r['error'][:800]}" for r in bad) \
        + "\n\n" + table


def test_every_autotune_config_is_covered(results):
    from fastgan.kernels.linear_act import MM_CONFIGS
    res, _ = results
    names = {r["name"] for r in res}
    for cfg in MM_CONFIGS:
        kw = cfg.kwargs
        tag = f"P{kw['BLOCK_P']}_Q{kw['BLOCK_Q']}_K{kw['BLOCK_K']}_w{cfg.num_warps}_s{cfg.num_stages}"
        for dt in ("fp32", "bf16"):
            assert any(tag in n and f",{dt}," in n for n in names), (tag, dt)


def test_matmul_kernels_use_wgmma(results):
    res, table = results
    mm = [r for r in res if r["expect_wgmma"]]
    assert mm and any(",fp32," in r["name"] for r in mm) and any(",bf16," in r["name"] for r in mm)
    missing = [r["name"] for r in mm if r["ok"] and not r["wgmma"]]
    assert not missing, "no wgmma in the PTX of:\n" + "\n".join(missing) + "\n\n" + table


def test_resources_fit_hopper(results):
    """Shared memory within the per-block limit; registers and spills reported (spills warn)."""
    res, table = results
    over = [r["name"] for r in res if r["ok"] and r["shared"] is not None
            and r["shared"] > HOPPER_MAX_SMEM]
    assert not over, "shared memory over the sm_90 limit:\n" + "\n".join(over) + "\n\n" + table
    spills = [f"{r['name']}: {r['spill_stores']}/{r['spill_loads']} bytes" for r in res
              if r["ok"] and (r["spill_stores"] or 0) + (r["spill_loads"] or 0) > 0]
    if spills:
        import warnings
        warnings.warn("register spills (stores/loads):\n" + "\n".join(spills))
