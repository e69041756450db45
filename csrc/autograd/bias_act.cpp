// fastgan::bias_act and fastgan::bias_act_backward under the Autograd key, in C++ so an eager
// call costs one dispatch and no Python. y = act(x + b); act'(z) is read off y (the leaky mask
// from its sign, tanh's 1 - y^2, sigmoid's y(1 - y)). bias_act_backward is linear in its
// gradient, so its own backward (double backward: gradient penalties) is bias_act_backward again
// on the incoming gradients; the leaky mask is constant a.e. in y, tanh's and sigmoid's act'(y)
// are not, and their gradient in y (-2y, 1 - 2y, times g) is formed with ATen ops (a rare path).
#include <ATen/TensorOperators.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros_like.h>
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

Tensor bias_act_below(const Tensor& x, const OptTensor& bias, int64_t act, double slope,
                      int64_t dim) {
  static auto op = fastgan_op<Tensor(const Tensor&, const OptTensor&, int64_t, double, int64_t)>(
      "fastgan::bias_act");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(x, bias, act, slope, dim);
}

int64_t wrap_dim(int64_t dim, int64_t ndim) { return ndim > 0 ? ((dim % ndim) + ndim) % ndim : 0; }

Tensor sum_except(const Tensor& t, int64_t dim) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (d != dim) dims.push_back(d);
  return at::sum(t, dims);
}

class BiasAct : public torch::autograd::Function<BiasAct> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const OptTensor& bias, int64_t act,
                        double slope, int64_t dim) {
    Tensor y = bias_act_below(x, bias, act, slope, dim);
    ctx->saved_data["act"] = act;
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["dim"] = wrap_dim(dim, x.dim());
    ctx->saved_data["bias_dtype"] = dtype_ivalue(bias);
    ctx->save_for_backward({act != kActIdentity ? y : Tensor()});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const Tensor& gy = grads[0];
    variable_list out(5);
    if (!gy.defined()) return out;
    const Tensor y = ctx->get_saved_variables()[0];
    // Edges exist for defined tensors only: the bias' is 1 when there is one.
    const bool need_x = ctx->needs_input_grad(0);
    const bool need_b = !ctx->saved_data["bias_dtype"].isNone() && ctx->needs_input_grad(1);
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const int64_t act = ctx->saved_data["act"].toInt();
    Tensor gx, db;
    if (act == kActIdentity) {
      gx = gy;
      if (need_b) db = sum_except(gy, dim);
    } else {
      std::tie(gx, db) = call_bias_act_backward(gy, y, act, ctx->saved_data["slope"].toDouble(),
                                                dim, need_b);
    }
    if (need_x) out[0] = gx;
    if (need_b && db.defined()) out[1] = db.to(ctx->saved_data["bias_dtype"].toScalarType());
    return out;
  }
};

class BiasActBackward : public torch::autograd::Function<BiasActBackward> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& grad, const Tensor& y,
                               int64_t act, double slope, int64_t dim, bool need_db) {
    Tensor gx, db;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      std::tie(gx, db) = call_bias_act_backward(grad, y, act, slope, dim, need_db);
    }
    const bool smooth = act == kActTanh || act == kActSigmoid;
    ctx->saved_data["act"] = act;
    ctx->saved_data["slope"] = slope;
    ctx->saved_data["dim"] = wrap_dim(dim, y.dim());
    ctx->saved_data["need_db"] = need_db;
    ctx->save_for_backward({y, smooth ? grad : Tensor()});
    return {gx, db};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(6);
    auto saved = ctx->get_saved_variables();
    const Tensor &y = saved[0], &grad = saved[1];
    const bool need_g = ctx->needs_input_grad(0);
    const bool need_y = grad.defined() && ctx->needs_input_grad(1);
    if (!(need_g || need_y)) return out;
    const int64_t dim = ctx->saved_data["dim"].toInt();
    const int64_t act = ctx->saved_data["act"].toInt();
    Tensor total = grads[0].defined() ? grads[0] : at::zeros_like(y);
    const Tensor& g_db = grads[1];
    if (ctx->saved_data["need_db"].toBool() && g_db.defined() && g_db.sym_numel() > 0) {
      std::vector<int64_t> shape(y.dim(), 1);
      shape[dim] = -1;
      total = total + g_db.view(shape);
    }
    if (need_g)
      out[0] = std::get<0>(call_bias_act_backward(total, y, act, ctx->saved_data["slope"].toDouble(),
                                                  dim, false));
    if (need_y) out[1] = total * grad * (act == kActTanh ? -2.0 * y : 1.0 - 2.0 * y);
    return out;
  }
};

Tensor bias_act_autograd(const Tensor& x, const OptTensor& bias, int64_t act, double slope,
                         int64_t dim) {
  return BiasAct::apply(x, bias, act, slope, dim);
}

std::tuple<Tensor, Tensor> bias_act_backward_autograd(const Tensor& grad, const Tensor& y,
                                                      int64_t act, double slope, int64_t dim,
                                                      bool need_db) {
  auto r = BiasActBackward::apply(grad, y, act, slope, dim, need_db);
  return {r[0], r[1]};
}

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("bias_act", &bias_act_autograd);
  m.impl("bias_act_backward", &bias_act_backward_autograd);
}

}  // namespace
}  // namespace detail
}  // namespace fastgan
