// fastgan::bias_act and bias_act_backward: schemas, argument checks, allocation and the launch of
// the CPU (cpu/bias_act.cpp) or CUDA (cuda/bias_act.cu) kernels.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <cmath>
#include <string>
#include <tuple>

#include "bias_act.h"
#include "op_common.h"

namespace fastgan {

int epi_act_of(int64_t act, double slope, const char* op) {
  TORCH_CHECK(act >= 0 && act <= kActSigmoid && (act != 2 || (std::isfinite(slope) && slope > 0.0)), "fastgan::",
              op, ": act must be 0 (identity), 1 (ReLU), 2 (LeakyReLU, finite slope > 0), 3 (tanh) or 4 (sigmoid), ",
              "got act ", std::to_string(act), " slope ", std::to_string(slope));
  return static_cast<int>(act);
}

namespace detail {

void run_bias_act(const BiasActParams& p, const Tensor& ref, Dev dev) {
  run_kernel(dev, "bias_act", ref, [&] { cpu_bias_act_fwd(p); },
             [&](cudaStream_t s) { return launch_bias_act_fwd(p, s); });
}

namespace {

template <Dev dev>
Tensor bias_act_impl(const Tensor& x, const OptTensor& bias, int64_t act_code, double slope, int64_t dim) {
  const char* op = "bias_act";
  const DType dt = dtype_of(x, op, "x");
  const int act = epi_act_of(act_code, slope, op);
  if (bias.has_value()) {
    TORCH_CHECK(x.dim() >= 1, "fastgan::bias_act: x must have at least one dimension when a bias is given");
    dim = c10::maybe_wrap_dim(dim, x.dim());
    check_channel_vec(bias, x.size(dim), x, op, "bias");
  }
  const DeviceGuard guard(x, dev);
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
  p.slope = slope;
  run_bias_act(p, x, dev);
  return y;
}

template <Dev dev>
std::tuple<Tensor, Tensor> bias_act_backward_impl(const Tensor& grad, const Tensor& y,
                                                   int64_t act_code, double slope, int64_t dim,
                                                   bool need_db) {
  const char* op = "bias_act_backward";
  const DType dt = dtype_of(y, op, "y");
  TORCH_CHECK(grad.sizes() == y.sizes(), "fastgan::bias_act_backward: grad has shape ", shape_str(grad.sizes()),
              " but y has shape ", shape_str(y.sizes()));
  TORCH_CHECK(grad.scalar_type() == y.scalar_type(), "fastgan::bias_act_backward: grad is ",
              dtype_str(grad.scalar_type()), " but y is ", dtype_str(y.scalar_type()));
  check_device(grad, y, op, "grad");
  const int act = epi_act_of(act_code, slope, op);
  int64_t C = 1;
  if (need_db) {
    TORCH_CHECK(y.dim() >= 1, "fastgan::bias_act_backward: y must have at least one dimension for db");
    dim = c10::maybe_wrap_dim(dim, y.dim());
    C = y.size(dim);
  }
  const DeviceGuard guard(y, dev);
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
  p.slope = slope;
  if (need_db && gx.numel() == 0) {
    db.zero_();
    return {gx, db};
  }
  run_kernel(dev, op, y, [&] { cpu_bias_act_bwd(p); }, [&](cudaStream_t s) {
    const Tensor ws = workspace(bias_act_bwd_workspace_bytes(p), y);
    p.workspace = ws.data_ptr();
    return launch_bias_act_bwd(p, s);
  });
  return {gx, db};
}

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  def_ops(m, {"bias_act(Tensor x, Tensor? bias, int act, float slope, int dim) -> Tensor",
              "bias_act_backward(Tensor grad, Tensor y, int act, float slope, int dim, bool need_db) -> (Tensor, Tensor)"});
}
FASTGAN_IMPLS(m.impl("bias_act", &bias_act_impl<D>);
              m.impl("bias_act_backward", &bias_act_backward_impl<D>);)

}  // namespace
}  // namespace detail
}  // namespace fastgan
