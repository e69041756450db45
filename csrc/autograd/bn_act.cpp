// fastgan::bn_act (normalize, affine, activation) under the Autograd key, in C++ so an eager
// call costs one dispatch and no Python. With training=True, mean/invstd are x's batch
// statistics (bn_stats on x, not differentiated) and the backward kernel includes their gradient
// terms, exactly as F.batch_norm's; with training=False they are constants. Double backward
// through the fused backward is not implemented (the reference backend has it).
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "calls.h"

namespace fastgan {
namespace detail {
namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using BnActSig = Tensor(const Tensor&, const OptTensor&, const OptTensor&, const Tensor&,
                        const Tensor&, std::optional<double>, bool, std::optional<double>);
using BnStatsSig = std::tuple<Tensor, Tensor>(const Tensor&, const OptTensor&, const OptTensor&,
                                              bool, double, double, bool);
using BnActBwdSig = std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&,
                                                       const OptTensor&, const OptTensor&,
                                                       const Tensor&, const Tensor&,
                                                       std::optional<double>, bool);


class BnActBackward : public torch::autograd::Function<BnActBackward> {
 public:
  static variable_list forward(AutogradContext*, const Tensor& grad, const Tensor& x,
                               const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                               const Tensor& invstd, std::optional<double> slope, bool training) {
    static auto op = fastgan_op<BnActBwdSig>("fastgan::bn_act_backward");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [dx, dw, db] = op.call(grad, x, weight, bias, mean, invstd, slope, training);
    return {dx, dw, db};
  }

  static variable_list backward(AutogradContext*, variable_list) {
    TORCH_CHECK_NOT_IMPLEMENTED(false,
        "fastgan: double backward through bn_act is not implemented in the cuda backend "
        "(use the reference backend for gradient penalties through batch norm)");
    return {};
  }
};

class BnAct : public torch::autograd::Function<BnAct> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const OptTensor& weight,
                        const OptTensor& bias, const Tensor& mean, const Tensor& invstd,
                        std::optional<double> slope, bool training,
                        std::optional<double> var_eps) {
    static auto op = fastgan_op<BnActSig>("fastgan::bn_act");
    Tensor y;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      y = op.call(x, weight, bias, mean, invstd, slope, training, var_eps);
    }
    // With var_eps (eval mode in one launch) `invstd` is the running variance.
    ctx->saved_data["var_eps"] = opt_ivalue(var_eps);
    ctx->saved_data["slope"] = opt_ivalue(slope);
    ctx->saved_data["training"] = training;
    ctx->saved_data["w_dtype"] = dtype_ivalue(weight);
    ctx->saved_data["b_dtype"] = dtype_ivalue(bias);
    ctx->save_for_backward({x, weight.value_or(Tensor()), bias.value_or(Tensor()), mean, invstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(8);
    if (!grads[0].defined()) return out;
    auto s = ctx->get_saved_variables();
    const std::optional<double> slope = opt_double(ctx->saved_data["slope"]);
    Tensor mean = s[3], invstd = s[4];
    const c10::IValue& ve = ctx->saved_data["var_eps"];
    if (!ve.isNone()) {   // running mean/var -> mean/invstd (eval statistics, no update)
      static auto stats = fastgan_op<BnStatsSig>("fastgan::bn_stats");
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(mean, invstd) = stats.call(s[0], mean, invstd, false, 0.0, ve.toDouble(), true);
    }
    variable_list r = BnActBackward::apply(grads[0], s[0], opt_tensor(s[1]), opt_tensor(s[2]), mean,
                                           invstd, slope, ctx->saved_data["training"].toBool());
    // Edges exist for defined tensors only: x 0, then weight and bias where given.
    const size_t w_edge = 1, b_edge = s[1].defined() ? 2 : 1;
    if (ctx->needs_input_grad(0)) out[0] = r[0];
    if (s[1].defined() && ctx->needs_input_grad(w_edge))
      out[1] = r[1].to(ctx->saved_data["w_dtype"].toScalarType());
    if (s[2].defined() && ctx->needs_input_grad(b_edge))
      out[2] = r[2].to(ctx->saved_data["b_dtype"].toScalarType());
    return out;
  }
};

Tensor bn_act_autograd(const Tensor& x, const OptTensor& weight, const OptTensor& bias,
                       const Tensor& mean, const Tensor& invstd, std::optional<double> slope,
                       bool training, std::optional<double> var_eps) {
  return BnAct::apply(x, weight, bias, mean, invstd, slope, training, var_eps);
}

// bn_stats is not differentiated (the batch statistics' gradient terms are in bn_act's
// backward): a fallthrough, so a call on x that requires grad needs no detach() and no warning.
TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("bn_act", &bn_act_autograd);
  m.impl("bn_stats", torch::CppFunction::makeFallthrough());
}

}  // namespace
}  // namespace detail
}  // namespace fastgan
