// The Python module fastgan._C. Loading it runs the TORCH_LIBRARY registrations of csrc/ops/;
// the module itself only carries build information (pybind11, no torch headers).
#include <pybind11/pybind11.h>

#include "common.h"

#ifndef FASTGAN_CUDA_ARCHS
#define FASTGAN_CUDA_ARCHS ""
#endif
#ifndef FASTGAN_TORCH_VERSION
#define FASTGAN_TORCH_VERSION ""
#endif
#ifndef FASTGAN_CUDA_VERSION
#define FASTGAN_CUDA_VERSION ""
#endif

namespace py = pybind11;

static bool has_cuda() {
#ifdef FASTGAN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastgan C++/CUDA ops (registered as torch.ops.fastgan.*)";
  m.def("has_cuda", &has_cuda, "Whether this build holds the CUDA kernels.");
  m.def("_set_debug_poison", &fastgan::set_debug_poison,
        "Tests: fill every output / workspace the ops allocate with NaN before the kernels run.");
  m.def("_debug_poison", &fastgan::debug_poison);
  m.def("build_info", []() {
    py::dict d;
    d["cuda"] = has_cuda();
    d["cuda_archs"] = FASTGAN_CUDA_ARCHS;
    d["cuda_version"] = FASTGAN_CUDA_VERSION;
    d["torch_version"] = FASTGAN_TORCH_VERSION;
#if defined(__clang__)
    d["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
    d["compiler"] = "gcc " __VERSION__;
#else
    d["compiler"] = "unknown";
#endif
    return d;
  }, "How this extension was built: CUDA kernels or not, archs, torch version, compiler.");
}
