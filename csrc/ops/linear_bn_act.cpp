// fastgan::linear_bn_act: y = act_post(batch_norm_train(act_pre(x @ W.T + b))) as cuBLAS / MKL
// matmul + one epilogue kernel (cpu/linear_bn_act.cpp, cuda/linear_bn_act.cu); the running
// statistics updated in place. linear_bn_act_fwd also returns what the backward needs (h, mean,
// invstd); linear_bn_act_backward is the fused backward epilogue (dL/dz and the column sums),
// the two matmuls are in the autograd formula's (autograd/linear_bn_act.cpp).
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>

#include <tuple>

#include "linear_bn_act.h"
#include "op_common.h"

namespace fastgan {
namespace detail {

namespace {

// A running statistic as the kernel needs it (accumulation dtype, contiguous); a converted copy
// is written back after the launch.
struct RunningStat {
  Tensor orig, work;
  RunningStat(const OptTensor& t, at::ScalarType acc) {
    if (!t.has_value()) return;
    orig = *t;
    work = (orig.scalar_type() == acc && orig.is_contiguous()) ? orig : orig.to(acc).contiguous();
  }
  void* ptr() const { return work.defined() ? work.data_ptr() : nullptr; }
  void write_back() {
    if (work.defined() && !work.is_same(orig)) orig.copy_(work);
  }
};

Tensor acc_or_empty(const OptTensor& t, at::ScalarType acc) {
  return t.has_value() ? acc_vec(*t, acc) : Tensor();
}
const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

template <Dev dev>
std::tuple<Tensor, Tensor, Tensor, Tensor> linear_bn_act_fwd_impl(
    const Tensor& x, const Tensor& weight, const OptTensor& bias, const OptTensor& bn_weight,
    const OptTensor& bn_bias, const OptTensor& running_mean, const OptTensor& running_var,
    std::optional<double> slope_pre, std::optional<double> slope_post, double momentum, double eps,
    bool unbiased_running_var) {
  const char* op = "linear_bn_act";
  const DType dt = dtype_of(x, op, "x");
  TORCH_CHECK(x.dim() == 2, "fastgan::linear_bn_act: x must be 2-D [N, in], got shape ", shape_str(x.sizes()));
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(1), "fastgan::linear_bn_act: weight must be [out, ",
              std::to_string(x.size(1)), "], got shape ", shape_str(weight.sizes()));
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "fastgan::linear_bn_act: weight is ",
              dtype_str(weight.scalar_type()), " but x is ", dtype_str(x.scalar_type()));
  TORCH_CHECK(x.size(0) > 1, "fastgan::linear_bn_act: expected more than 1 row in training, got shape ",
              shape_str(x.sizes()));
  TORCH_CHECK(eps >= 0.0, "fastgan::linear_bn_act: eps must be >= 0, got ", std::to_string(eps));
  check_device(weight, x, op, "weight");
  const int64_t N = x.size(0), M = weight.size(0);
  check_channel_vec(bias, M, x, op, "bias");
  check_channel_vec(bn_weight, M, x, op, "bn_weight");
  check_channel_vec(bn_bias, M, x, op, "bn_bias");
  check_channel_vec(running_mean, M, x, op, "running_mean");
  check_channel_vec(running_var, M, x, op, "running_var");
  const ActMode pre = act_of(slope_pre, op), post = act_of(slope_post, op);
  const DeviceGuard guard(x, dev);
  const at::ScalarType acc = acc_type(x.scalar_type());
  // bfloat16: the bias inside the GEMM (fp32 accumulator, one rounding), so that act_pre's mask
  // is the sign of the exact pre-activation (as linear_act); else added by the epilogue.
  const bool bias_in_gemm = bias.has_value() && (pre == ActMode::kIdentity || dt == DType::kBFloat16);
  Tensor h = bias_in_gemm ? at::addmm(bias->to(x.scalar_type()), x, weight.t()) : at::mm(x, weight.t());
  if (!h.is_contiguous()) h = h.contiguous();
  const Tensor b = bias_in_gemm ? Tensor() : acc_or_empty(bias, acc);
  const Tensor w = acc_or_empty(bn_weight, acc), bb = acc_or_empty(bn_bias, acc);
  Tensor y = fresh(at::empty_like(h));
  Tensor mean = fresh(at::empty({M}, x.options().dtype(acc)));
  Tensor invstd = fresh(at::empty({M}, x.options().dtype(acc)));
  RunningStat rm(running_mean, acc), rv(running_var, acc);
  LinBnFwdParams p;
  p.dtype = dt;
  p.h = h.data_ptr();
  p.y = y.data_ptr();
  p.bias = ptr_or_null(b);
  p.gamma = ptr_or_null(w);
  p.beta = ptr_or_null(bb);
  p.mean = mean.data_ptr();
  p.invstd = invstd.data_ptr();
  p.running_mean = rm.ptr();
  p.running_var = rv.ptr();
  p.N = N;
  p.M = M;
  p.act_pre = pre;
  p.act_post = post;
  p.slope_pre = slope_pre.value_or(0.0);
  p.slope_post = slope_post.value_or(0.0);
  p.unbiased_running_var = unbiased_running_var;
  p.momentum = momentum;
  p.eps = eps;
  if (M > 0)
    run_kernel(dev, op, x, [&] { cpu_linear_bn_fwd(p); },
               [&](cudaStream_t s) { return launch_linear_bn_fwd(p, s); });
  rm.write_back();
  rv.write_back();
  return {y, h, mean, invstd};
}

template <Dev dev>
Tensor linear_bn_act_impl(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                          const OptTensor& bn_weight, const OptTensor& bn_bias,
                          const OptTensor& running_mean, const OptTensor& running_var,
                          std::optional<double> slope_pre, std::optional<double> slope_post,
                          double momentum, double eps, bool unbiased_running_var) {
  return std::get<0>(linear_bn_act_fwd_impl<dev>(x, weight, bias, bn_weight, bn_bias, running_mean,
                                                 running_var, slope_pre, slope_post, momentum, eps,
                                                 unbiased_running_var));
}

template <Dev dev>
std::tuple<Tensor, Tensor, Tensor, Tensor> linear_bn_act_backward_impl(
    const Tensor& grad, const Tensor& h, const OptTensor& bn_weight, const OptTensor& bn_bias,
    const Tensor& mean, const Tensor& invstd, std::optional<double> slope_pre,
    std::optional<double> slope_post) {
  const char* op = "linear_bn_act_backward";
  const DType dt = dtype_of(h, op, "h");
  TORCH_CHECK(h.dim() == 2 && grad.sizes() == h.sizes(), "fastgan::linear_bn_act_backward: grad ",
              shape_str(grad.sizes()), " and h ", shape_str(h.sizes()), " must be one 2-D shape");
  TORCH_CHECK(grad.scalar_type() == h.scalar_type(), "fastgan::linear_bn_act_backward: grad is ",
              dtype_str(grad.scalar_type()), " but h is ", dtype_str(h.scalar_type()));
  check_device(grad, h, op, "grad");
  const int64_t N = h.size(0), M = h.size(1);
  const at::ScalarType acc = acc_type(h.scalar_type());
  check_channel_vec(bn_weight, M, h, op, "bn_weight");
  check_channel_vec(bn_bias, M, h, op, "bn_bias");
  for (const Tensor* t : {&mean, &invstd})
    TORCH_CHECK(t->dim() == 1 && t->size(0) == M && t->scalar_type() == acc,
                "fastgan::linear_bn_act_backward: mean / invstd must be ", dtype_str(acc), " [", std::to_string(M),
                "] (as linear_bn_act_fwd returns them), got ", shape_str(t->sizes()));
  const DeviceGuard guard(h, dev);
  const Tensor hc = h.contiguous(), gc = grad.contiguous(), mc = mean.contiguous(), ic = invstd.contiguous();
  const Tensor w = acc_or_empty(bn_weight, acc), bb = acc_or_empty(bn_bias, acc);
  Tensor gz = fresh(at::empty_like(hc));
  Tensor db = fresh(at::empty({M}, h.options().dtype(acc)));
  Tensor dgamma = fresh(at::empty({M}, h.options().dtype(acc)));
  Tensor dbeta = fresh(at::empty({M}, h.options().dtype(acc)));
  LinBnBwdParams p;
  p.dtype = dt;
  p.grad = gc.data_ptr();
  p.h = hc.data_ptr();
  p.gamma = ptr_or_null(w);
  p.beta = ptr_or_null(bb);
  p.mean = mc.data_ptr();
  p.invstd = ic.data_ptr();
  p.gz = gz.data_ptr();
  p.db = db.data_ptr();
  p.dgamma = dgamma.data_ptr();
  p.dbeta = dbeta.data_ptr();
  p.N = N;
  p.M = M;
  p.act_pre = act_of(slope_pre, op);
  p.act_post = act_of(slope_post, op);
  p.slope_pre = slope_pre.value_or(0.0);
  p.slope_post = slope_post.value_or(0.0);
  if (M > 0 && N > 0)
    run_kernel(dev, op, h, [&] { cpu_linear_bn_bwd(p); },
               [&](cudaStream_t s) { return launch_linear_bn_bwd(p, s); });
  return {gz, db, dgamma, dbeta};
}

#define FASTGAN_LBA_ARGS                                                                           \
  "Tensor x, Tensor weight, Tensor? bias, Tensor? bn_weight, Tensor? bn_bias, "                    \
  "Tensor(a!)? running_mean, Tensor(b!)? running_var, float? slope_pre, float? slope_post, "      \
  "float momentum, float eps, bool unbiased_running_var"

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  def_ops(m, {"linear_bn_act(" FASTGAN_LBA_ARGS ") -> Tensor",
              "linear_bn_act_fwd(" FASTGAN_LBA_ARGS ") -> (Tensor, Tensor, Tensor, Tensor)",
              "linear_bn_act_backward(Tensor grad, Tensor h, Tensor? bn_weight, Tensor? bn_bias, "
              "Tensor mean, Tensor invstd, float? slope_pre, float? slope_post) "
              "-> (Tensor, Tensor, Tensor, Tensor)"});
}
FASTGAN_IMPLS(m.impl("linear_bn_act", &linear_bn_act_impl<D>);
              m.impl("linear_bn_act_fwd", &linear_bn_act_fwd_impl<D>);
              m.impl("linear_bn_act_backward", &linear_bn_act_backward_impl<D>);)

}  // namespace
}  // namespace detail
}  // namespace fastgan
