// fastgan::bn_stats, bn_act and bn_act_backward: schemas, argument checks, allocation and the
// launch of the CPU (cpu/bn_act.cpp) or CUDA (cuda/bn_act.cu, cuda/bn_act_backward.cu) kernels.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <tuple>

#include "bn_act.h"
#include "op_common.h"

namespace fastgan {
namespace detail {

namespace {

void check_bn_input(const Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() >= 2, "fastgan::", op, ": x must be [N, C] or [N, C, ...], got shape ", shape_str(x.sizes()));
}

// Runs `launch` on a float/double copy of a running statistic when the caller's tensor is not
// contiguous or not in the accumulation dtype, then copies the result back (all on device).
struct StatArg {
  Tensor orig, work;
  void prepare(const OptTensor& t, at::ScalarType acc) {
    if (!t.has_value()) return;
    orig = *t;
    work = (orig.scalar_type() == acc && orig.is_contiguous()) ? orig : orig.to(acc).contiguous();
  }
  void* ptr() { return work.defined() ? work.data_ptr() : nullptr; }
  void finish() {
    if (work.defined() && !work.is_same(orig)) orig.copy_(work);
  }
};

template <Dev dev>
std::tuple<Tensor, Tensor> bn_stats_impl(const Tensor& x, const OptTensor& running_mean,
                                         const OptTensor& running_var, bool training, double momentum,
                                         double eps, bool unbiased_running_var) {
  const char* op = "bn_stats";
  check_bn_input(x, op);
  const DType dt = dtype_of(x, op, "x");
  const int64_t C = x.size(1);
  check_channel_vec(running_mean, C, x, op, "running_mean");
  check_channel_vec(running_var, C, x, op, "running_var");
  TORCH_CHECK(eps >= 0.0, "fastgan::bn_stats: eps must be >= 0, got ", std::to_string(eps));
  if (training) {
    const int64_t count = C > 0 ? x.numel() / C : 0;
    TORCH_CHECK(count > 1, "fastgan::bn_stats: expected more than 1 value per channel when training, "
                "got input of shape ", shape_str(x.sizes()));
  } else {
    TORCH_CHECK(running_mean.has_value() && running_var.has_value(),
                "fastgan::bn_stats: running_mean and running_var are required when training=False");
  }
  const DeviceGuard guard(x, dev);
  const at::ScalarType acc = acc_type(x.scalar_type());
  const Tensor xd = x.is_non_overlapping_and_dense() ? x : x.contiguous();
  Tensor mean = fresh(at::empty({C}, x.options().dtype(acc)));
  Tensor invstd = fresh(at::empty({C}, x.options().dtype(acc)));
  StatArg rm, rv;
  rm.prepare(running_mean, acc);
  rv.prepare(running_var, acc);
  BnStatsParams p;
  p.dtype = dt;
  p.x = xd.data_ptr();
  p.g = geom_of(xd, 1);
  p.mean = mean.data_ptr();
  p.invstd = invstd.data_ptr();
  p.running_mean = rm.ptr();
  p.running_var = rv.ptr();
  p.training = training;
  p.unbiased_running_var = unbiased_running_var;
  p.momentum = momentum;
  p.eps = eps;
  run_kernel(dev, op, x, [&] { cpu_bn_stats(p); }, [&](cudaStream_t s) {
    const Tensor ws = workspace(bn_stats_workspace_bytes(p), x);
    p.workspace = ws.data_ptr();
    return launch_bn_stats(p, s);
  });
  if (training) {
    rm.finish();
    rv.finish();
  }
  return {mean, invstd};
}

void check_stat_vec(const Tensor& t, int64_t C, const Tensor& x, const char* op, const char* arg) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == C, "fastgan::", op, ": ", arg, " must be 1-D with ", std::to_string(C),
              " elements, got shape ", shape_str(t.sizes()));
  TORCH_CHECK(t.scalar_type() == acc_type(x.scalar_type()), "fastgan::", op, ": ", arg, " must be ",
              dtype_str(acc_type(x.scalar_type())), " (as returned by fastgan::bn_stats), got ", dtype_str(t.scalar_type()));
  check_device(t, x, op, arg);
}

// What bn_act and its backward both take: checked arguments and the per-channel vectors in the
// accumulation dtype, contiguous.
struct BnApplyArgs {
  DType dt;
  ActMode act;
  int64_t C;
  Tensor w, b, mean, invstd;  // w, b undefined when absent
};

BnApplyArgs check_bn_apply_args(const Tensor& x, const OptTensor& weight, const OptTensor& bias,
                                const Tensor& mean, const Tensor& invstd,
                                std::optional<double> slope, const char* op) {
  check_bn_input(x, op);
  BnApplyArgs a;
  a.dt = dtype_of(x, op, "x");
  a.act = act_of(slope, op);
  a.C = x.size(1);
  check_channel_vec(weight, a.C, x, op, "weight");
  check_channel_vec(bias, a.C, x, op, "bias");
  check_stat_vec(mean, a.C, x, op, "mean");
  check_stat_vec(invstd, a.C, x, op, "invstd");
  const at::ScalarType acc = acc_type(x.scalar_type());
  if (weight.has_value()) a.w = acc_vec(*weight, acc);
  if (bias.has_value()) a.b = acc_vec(*bias, acc);
  a.mean = mean.contiguous();
  a.invstd = invstd.contiguous();
  return a;
}

