"""cuobjdump for `make gpu-check`'s build step: which machine code (ELF) and PTX the built
extension holds."""
from __future__ import annotations

import os
import re
import shutil
import subprocess


def find_cuobjdump(py: str):
    cands = [shutil.which("cuobjdump")] + [os.path.join(home, "bin", "cuobjdump") for home in
                                           (os.environ.get("CUDA_HOME"), "/usr/local/cuda") if home]
    r = subprocess.run([py, "-c", "import os, triton; print(os.path.dirname(triton.__file__))"],
                       capture_output=True, text=True)
    if r.returncode == 0:   # triton's wheel carries one
        cands.append(os.path.join(r.stdout.strip(), "backends", "nvidia", "bin", "cuobjdump"))
    return next((p for p in cands if p and os.path.isfile(p) and os.access(p, os.X_OK)), None)


def extension_archs(so: str, cuobjdump: str) -> dict:
    """{elf: [sm_90, ...], ptx: [...]} embedded in the extension."""
    out = {}
    for kind, flag in (("elf", "--list-elf"), ("ptx", "--list-ptx")):
        r = subprocess.run([cuobjdump, flag, so], capture_output=True, text=True)
        out[kind] = sorted(set(re.findall(r"\.(sm_\d+a?)\.(?:cubin|ptx)", r.stdout)))
    return out
