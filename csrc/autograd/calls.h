// The fastgan operators as the autograd kernels call them: through the dispatcher, so a call
// below the Autograd key reaches the CPU or CUDA kernel and a call above it records its own
// autograd node (double backward).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <ATen/core/LegacyTypeDispatch.h>

#include <optional>
#include <tuple>

namespace fastgan {
namespace detail {

using OptTensor = std::optional<at::Tensor>;

// What the autograd contexts keep in saved_data: optional numbers and the dtype of an optional
// tensor as IValues (None when absent), and back.
inline c10::IValue opt_ivalue(const std::optional<double>& v) {
  return v.has_value() ? c10::IValue(*v) : c10::IValue();
}
inline std::optional<double> opt_double(const c10::IValue& v) {
  return v.isNone() ? std::nullopt : std::optional<double>(v.toDouble());
}
inline c10::IValue dtype_ivalue(const OptTensor& t) {
  return t.has_value() ? c10::IValue(t->scalar_type()) : c10::IValue();
}
// A saved tensor back as the optional argument it was (undefined: absent).
inline OptTensor opt_tensor(const at::Tensor& t) {
  return t.defined() ? OptTensor(t) : std::nullopt;
}

// The typed handle of fastgan::<name>, looked up once per signature.
template <typename Sig>
c10::TypedOperatorHandle<Sig> fastgan_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// The activation codes of the epilogue kernels (fastgan/ops/activation.py).
constexpr int64_t kActIdentity = 0, kActTanh = 3, kActSigmoid = 4;

inline std::tuple<at::Tensor, at::Tensor> call_bias_act_backward(const at::Tensor& grad,
                                                                 const at::Tensor& y, int64_t act,
                                                                 double slope, int64_t dim,
                                                                 bool need_db) {
  static auto op = fastgan_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, int64_t, double, int64_t, bool)>(
      "fastgan::bias_act_backward");
  if (!at::GradMode::is_enabled()) {   // no graph to record: straight to the kernel
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(grad, y, act, slope, dim, need_db);
  }
  return op.call(grad, y, act, slope, dim, need_db);
}

}  // namespace detail
}  // namespace fastgan