template <Dev dev>
Tensor bn_act_impl(const Tensor& x, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                   const Tensor& invstd, std::optional<double> slope, bool training,
                   std::optional<double> var_eps) {
  (void)training;  // only the backward uses it
  const char* op = "bn_act";
  TORCH_CHECK(!var_eps.has_value() || *var_eps >= 0.0, "fastgan::bn_act: var_eps must be >= 0, got ",
              std::to_string(var_eps.value_or(0.0)));
  const BnApplyArgs a = check_bn_apply_args(x, weight, bias, mean, invstd, slope, op);
  const DeviceGuard guard(x, dev);
  Tensor y = fresh(at::empty_like(x));
  Tensor xd = in_layout_of(x, y);
  BnApplyParams p;
  p.dtype = a.dt;
  p.x = xd.data_ptr();
  p.y = y.data_ptr();
  p.weight = a.w.defined() ? a.w.data_ptr() : nullptr;
  p.bias = a.b.defined() ? a.b.data_ptr() : nullptr;
  p.mean = a.mean.data_ptr();
  p.invstd = a.invstd.data_ptr();
  p.var_eps = var_eps.value_or(-1.0);
  p.g = geom_of(y, 1);
  p.act = a.act;
  p.slope = slope.value_or(0.0);
  run_kernel(dev, op, x, [&] { cpu_bn_apply(p); },
             [&](cudaStream_t s) { return launch_bn_apply(p, s); });
  return y;
}

template <Dev dev>
std::tuple<Tensor, Tensor, Tensor> bn_act_backward_impl(const Tensor& grad, const Tensor& x,
                                                        const OptTensor& weight, const OptTensor& bias,
                                                        const Tensor& mean, const Tensor& invstd,
                                                        std::optional<double> slope, bool training) {
  const char* op = "bn_act_backward";
  const BnApplyArgs a = check_bn_apply_args(x, weight, bias, mean, invstd, slope, op);
  TORCH_CHECK(grad.sizes() == x.sizes(), "fastgan::bn_act_backward: grad has shape ", shape_str(grad.sizes()),
              " but x has shape ", shape_str(x.sizes()));
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "fastgan::bn_act_backward: grad is ",
              dtype_str(grad.scalar_type()), " but x is ", dtype_str(x.scalar_type()));
  check_device(grad, x, op, "grad");
  const DeviceGuard guard(x, dev);
  const at::ScalarType acc = acc_type(x.scalar_type());
  Tensor dx = fresh(at::empty_like(x));
  Tensor xd = in_layout_of(x, dx);
  Tensor gd = in_layout_of(grad, dx);
  Tensor dw = fresh(at::empty({a.C}, x.options().dtype(acc)));
  Tensor dbias = fresh(at::empty({a.C}, x.options().dtype(acc)));
  BnBwdParams p;
  p.dtype = a.dt;
  p.grad = gd.data_ptr();
  p.x = xd.data_ptr();
  p.weight = a.w.defined() ? a.w.data_ptr() : nullptr;
  p.bias = a.b.defined() ? a.b.data_ptr() : nullptr;
  p.mean = a.mean.data_ptr();
  p.invstd = a.invstd.data_ptr();
  p.dx = dx.data_ptr();
  p.dweight = dw.data_ptr();
  p.dbias = dbias.data_ptr();
  p.g = geom_of(dx, 1);
  p.act = a.act;
  p.slope = slope.value_or(0.0);
  p.training = training;
  if (x.numel() == 0) {
    dw.zero_();
    dbias.zero_();
    return {dx, dw, dbias};
  }
  run_kernel(dev, op, x, [&] { cpu_bn_bwd(p); }, [&](cudaStream_t s) {
    const Tensor ws = workspace(bn_bwd_workspace_bytes(p), x);
    p.workspace = ws.data_ptr();
    return launch_bn_bwd(p, s);
  });
  return {dx, dw, dbias};
}

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  // bn_act with var_eps: `invstd` is the running variance, normalized by 1/sqrt(var + var_eps)
  // in the kernel (eval mode in one launch).
  def_ops(m, {"bn_stats(Tensor x, Tensor(a!)? running_mean, Tensor(b!)? running_var, bool training, "
              "float momentum, float eps, bool unbiased_running_var=True) -> (Tensor, Tensor)",
              "bn_act(Tensor x, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd, float? slope, "
              "bool training, float? var_eps=None) -> Tensor",
              "bn_act_backward(Tensor grad, Tensor x, Tensor? weight, Tensor? bias, Tensor mean, "
              "Tensor invstd, float? slope, bool training) -> (Tensor, Tensor, Tensor)"});
}
FASTGAN_IMPLS(m.impl("bn_stats", &bn_stats_impl<D>);
              m.impl("bn_act", &bn_act_impl<D>);
              m.impl("bn_act_backward", &bn_act_backward_impl<D>);)

}  // namespace
}  // namespace detail
}  // namespace fastgan
