// fastgan::linear_act under the Autograd key: y = act(x @ W.T + b), its backward in C++ (the
// fused act'(y) + bias-gradient kernel, then the two matmuls), so an eager call costs one
// dispatch and no Python. Double backward goes through bias_act_backward's own autograd
// (csrc/autograd/bias_act.cpp) and differentiable matmuls. The folded inference BatchNorm
// (bn_* arguments) is for no-grad calls only.
#include <ATen/TensorOperators.h>
#include <ATen/ops/mm.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "calls.h"

namespace fastgan {
namespace detail {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using LinearActSig = Tensor(const Tensor&, const Tensor&, const OptTensor&, int64_t, double,
                            const OptTensor&, const OptTensor&, const OptTensor&,
                            const OptTensor&, double);

Tensor linear_act_below(const Tensor& x, const Tensor& weight, const OptTensor& bias, int64_t act,
                        double slope, const OptTensor& bn_mean, const OptTensor& bn_var,
                        const OptTensor& bn_weight, const OptTensor& bn_bias, double bn_eps) {
  static auto op = fastgan_op<LinearActSig>("fastgan::linear_act");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, weight, bias, act, slope, bn_mean, bn_var, bn_weight, bn_bias, bn_eps);
}

class LinearAct : public torch::autograd::Function<LinearAct> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const OptTensor& bias, int64_t act, double slope) {
    Tensor y = linear_act_below(x, weight, bias, act, slope, {}, {}, {}, {}, 0.0);
    ctx->saved_data["act"] = act;
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["bias_dtype"] = dtype_ivalue(bias);
    // The activation's derivative is read off the output.
    ctx->save_for_backward({x, weight, act != kActIdentity ? y : Tensor()});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &y = saved[2];
    const Tensor& gy = grads[0];
    variable_list out(5);
    if (!gy.defined()) return out;
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    // Edges exist for defined tensors only: the bias' is 2 when there is one.
    const bool has_b = !ctx->saved_data["bias_dtype"].isNone();
    const bool need_b = has_b && ctx->needs_input_grad(2);
    const int64_t M = weight.size(0), K = weight.size(1);
    const int64_t act = ctx->saved_data["act"].toInt();
    const Tensor gy2 = gy.reshape({-1, M});
    Tensor gz, db;
    if (act == kActIdentity) {
      gz = gy2;
      if (need_b) db = gz.sum(0);
    } else {
      std::tie(gz, db) = call_bias_act_backward(gy2, y.reshape({-1, M}), act,
                                                ctx->saved_data["slope"].toDouble(), 1, need_b);
    }
    if (need_x) out[0] = at::mm(gz, weight).reshape(x.sizes());
    if (need_w) out[1] = at::mm(gz.t(), x.reshape({-1, K}));
    if (need_b && db.defined()) out[2] = db.to(ctx->saved_data["bias_dtype"].toScalarType());
    return out;
  }
};

bool needs_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }

Tensor linear_act_autograd(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                           int64_t act, double slope, const OptTensor& bn_mean,
                           const OptTensor& bn_var, const OptTensor& bn_weight,
                           const OptTensor& bn_bias, double bn_eps) {
  if (bn_mean.has_value() || bn_var.has_value() || bn_weight.has_value() || bn_bias.has_value()) {
    const bool grad = at::GradMode::is_enabled() &&
        (needs_grad(x) || needs_grad(weight) || needs_grad(bias.value_or(Tensor())) ||
         needs_grad(bn_weight.value_or(Tensor())) || needs_grad(bn_bias.value_or(Tensor())));
    TORCH_CHECK(!grad, "fastgan::linear_act: the folded inference BatchNorm (bn_*) is for "
                "no-grad calls; run it under torch.no_grad() or without bn_*");
    return linear_act_below(x, weight, bias, act, slope, bn_mean, bn_var, bn_weight, bn_bias, bn_eps);
  }
  return LinearAct::apply(x, weight, bias, act, slope);
}

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) { m.impl("linear_act", &linear_act_autograd); }

}  // namespace
}  // namespace detail
}  // namespace fastgan
