// fastgan::gan_loss under the Autograd key: its backward in C++, so an eager call costs one
// dispatch and no Python. The forward already wrote d(loss)/d(logits) (float32 or float64);
// the backward scales it by the incoming gradient. Under create_graph the gradient is
// recomputed with differentiable ATen ops (double backward, e.g. a penalty on D's gradient).
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/full_like.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/ones_like.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace fastgan {
namespace detail {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::tuple<Tensor, Tensor> gan_loss_below(const Tensor& logits, const OptTensor& target,
                                          double target_value, c10::string_view kind,
                                          c10::string_view reduction, double weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastgan::gan_loss", "")
                       .typed<std::tuple<Tensor, Tensor>(const Tensor&, const OptTensor&, double,
                                                         c10::string_view, c10::string_view,
                                                         double)>();
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(logits, target, target_value, kind, reduction, weight);
}

// d(loss)/d(logits) as differentiable ATen ops (the reference formula). hinge and linear are
// piecewise linear: their gradient is constant in the logits (zero second derivative), the
// hinge masks are comparisons.
Tensor grad_expr(const Tensor& logits, const Tensor& target, double target_value,
                 const std::string& kind, const std::string& reduction, double weight) {
  Tensor g;
  if (kind == "hinge") {
    const Tensor lo = (logits < 1).to(logits.scalar_type());
    const Tensor hi = (logits > -1).to(logits.scalar_type());
    g = target.defined() ? (1 - target) * hi - target * lo
                         : (1 - target_value) * hi - target_value * lo;
  } else if (kind == "linear") {
    g = target.defined() ? at::ones_like(logits) * (1 - 2 * target)
                         : at::full_like(logits, 1.0 - 2.0 * target_value);
  } else {
    const Tensor s = at::sigmoid(logits);
    const Tensor d = target.defined() ? s - target : s - target_value;
    g = kind == "bce" ? d : 2 * d * s * (1 - s);
  }
  if (reduction == "mean") g = g / c10::Scalar(logits.sym_numel());
  return weight == 1.0 ? g : g * weight;
}

// The unit gradients (fastgan/ops/units.py: the engine's backward seed, constant 1),
// marked from Python when each is made. Held here, so their memory is never another tensor's;
// a backward that receives one returns the forward's gradient without multiplying by it.
std::mutex& unit_mutex() {
  static std::mutex m;
  return m;
}
std::vector<Tensor>& units() {
  static std::vector<Tensor> u;
  return u;
}

void mark_unit_grad(const Tensor& t) {
  TORCH_CHECK(t.dim() == 0, "fastgan::mark_unit_grad: expected a 0-d tensor");
  std::lock_guard<std::mutex> lock(unit_mutex());
  units().push_back(t);
}

bool is_unit_grad(const Tensor& g) {
  // a unit is an inference tensor with real storage; a traced (fake, functional) one never is
  if (g.dim() != 0 || !g.is_inference() ||
      g.key_set().has_any(c10::DispatchKeySet({c10::DispatchKey::Python,
                                               c10::DispatchKey::Functionalize})))
    return false;
  std::lock_guard<std::mutex> lock(unit_mutex());
  for (const Tensor& u : units()) {
    if (u.data_ptr() == g.data_ptr() && u.scalar_type() == g.scalar_type() &&
        u.device() == g.device())
      return true;
  }
  return false;
}

// What both losses' forwards keep for the backward.
void save_loss(AutogradContext* ctx, const Tensor& logits, const OptTensor& target,
               double target_value, c10::string_view kind, c10::string_view reduction,
               double weight, const Tensor& grad) {
  ctx->mark_non_differentiable({grad});
  ctx->set_materialize_grads(false);   // no zero-filled gradient for the unused grad output
  ctx->saved_data["target_value"] = target_value;
  ctx->saved_data["kind"] = std::string(kind);
  ctx->saved_data["reduction"] = std::string(reduction);
  ctx->saved_data["weight"] = weight;
  ctx->save_for_backward({grad, logits, target.has_value() ? *target : Tensor()});
}

// d(loss)/d(logits) first, then `n_inputs - 1` undefined gradients.
variable_list loss_backward(AutogradContext* ctx, const variable_list& grads, size_t n_inputs);

class GanLoss : public torch::autograd::Function<GanLoss> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const OptTensor& target,
                               double target_value, c10::string_view kind,
                               c10::string_view reduction, double weight) {
    auto [loss, grad] = gan_loss_below(logits, target, target_value, kind, reduction, weight);
    save_loss(ctx, logits, target, target_value, kind, reduction, weight, grad);
    return {loss, grad};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return loss_backward(ctx, grads, 6);
  }
};

