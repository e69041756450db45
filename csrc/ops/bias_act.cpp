// fastgan::bias_act and bias_act_backward: schemas, argument checks, allocation and the launch of
// the CPU (cpu/bias_act.cpp) or CUDA (cuda/bias_act.cu) kernels.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <optional>
#include <tuple>
#include <vector>

#include "bias_act.h"
#include "op_common.h"

namespace fastgan {
namespace detail {

void run_bias_act(const BiasActParams& p, const Tensor& ref, Dev dev) {
  if (dev == Dev::kCPU) {
    cpu_bias_act_fwd(p);
    return;
  }
#ifdef FASTGAN_WITH_CUDA
  check_launch(launch_bias_act_fwd(p, stream_for(ref)), "bias_act");
#else
  (void)ref;
  TORCH_CHECK(false, "fastgan::bias_act: this build of fastgan._C has no CUDA kernels");
#endif
}

namespace {

template <Dev dev>
Tensor bias_act_impl(const Tensor& x, const OptTensor& bias, std::optional<double> slope, int64_t dim) {
  const char* op = "bias_act";
  const DType dt = dtype_of(x, op, "x");
  const ActMode act = act_of(slope, op);
  if (bias.has_value()) {
    TORCH_CHECK(x.dim() >= 1, "fastgan::bias_act: x must have at least one dimension when a bias is given");
    dim = c10::maybe_wrap_dim(dim, x.dim());
    check_channel_vec(bias, x.size(dim), x, op, "bias");
  }
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(x.device());
#endif
  Tensor y = fresh(at::empty_like(x));
  Tensor xd = in_layout_of(x, y);
  Tensor b;
  BiasActParams p;
  p.dtype = dt;
  p.x = xd.data_ptr();
  p.y = y.data_ptr();
  if (bias.has_value()) {
    b = acc_vec(*bias, acc_type(x.scalar_type()));
    p.bias = b.data_ptr();
    p.g = geom_of(y, dim);
  } else {
    p.g = Geom{1, 1, y.numel()};
  }
  p.act = act;
  p.slope = slope.value_or(0.0);
  run_bias_act(p, x, dev);
  return y;
}

template <Dev dev>
std::tuple<Tensor, Tensor> bias_act_backward_impl(const Tensor& grad, const Tensor& y,
                                                   std::optional<double> slope, int64_t dim,
                                                   bool need_db) {
  const char* op = "bias_act_backward";
  const DType dt = dtype_of(y, op, "y");
  TORCH_CHECK(grad.sizes() == y.sizes(), "fastgan::bias_act_backward: grad has shape ", shape_str(grad.sizes()),
              " but y has shape ", shape_str(y.sizes()));
  TORCH_CHECK(grad.scalar_type() == y.scalar_type(), "fastgan::bias_act_backward: grad is ",
              dtype_str(grad.scalar_type()), " but y is ", dtype_str(y.scalar_type()));
  check_device(grad, y, op, "grad");
  const ActMode act = act_of(slope, op);
  int64_t C = 1;
  if (need_db) {
    TORCH_CHECK(y.dim() >= 1, "fastgan::bias_act_backward: y must have at least one dimension for db");
    dim = c10::maybe_wrap_dim(dim, y.dim());
    C = y.size(dim);
  }
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(y.device());
#endif
  Tensor gx = fresh(at::empty_like(y));
  Tensor yd = in_layout_of(y, gx);
  Tensor gd = in_layout_of(grad, gx);
  Tensor db = fresh(at::empty({need_db ? C : 0}, y.options()));
  BiasActBwdParams p;
  p.dtype = dt;
  p.grad = gd.data_ptr();
  p.y = yd.data_ptr();
  p.gx = gx.data_ptr();
  p.db = need_db ? db.data_ptr() : nullptr;
  p.g = need_db ? geom_of(gx, dim) : Geom{1, 1, gx.numel()};
  p.act = act;
  p.slope = slope.value_or(0.0);
  if (need_db && gx.numel() == 0) {
    db.zero_();
    return {gx, db};
  }
  if (dev == Dev::kCPU) {
    cpu_bias_act_bwd(p);
  } else {
#ifdef FASTGAN_WITH_CUDA
    Tensor ws = fresh(at::empty({static_cast<int64_t>(bias_act_bwd_workspace_bytes(p))}, y.options().dtype(at::kByte)));
    p.workspace = ws.data_ptr();
    check_launch(launch_bias_act_bwd(p, stream_for(y)), op);
#else
    TORCH_CHECK(false, "fastgan::bias_act_backward: this build of fastgan._C has no CUDA kernels");
#endif
  }
  return {gx, db};
}

template <Dev D>
void register_impls(torch::Library& m) {
  m.impl("bias_act", &bias_act_impl<D>);
  m.impl("bias_act_backward", &bias_act_backward_impl<D>);
}

}  // namespace
}  // namespace detail
}  // namespace fastgan

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def("bias_act(Tensor x, Tensor? bias, float? slope, int dim) -> Tensor", tags);
  m.def("bias_act_backward(Tensor grad, Tensor y, float? slope, int dim, bool need_db) -> (Tensor, Tensor)", tags);
}

FASTGAN_REGISTER_IMPLS(fastgan::detail::register_impls)
