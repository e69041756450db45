// fastgan::linear_bn_act under the Autograd key: y = act_post(BN_train(act_pre(x @ W.T + b))),
// its backward in C++ (the fused linear_bn_act_backward epilogue, then the two matmuls), so an
// eager call costs one dispatch and no Python. Double backward is not implemented (the
// reference backend's composition has it).
#include <ATen/ops/mm.h>
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
using OptDouble = std::optional<double>;

using Tensor4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using FwdSig = Tensor4(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                       const OptTensor&, const OptTensor&, const OptTensor&, OptDouble, OptDouble,
                       double, double, bool);
using BwdSig = Tensor4(const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                       const Tensor&, const Tensor&, OptDouble, OptDouble);


class LinearBnAct : public torch::autograd::Function<LinearBnAct> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& weight,
                        const OptTensor& bias, const OptTensor& bn_weight, const OptTensor& bn_bias,
                        const OptTensor& running_mean, const OptTensor& running_var,
                        OptDouble slope_pre, OptDouble slope_post, double momentum, double eps,
                        bool unbiased_running_var) {
    static auto op = fastgan_op<FwdSig>("fastgan::linear_bn_act_fwd");
    Tensor y, h, mean, invstd;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(y, h, mean, invstd) = op.call(x, weight, bias, bn_weight, bn_bias, running_mean, running_var,
                                             slope_pre, slope_post, momentum, eps, unbiased_running_var);
    }
    ctx->saved_data["slope_pre"] = opt_ivalue(slope_pre);
    ctx->saved_data["slope_post"] = opt_ivalue(slope_post);
    ctx->saved_data["b_dtype"] = dtype_ivalue(bias);
    ctx->saved_data["w_dtype"] = dtype_ivalue(bn_weight);
    ctx->saved_data["beta_dtype"] = dtype_ivalue(bn_bias);
    ctx->save_for_backward({x, weight, h, bn_weight.value_or(Tensor()), bn_bias.value_or(Tensor()),
                            mean, invstd});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(12);
    if (!grads[0].defined()) return out;
    TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(),
        "fastgan: double backward through linear_bn_act is not implemented in the cuda backend "
        "(use the reference backend)");
    static auto op = fastgan_op<BwdSig>("fastgan::linear_bn_act_backward");
    auto s = ctx->get_saved_variables();
    const Tensor &x = s[0], &weight = s[1];
    Tensor gz, db, dgamma, dbeta;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(gz, db, dgamma, dbeta) =
          op.call(grads[0], s[2], opt_tensor(s[3]), opt_tensor(s[4]), s[5], s[6],
                  opt_double(ctx->saved_data["slope_pre"]), opt_double(ctx->saved_data["slope_post"]));
    }
    // Edges exist for defined tensors only: x 0, weight 1, then bias, bn_weight, bn_bias where given.
    const c10::IValue &bt = ctx->saved_data["b_dtype"], &wt = ctx->saved_data["w_dtype"],
                      &et = ctx->saved_data["beta_dtype"];
    size_t edge = 2;
    const size_t b_edge = bt.isNone() ? 0 : edge++;
    const size_t w_edge = wt.isNone() ? 0 : edge++;
    const size_t e_edge = et.isNone() ? 0 : edge++;
    if (ctx->needs_input_grad(0)) out[0] = at::mm(gz, weight);
    if (ctx->needs_input_grad(1)) out[1] = at::mm(gz.t(), x);
    if (b_edge && ctx->needs_input_grad(b_edge)) out[2] = db.to(bt.toScalarType());
    if (w_edge && ctx->needs_input_grad(w_edge)) out[3] = dgamma.to(wt.toScalarType());
    if (e_edge && ctx->needs_input_grad(e_edge)) out[4] = dbeta.to(et.toScalarType());
    return out;
  }
};

Tensor linear_bn_act_autograd(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                              const OptTensor& bn_weight, const OptTensor& bn_bias,
                              const OptTensor& running_mean, const OptTensor& running_var,
                              OptDouble slope_pre, OptDouble slope_post, double momentum, double eps,
                              bool unbiased_running_var) {
  return LinearBnAct::apply(x, weight, bias, bn_weight, bn_bias, running_mean, running_var, slope_pre,
                            slope_post, momentum, eps, unbiased_running_var);
}

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) { m.impl("linear_bn_act", &linear_bn_act_autograd); }

}  // namespace
}  // namespace detail
}  // namespace fastgan
