"""The wheel ships the Triton kernels: ``kernels/`` at the top of the repository is mapped into the
package as ``fastgan.kernels`` (setup.py), so a wheel built with ``pip wheel .`` and installed
elsewhere must import and run them, with no checkout and no editable finder in sight.

The wheel is built without the extension (FASTGAN_SKIP_EXT=1) and installed with ``--target``;
the check runs under ``python -S`` (no site-packages, so no editable ``.pth``) from another
working directory, with PYTHONPATH = the target, then torch's and triton's site-packages.
On CPU the kernel runs in Triton's interpreter; on a GPU the same check runs on CUDA tensors.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

CHECK = r"""
import os, sys
target = sys.argv[1]
import torch
import fastgan, fastgan.kernels
for mod in (fastgan, fastgan.kernels):
    assert os.path.realpath(mod.__file__).startswith(os.path.realpath(target)), mod.__file__
assert fastgan.kernels.__file__.endswith(os.path.join("kernels", "__init__.py"))
from fastgan.kernels.bias_act import bias_act_forward
from fastgan import ops
dev = "cpu" if os.environ.get("TRITON_INTERPRET") == "1" else "cuda"
x = torch.arange(12.0, device=dev).reshape(4, 3) - 6
b = torch.tensor([1.0, -2.0, 0.5], device=dev)
ref = torch.nn.functional.leaky_relu(x + b, 0.2)
torch.testing.assert_close(bias_act_forward(x, b, 2, 0.2, 1), ref)
with ops.use_backend("triton"):
    torch.testing.assert_close(ops.bias_act(x, b, 0.2, 1), ref)
import fastgan.backends.triton as T
assert os.path.realpath(T.__file__).startswith(os.path.realpath(target)), T.__file__
print("wheel ok", dev)
"""


def _site_dirs() -> list:
    out = []
    for name in ("torch", "triton", "numpy"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        d = os.path.dirname(os.path.dirname(os.path.realpath(mod.__file__)))
        if d not in out:
            out.append(d)
    return out


def test_wheel_ships_and_runs_the_triton_kernels(tmp_path):
    pytest.importorskip("triton")
    env = {**os.environ, "FASTGAN_SKIP_EXT": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-build-isolation",
                            "--no-deps", "-q", "-w", str(tmp_path / "dist")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = (tmp_path / "dist").glob("fastgan-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in ("fastgan/kernels/__init__.py", "fastgan/kernels/bias_act.py",
                 "fastgan/kernels/config.py", "fastgan/backends/__init__.py",
                 "fastgan/backends/triton/bias_act.py", "fastgan/quality/assets/lenet_mnist.pt"):
        assert path in names, f"{path} missing from {wheel.name}"
    assert not any(n.startswith("kernels/") for n in names), "kernels/ shipped at the top level"

    site = tmp_path / "site"
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                           str(site), str(wheel)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert inst.returncode == 0, inst.stdout + inst.stderr

    run_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run_env["PYTHONPATH"] = os.pathsep.join([str(site)] + _site_dirs())
    import torch
    if not torch.cuda.is_available():
        run_env["TRITON_INTERPRET"] = "1"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    res = subprocess.run([sys.executable, "-S", "-c", CHECK, str(site)], cwd=cwd, env=run_env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "wheel ok" in res.stdout
