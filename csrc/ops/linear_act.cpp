// fastgan::linear_act: cuBLAS / MKL matmul, then the fused bias + activation epilogue in place
// (ops/bias_act.cpp).
#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>

#include <tuple>
#include <vector>

#include "bias_act.h"
#include "op_common.h"

namespace fastgan {
namespace detail {

namespace {

template <Dev dev>
Tensor linear_act_impl(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                       int64_t act_code, double slope, const OptTensor& bn_mean, const OptTensor& bn_var,
                       const OptTensor& bn_weight, const OptTensor& bn_bias, double bn_eps) {
  const char* op = "linear_act";
  const DType dt = dtype_of(x, op, "x");
  const int act = epi_act_of(act_code, slope, op);
  const bool identity = act == static_cast<int>(ActMode::kIdentity);
  TORCH_CHECK(x.dim() >= 1, "fastgan::linear_act: x must have at least one dimension");
  TORCH_CHECK(weight.dim() == 2, "fastgan::linear_act: weight must be 2-D [out, in], got shape ",
              shape_str(weight.sizes()));
  const int64_t K = x.size(-1), M = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, "fastgan::linear_act: x has ", std::to_string(K), " features but weight is ",
              shape_str(weight.sizes()));
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "fastgan::linear_act: weight is ",
              dtype_str(weight.scalar_type()), " but x is ", dtype_str(x.scalar_type()));
  check_device(weight, x, op, "weight");
  check_channel_vec(bias, M, x, op, "bias");
  const bool has_bn = bn_mean.has_value();
  TORCH_CHECK(has_bn == bn_var.has_value(), "fastgan::linear_act: bn_mean and bn_var go together");
  TORCH_CHECK(has_bn || (!bn_weight.has_value() && !bn_bias.has_value()),
              "fastgan::linear_act: bn_weight / bn_bias without bn_mean");
  check_channel_vec(bn_mean, M, x, op, "bn_mean");
  check_channel_vec(bn_var, M, x, op, "bn_var");
  check_channel_vec(bn_weight, M, x, op, "bn_weight");
  check_channel_vec(bn_bias, M, x, op, "bn_bias");
  const DeviceGuard guard(x, dev);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = M;
  const Tensor x2 = x.reshape({-1, K});
  // float32 / float64: plain matmul, then bias + activation in one fused pass over the output.
  // bfloat16: the bias is added inside the GEMM (fp32 accumulator, one rounding), so that the
  // activation mask (the sign of the rounded output) is the sign of the exact pre-activation;
  // adding it after a rounded bf16 product would flip the mask of near-zero elements.
  const bool bias_in_gemm = bias.has_value() && (identity || dt == DType::kBFloat16);
  Tensor y = bias_in_gemm ? at::addmm(bias->to(x.scalar_type()), x2, weight.t()) : at::mm(x2, weight.t());
  if (!identity || has_bn) {
    Tensor b, bm, bv, bw, bb;
    BiasActParams p;
    p.dtype = dt;
    p.x = y.data_ptr();
    p.y = y.data_ptr();
    if (bias.has_value() && !bias_in_gemm) {
      b = acc_vec(*bias, acc_type(x.scalar_type()));
      p.bias = b.data_ptr();
    }
    p.g = Geom{y.size(0), M, 1};
    p.act = act;
    p.slope = slope;
    if (has_bn) {  // inference-mode batch norm after the activation, in the same pass
      const at::ScalarType at_ = acc_type(x.scalar_type());
      bm = acc_vec(*bn_mean, at_);
      bv = acc_vec(*bn_var, at_);
      p.bn_mean = bm.data_ptr();
      p.bn_var = bv.data_ptr();
      if (bn_weight.has_value()) {
        bw = acc_vec(*bn_weight, at_);
        p.bn_w = bw.data_ptr();
      }
      if (bn_bias.has_value()) {
        bb = acc_vec(*bn_bias, at_);
        p.bn_b = bb.data_ptr();
      }
      p.bn_eps = bn_eps;
    }
    run_bias_act(p, y, dev);
  }
  return x.dim() == 2 ? y : y.view(out_shape);
}

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  def_ops(m, {"linear_act(Tensor x, Tensor weight, Tensor? bias, int act, float slope, Tensor? bn_mean=None, "
                 "Tensor? bn_var=None, Tensor? bn_weight=None, Tensor? bn_bias=None, float bn_eps=0.0) -> Tensor"});
}
FASTGAN_IMPLS(m.impl("linear_act", &linear_act_impl<D>);)

}  // namespace
}  // namespace detail
}  // namespace fastgan