// gan_loss_stats: gan_loss's formula; stats is written in place and gets no gradient, nor do
// the metrics' inputs.
class GanLossStats : public torch::autograd::Function<GanLossStats> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& logits, const OptTensor& target,
                               double target_value, c10::string_view kind,
                               c10::string_view reduction, double weight, const Tensor& stats,
                               const Tensor& loss_d, const Tensor& real, const Tensor& fake) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastgan::gan_loss_stats", "")
                         .typed<std::tuple<Tensor, Tensor>(
                             const Tensor&, const OptTensor&, double, c10::string_view,
                             c10::string_view, double, const Tensor&, const Tensor&,
                             const Tensor&, const Tensor&)>();
    std::tuple<Tensor, Tensor> r;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      r = op.call(logits, target, target_value, kind, reduction, weight, stats, loss_d, real,
                  fake);
    }
    stats.unsafeGetTensorImpl()->bump_version();   // written in place below the version key
    save_loss(ctx, logits, target, target_value, kind, reduction, weight, std::get<1>(r));
    return {std::get<0>(r), std::get<1>(r)};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return loss_backward(ctx, grads, 10);
  }
};

variable_list loss_backward(AutogradContext* ctx, const variable_list& grads, size_t n_inputs) {
  const Tensor& gloss = grads[0];
  variable_list out(n_inputs);
  if (!gloss.defined()) return out;
  auto saved = ctx->get_saved_variables();
  const Tensor& grad = saved[0];
  const Tensor& logits = saved[1];
  if (at::GradMode::is_enabled()) {
    Tensor g = grad_expr(logits, saved[2], ctx->saved_data["target_value"].toDouble(),
                         ctx->saved_data["kind"].toStringRef(),
                         ctx->saved_data["reduction"].toStringRef(),
                         ctx->saved_data["weight"].toDouble());
    out[0] = (gloss * g).to(logits.scalar_type());
  } else {
    // grad is kept in float32 (float64): one rounding to the logits' dtype, here
    out[0] = is_unit_grad(gloss) ? grad.to(logits.scalar_type())
                                 : (gloss.to(grad.scalar_type()) * grad).to(logits.scalar_type());
  }
  return out;
}

std::tuple<Tensor, Tensor> gan_loss_autograd(const Tensor& logits, const OptTensor& target,
                                             double target_value, c10::string_view kind,
                                             c10::string_view reduction, double weight) {
  auto r = GanLoss::apply(logits, target, target_value, kind, reduction, weight);
  return {r[0], r[1]};
}

std::tuple<Tensor, Tensor> gan_loss_stats_autograd(const Tensor& logits, const OptTensor& target,
                                                   double target_value, c10::string_view kind,
                                                   c10::string_view reduction, double weight,
                                                   const Tensor& stats, const Tensor& loss_d,
                                                   const Tensor& real, const Tensor& fake) {
  auto r = GanLossStats::apply(logits, target, target_value, kind, reduction, weight, stats,
                               loss_d, real, fake);
  return {r[0], r[1]};
}

TORCH_LIBRARY_IMPL(fastgan, Autograd, m) {
  m.impl("gan_loss", &gan_loss_autograd);
  m.impl("gan_loss_stats", &gan_loss_stats_autograd);
}

TORCH_LIBRARY_FRAGMENT(fastgan, m) { m.def("mark_unit_grad(Tensor t) -> ()", &mark_unit_grad); }

}  // namespace
}  // namespace detail
}  // namespace fastgan
