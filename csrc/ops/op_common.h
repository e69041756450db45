// Shared by the operator files (csrc/ops/<op>.cpp): the argument checks, dtype mapping,
// allocation and launch helpers that turn torch tensors into the kernels' raw parameters. The
// operator files are the only translation units that include torch headers; they use
// per-operator ATen headers to keep their compile time short. Fake (meta) implementations and
// autograd formulas are registered from Python (the cuda backend).
//
// Each operator file defines its schemas with TORCH_LIBRARY_FRAGMENT(fastgan, m) and its CPU /
// CUDA kernels with FASTGAN_REGISTER_IMPLS; the one TORCH_LIBRARY(fastgan, m) is in op_common.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <optional>
#include <string>

#ifdef FASTGAN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "bias_act.h"
#include "common.h"

namespace fastgan {
namespace detail {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

enum class Dev { kCPU, kCUDA };

// Every output / workspace allocation goes through here (see set_debug_poison).
Tensor fresh(Tensor t);

std::string shape_str(c10::IntArrayRef s);
std::string dtype_str(at::ScalarType st);
std::string dev_str(const Tensor& t);

DType dtype_of(const Tensor& t, const char* op, const char* arg);
at::ScalarType acc_type(at::ScalarType st);
ActMode act_of(std::optional<double> slope, const char* op);
void check_device(const Tensor& t, const Tensor& ref, const char* op, const char* arg);
void check_channel_vec(const OptTensor& t, int64_t C, const Tensor& ref, const char* op,
                       const char* arg);
// A per-channel vector in the accumulation dtype, contiguous (a no-op when it already is).
Tensor acc_vec(const Tensor& t, at::ScalarType acc);
// The output layout for x: torch's empty_like rule (x's strides when x is dense and
// non-overlapping, else contiguous / channels_last). Fake implementations use empty_like too.
// Returns x itself when it already has that layout, else a copy of x in it.
Tensor in_layout_of(const Tensor& x, const Tensor& out);
// The [outer, C, inner] view of a dense tensor whose channel dimension is `dim`.
Geom geom_of(const Tensor& t, int64_t dim);

#ifdef FASTGAN_WITH_CUDA
cudaStream_t stream_for(const Tensor& t);
void check_launch(int err, const char* op);
#endif

// The bias + activation epilogue on `dev` (ops/bias_act.cpp); linear_act runs it in place.
void run_bias_act(const BiasActParams& p, const Tensor& ref, Dev dev);

}  // namespace detail
}  // namespace fastgan

// TORCH_LIBRARY_IMPL(fastgan, CPU / CUDA) calling REG<Dev>(m), a function template of the
// operator file that m.impl()s its ops for one device (CUDA only in builds with CUDA kernels).
#ifdef FASTGAN_WITH_CUDA
#define FASTGAN_REGISTER_CUDA_IMPLS(REG) \
  TORCH_LIBRARY_IMPL(fastgan, CUDA, m) { REG<::fastgan::detail::Dev::kCUDA>(m); }
#else
#define FASTGAN_REGISTER_CUDA_IMPLS(REG)
#endif
#define FASTGAN_REGISTER_IMPLS(REG)                                              \
  TORCH_LIBRARY_IMPL(fastgan, CPU, m) { REG<::fastgan::detail::Dev::kCPU>(m); } \
  FASTGAN_REGISTER_CUDA_IMPLS(REG)
