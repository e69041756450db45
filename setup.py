"""Build of the optional extension fastgan._C (C++ CPU kernels, CUDA kernels when nvcc exists).

setuptools (the build backend named in pyproject.toml) drives CMake (CMakeLists.txt) from
build_ext. Torch must be importable at build time, so install with

    pip install --no-build-isolation -e .            # editable: _C lands in fastgan/
    python setup.py build_ext --inplace              # the same, without pip

If torch cannot be imported, CMake is missing or the build fails, a warning is printed and the
pure-Python package is installed (the reference and triton backends still work) -- unless
FASTGAN_REQUIRE_EXT=1, which turns any such problem into a build error (`make test` sets it).

Environment:
    FASTGAN_REQUIRE_EXT=1    fail the install when the extension cannot be built
    FASTGAN_SKIP_EXT=1       do not try to build the extension at all
    FASTGAN_CUDA=AUTO|ON|OFF CUDA kernels when nvcc works (default) / required / never
    TORCH_CUDA_ARCH_LIST     e.g. "9.0" or "8.0;9.0a" (default: the local GPU, else 9.0)
    CUDA_HOME, CUDACXX       where nvcc is (default: /usr/local/cuda/bin/nvcc, then PATH)
    FASTGAN_BUILD_DIR        CMake build directory (default: build/cmake-<platform>-<python>),
                             kept between builds so that rebuilds are incremental
    MAX_JOBS                 parallel compile jobs (default: all cores)
    FASTGAN_BUILD_TYPE       CMake build type (default: Release)
    FASTGAN_PTXAS_VERBOSE=1  register / spill report of every CUDA kernel in the build log
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


class CMakeExtension(Extension):
    def __init__(self, name: str):
        # optional: setuptools tolerates its absence when copying an in-place build.
        super().__init__(name, sources=[], optional=not _flag("FASTGAN_REQUIRE_EXT"))


class ExtensionBuildError(RuntimeError):
    pass


def _find_tool(name: str, module: str, bin_dir_attr: str) -> str | None:
    """``name`` on PATH, else inside the PyPI package of the same tool (cmake, ninja)."""
    exe = shutil.which(name)
    if exe:
        return exe
    try:
        mod = __import__(module)
        cand = os.path.join(getattr(mod, bin_dir_attr), name)
        if os.path.exists(cand):
            return cand
    except (ImportError, AttributeError):
        pass
    return None


def _which_cmake() -> str:
    exe = _find_tool("cmake", "cmake", "CMAKE_BIN_DIR")
    if exe is None:
        raise ExtensionBuildError("cmake >= 3.18 was not found (apt-get install cmake, or pip install cmake)")
    return exe


def _which_ninja() -> str | None:
    return _find_tool("ninja", "ninja", "BIN_DIR")


def _check_torch() -> str:
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.__version__)"],
            check=True, capture_output=True, text=True,
        )
    except subprocess.CalledProcessError as e:
        raise ExtensionBuildError(
            "torch is not importable at build time (with pip, build isolation hides it: use "
            "`pip install --no-build-isolation ...`):\n" + (e.stderr or "")[-2000:]
        ) from None
    return out.stdout.strip()


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CMakeExtension):
            return super().build_extension(ext)
        if _flag("FASTGAN_SKIP_EXT"):
            self._warn("FASTGAN_SKIP_EXT is set: not building fastgan._C")
            return
        try:
            self._build_cmake(ext)
        except (ExtensionBuildError, subprocess.CalledProcessError, OSError) as e:
            msg = f"fastgan._C was not built: {e}"
            if _flag("FASTGAN_REQUIRE_EXT"):
                raise SystemExit("error: " + msg + "\n(FASTGAN_REQUIRE_EXT=1 makes this fatal)")
            self._warn(msg + "\nInstalling the pure-Python package: the reference and triton backends "
                       "work; `fastgan doctor` reports the cuda backend as unavailable.")

    @staticmethod
    def _warn(msg: str) -> None:
        bar = "=" * 78
        sys.stderr.write(f"\n{bar}\nWARNING: {msg}\n{bar}\n\n")
        sys.stderr.flush()

    def _build_cmake(self, ext: Extension) -> None:
        torch_version = _check_torch()
        cmake = _which_cmake()
        out_path = os.path.abspath(self.get_ext_fullpath(ext.name))
        out_dir = os.path.dirname(out_path)
        os.makedirs(out_dir, exist_ok=True)
        tag = f"{sysconfig.get_platform()}-{sys.implementation.cache_tag}"
        build_dir = os.environ.get("FASTGAN_BUILD_DIR") or os.path.join(ROOT, "build", f"cmake-{tag}")
        os.makedirs(build_dir, exist_ok=True)

        args = [
            cmake, "-S", ROOT, "-B", build_dir,
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DFASTGAN_OUTPUT_DIR={out_dir}",
            f"-DCMAKE_BUILD_TYPE={os.environ.get('FASTGAN_BUILD_TYPE', 'Release')}",
            f"-DFASTGAN_CUDA={os.environ.get('FASTGAN_CUDA', 'AUTO').upper()}",
            f"-DFASTGAN_PTXAS_VERBOSE={'ON' if _flag('FASTGAN_PTXAS_VERBOSE') else 'OFF'}",
        ]
        cache = os.path.join(build_dir, "CMakeCache.txt")
        if not os.path.exists(cache):  # generator and toolkit are fixed at the first configure
            ninja = _which_ninja()
            if ninja:
                args += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"]
            cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
            if cuda_home:
                args.append(f"-DCUDA_TOOLKIT_ROOT_DIR={cuda_home}")
        print(f"fastgan: building fastgan._C against torch {torch_version} in {build_dir}", flush=True)
        subprocess.run(args, check=True)
        jobs = os.environ.get("MAX_JOBS") or str(os.cpu_count() or 1)
        subprocess.run([cmake, "--build", build_dir, "-j", jobs], check=True)
        if not os.path.exists(out_path):
            raise ExtensionBuildError(f"CMake finished but {out_path} was not produced")


def _license() -> dict:
    # The SPDX expression where setuptools knows it (>= 77; the table form is deprecated there),
    # the plain field before: pyproject.toml names the license dynamic so both work.
    import setuptools
    major = int(setuptools.__version__.split(".")[0])
    return {"license_expression": "MIT"} if major >= 77 else {"license": "MIT"}


# The Triton kernels live in the top-level kernels/ folder and are installed as fastgan.kernels.
# The mapping must be given here (pyproject's packages.find never discovers mapped packages).
setup(
    **_license(),
    # fastgan.quality.assets: data only (the shipped classifier and statistics), listed so that
    # setuptools installs it without warning that it is not a package.
    packages=(find_packages(ROOT, include=["fastgan", "fastgan.*"])
              + ["fastgan.kernels", "fastgan.quality.assets"]),
    package_dir={"fastgan.kernels": "kernels"},
    ext_modules=[CMakeExtension("fastgan._C")],
    cmdclass={"build_ext": CMakeBuild},
)
