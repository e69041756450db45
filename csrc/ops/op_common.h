// Shared by the operator files (csrc/ops/<op>.cpp): the argument checks, dtype mapping,
// allocation and launch helpers that turn torch tensors into the kernels' raw parameters. The
// operator files are the only translation units that include torch headers; they use
// per-operator ATen headers to keep their compile time short. Fake (meta) implementations and
// autograd formulas are registered from Python (the cuda backend).
//
// Each operator file defines its schemas with TORCH_LIBRARY_FRAGMENT(fastgan, m) and its CPU /
// CUDA kernels with FASTGAN_IMPLS; the one TORCH_LIBRARY(fastgan, m) is in op_common.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#ifdef FASTGAN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "bias_act.h"
#include "common.h"
#include "gan_stats.h"

namespace fastgan {
namespace detail {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

enum class Dev { kCPU, kCUDA };

// Every output / workspace allocation goes through here (see set_debug_poison).
Tensor fresh(Tensor t);

// The current CUDA device set to t's for the op's duration (nothing on CPU).
class DeviceGuard {
 public:
  DeviceGuard(const Tensor& t, Dev dev) {
#ifdef FASTGAN_WITH_CUDA
    if (dev == Dev::kCUDA) guard_.emplace(t.device());
#else
    (void)t;
    (void)dev;
#endif
  }

 private:
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard_;
#endif
};

// m.def() of each schema, with the pt2_compliant tag.
void def_ops(torch::Library& m, std::initializer_list<const char*> schemas);

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

// A byte workspace of the kernels, allocated like `like` (device, through fresh()).
Tensor workspace(size_t bytes, const Tensor& like);

// gan_stats' argument checks and raw parameters (ops/gan_stats.cpp), for gan_stats and
// gan_loss_stats (loss_g null: the caller sets it); `keep` holds the converted copies alive.
GanStatsParams gan_stats_params(const Tensor& stats, const Tensor& loss_d, const Tensor* loss_g,
                                const Tensor& real, const Tensor& fake, std::vector<Tensor>& keep,
                                const char* op);

#ifdef FASTGAN_WITH_CUDA
cudaStream_t stream_for(const Tensor& t);
void check_launch(int err, const char* op);
#endif

// Runs the CPU kernel, cpu(), or the CUDA launch, cuda(stream) returning 0 or a cudaError_t,
// on ref's current stream; a build without CUDA kernels refuses CUDA tensors.
template <typename Cpu, typename Cuda>
void run_kernel(Dev dev, const char* op, const Tensor& ref, Cpu&& cpu, Cuda&& cuda) {
  if (dev == Dev::kCPU) {
    cpu();
    return;
  }
#ifdef FASTGAN_WITH_CUDA
  check_launch(cuda(stream_for(ref)), op);
#else
  (void)ref;
  (void)cuda;
  TORCH_CHECK(false, "fastgan::", op, ": this build of fastgan._C has no CUDA kernels");
#endif
}

// The bias + activation epilogue on `dev` (ops/bias_act.cpp); linear_act runs it in place.
void run_bias_act(const BiasActParams& p, const Tensor& ref, Dev dev);

}  // namespace detail
}  // namespace fastgan

// TORCH_LIBRARY_IMPL(fastgan, CPU) and, in builds with CUDA kernels, (fastgan, CUDA): each runs
// the given m.impl() statements with D (a constexpr Dev) naming its device, e.g.
//   FASTGAN_IMPLS(m.impl("gan_loss", &gan_loss_impl<D>);)
#define FASTGAN_IMPL_FOR(KEY, DEV, ...) \
  TORCH_LIBRARY_IMPL(fastgan, KEY, m) { constexpr Dev D = Dev::DEV; __VA_ARGS__ }
#ifdef FASTGAN_WITH_CUDA
#define FASTGAN_IMPLS(...) \
  FASTGAN_IMPL_FOR(CPU, kCPU, __VA_ARGS__) FASTGAN_IMPL_FOR(CUDA, kCUDA, __VA_ARGS__)
#else
#define FASTGAN_IMPLS(...) FASTGAN_IMPL_FOR(CPU, kCPU, __VA_ARGS__)
#endif
