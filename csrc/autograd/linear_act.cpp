// fastgan::linear_act under the Autograd key: y = act(x @ W.T + b), its backward in C++ (the
// fused activation-mask + bias-gradient kernel, then the two matmuls), so an eager call costs
// one dispatch and no Python. Double backward goes through bias_act_backward's own autograd
// (csrc/autograd/bias_act.cpp) and differentiable matmuls.
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

Tensor linear_act_below(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                        std::optional<double> slope) {
  static auto op = fastgan_op<Tensor(const Tensor&, const Tensor&, const OptTensor&,
                                     std::optional<double>)>("fastgan::linear_act");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, weight, bias, slope);
}

class LinearAct : public torch::autograd::Function<LinearAct> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const OptTensor& bias, std::optional<double> slope) {
    Tensor y = linear_act_below(x, weight, bias, slope);
    ctx->saved_data["slope"] = slope.has_value() ? c10::IValue(*slope) : c10::IValue();
    ctx->saved_data["bias_dtype"] =
        bias.has_value() ? c10::IValue(bias->scalar_type()) : c10::IValue();
    // The activation's derivative is read off the output (slopes >= 0 keep the sign).
    ctx->save_for_backward({x, weight, slope.has_value() ? y : Tensor()});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const Tensor &x = saved[0], &weight = saved[1], &y = saved[2];
    const Tensor& gy = grads[0];
    variable_list out(4);
    if (!gy.defined()) return out;
    const bool need_x = ctx->needs_input_grad(0), need_w = ctx->needs_input_grad(1);
    // Edges exist for defined tensors only: the bias' is 2 when there is one.
    const bool has_b = !ctx->saved_data["bias_dtype"].isNone();
    const bool need_b = has_b && ctx->needs_input_grad(2);
    const int64_t M = weight.size(0), K = weight.size(1);
    const Tensor gy2 = gy.reshape({-1, M});
    const c10::IValue& s = ctx->saved_data["slope"];
    Tensor gz, db;
    if (s.isNone()) {
      gz = gy2;
      if (need_b) db = gz.sum(0);
    } else {
      std::tie(gz, db) = call_bias_act_backward(gy2, y.reshape({-1, M}), s.toDouble(), 1, need_b);
    }
    if (need_x) out[0] = at::mm(gz, weight).reshape(x.sizes());
    if (need_w) out[1] = at::mm(gz.t(), x.reshape({-1, K}));
    if (need_b && db.defined()) out[2] = db.to(ctx->saved_data["bias_dtype"].toScalarType());
    return out;
  }
};

Tensor linear_act_autograd(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                           std::optional<double> slope) {
  return LinearAct::apply(x, weight, bias, slope);
}

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) { m.impl("linear_act", &linear_act_autograd); }

}  // namespace
}  // namespace detail
}  // namespace fastgan
