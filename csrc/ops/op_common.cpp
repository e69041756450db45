// The helpers of op_common.h, the debug-poison switch, and the one TORCH_LIBRARY(fastgan): the
// owner of the namespace, whose schemas the operator files add with TORCH_LIBRARY_FRAGMENT.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "op_common.h"

namespace fastgan {

namespace {
std::atomic<bool> g_poison{false};
}  // namespace

void set_debug_poison(bool on) { g_poison.store(on); }
bool debug_poison() { return g_poison.load(std::memory_order_relaxed); }

namespace detail {

Tensor fresh(Tensor t) {
  if (debug_poison() && t.numel() > 0) {
    if (at::isFloatingType(t.scalar_type()))
      t.fill_(std::numeric_limits<double>::quiet_NaN());
    else
      t.fill_(255);
  }
  return t;
}

// Numbers, shapes and dtypes are formatted here (std::to_string) rather than streamed into the
// error message: with torch 2.11 (a gcc 13 build) streaming an integer into a TORCH_CHECK
// message segfaulted the process; strings were fine.
std::string shape_str(c10::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}
std::string dtype_str(at::ScalarType st) { return std::string(c10::toString(st)); }
std::string dev_str(const Tensor& t) { return t.device().str(); }

DType dtype_of(const Tensor& t, const char* op, const char* arg) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kDouble: return DType::kFloat64;
    default:
      TORCH_CHECK(false, "fastgan::", op, ": ", arg, " must be float32, bfloat16 or float64, got ",
                  dtype_str(t.scalar_type()));
  }
  return DType::kFloat32;
}

at::ScalarType acc_type(at::ScalarType st) { return st == at::kDouble ? at::kDouble : at::kFloat; }

ActMode act_of(std::optional<double> slope, const char* op) {
  if (!slope.has_value()) return ActMode::kIdentity;
  TORCH_CHECK(std::isfinite(*slope) && *slope >= 0.0, "fastgan::", op,
              ": slope must be None (identity), 0 (ReLU) or a finite positive LeakyReLU slope, got ",
              std::to_string(*slope), " (the backward reads the activation mask off the output's sign)");
  return *slope == 0.0 ? ActMode::kReLU : ActMode::kLeaky;
}

void check_device(const Tensor& t, const Tensor& ref, const char* op, const char* arg) {
  TORCH_CHECK(t.device() == ref.device(), "fastgan::", op, ": ", arg, " is on ", dev_str(t),
              " but the input is on ", dev_str(ref));
}

void check_channel_vec(const OptTensor& t, int64_t C, const Tensor& ref, const char* op,
                       const char* arg) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == C, "fastgan::", op, ": ", arg, " must be 1-D with ", std::to_string(C),
              " elements (the channel count), got shape ", shape_str(t->sizes()));
  check_device(*t, ref, op, arg);
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), "fastgan::", op, ": ", arg,
              " must be a floating-point tensor, got ", dtype_str(t->scalar_type()));
}

Tensor acc_vec(const Tensor& t, at::ScalarType acc) { return t.to(acc).contiguous(); }

Tensor in_layout_of(const Tensor& x, const Tensor& out) {
  if (x.strides() == out.strides()) return x;
  Tensor c = at::empty_like(out);
  c.copy_(x);
  return c;
}

Geom geom_of(const Tensor& t, int64_t dim) {
  Geom g;
  const int64_t n = t.numel();
  const int64_t C = t.dim() > 0 ? t.size(dim) : 1;
  if (C <= 1 || n == 0) {
    g.outer = 1;
    g.C = std::max<int64_t>(C, 1);
    g.inner = n;
    if (g.C > 1) g.inner = 0;
    return g;
  }
  g.C = C;
  g.inner = t.stride(dim);
  g.outer = n / (C * g.inner);
  TORCH_INTERNAL_ASSERT(g.outer * g.C * g.inner == n, "fastgan: tensor is not dense");
  return g;
}

Tensor workspace(size_t bytes, const Tensor& like) {
  return fresh(at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte)));
}

#ifdef FASTGAN_WITH_CUDA
cudaStream_t stream_for(const Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
void check_launch(int err, const char* op) {
  TORCH_CHECK(err == 0, "fastgan::", op, ": CUDA kernel launch failed: ", cuda_error_string(err));
}
#endif

void def_ops(torch::Library& m, std::initializer_list<const char*> schemas) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  for (const char* schema : schemas) m.def(schema, tags);
}

}  // namespace detail
}  // namespace fastgan

TORCH_LIBRARY(fastgan, m) {}
