// bias + activation epilogue (pairs with cuBLAS/cuDNN matmul and convolution) and its backward:
// the activation mask applied to the incoming gradient, fused with the bias-gradient reduction.
#pragma once
#include "common.h"

namespace fastgan {

// The activation code of bias_act / linear_act (fastgan/ops/activation.py): ActMode's values,
// then the saturating output activations, whose derivative is read off the saved output.
inline constexpr int kActTanh = 3;     // y = tanh(z), dz = g * (1 - y^2)
inline constexpr int kActSigmoid = 4;  // y = sigmoid(z), dz = g * y * (1 - y)
static_assert(static_cast<int>(ActMode::kLeaky) == 2, "activation codes 0-2 are ActMode's");

// The code for (act, slope), checked (a one-line error naming the allowed values).
int epi_act_of(int64_t act, double slope, const char* op);

struct BiasActParams {
  DType dtype = DType::kFloat32;
  const void* x = nullptr;     // T, dense [outer, C, inner]
  const void* bias = nullptr;  // acc [C] or null
  void* y = nullptr;           // T, same layout as x (may equal x: in-place epilogue)
  Geom g;
  int act = 0;  // activation code (above)
  double slope = 0.0;
  // Optional inference-mode batch norm after the activation (no grad):
  // y = (act(x + bias) - bn_mean[c]) / sqrt(bn_var[c] + bn_eps) * bn_w[c] + bn_b[c].
  const void* bn_mean = nullptr;  // acc [C] or null (then no batch norm)
  const void* bn_var = nullptr;   // acc [C]
  const void* bn_w = nullptr;     // acc [C] or null (1)
  const void* bn_b = nullptr;     // acc [C] or null (0)
  double bn_eps = 0.0;
};

struct BiasActBwdParams {
  DType dtype = DType::kFloat32;
  const void* grad = nullptr;  // T, same layout as y
  const void* y = nullptr;     // T, the forward output (the activation's derivative is read off it)
  void* gx = nullptr;          // T, grad * act'(y)
  void* db = nullptr;          // T [C], sum of gx over outer and inner; null: not wanted
  void* workspace = nullptr;   // CUDA only: bias_act_bwd_workspace_bytes() bytes
  Geom g;
  int act = 0;  // activation code (above)
  double slope = 0.0;
};

// CUDA (cuda/bias_act.cu). Return 0 or a cudaError_t value.
int launch_bias_act_fwd(const BiasActParams& p, cudaStream_t stream);
int launch_bias_act_bwd(const BiasActBwdParams& p, cudaStream_t stream);
size_t bias_act_bwd_workspace_bytes(const BiasActBwdParams& p);

// CPU (cpu/bias_act.cpp).
void cpu_bias_act_fwd(const BiasActParams& p);
void cpu_bias_act_bwd(const BiasActBwdParams& p);

}  // namespace fastgan
