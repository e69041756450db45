// linear + training-mode batch norm + activations: the epilogue over a matmul's [N, M] output
// z = x @ W.T (row-major), each column one channel, and its backward. Forward, per column:
//   h = act_pre(z + bias)                        (stored: the backward reads act_pre' off it)
//   mean, invstd over the N rows of h; running statistics updated in place
//   y = act_post((h - mean) * (gamma * invstd) + beta)
// Backward, per column (gy -> gz = dL/dz; the caller runs the two matmuls):
//   gu = act_post'(u) gy, dbeta = sum gu, dgamma = sum gu * xhat
//   gz = act_pre'(h) * gamma * invstd * (gu - dbeta / N - xhat * dgamma / N), db = sum gz
// Torch-free.
#pragma once
#include "common.h"

namespace fastgan {

struct LinBnFwdParams {
  DType dtype = DType::kFloat32;
  void* h = nullptr;              // T [N, M] in: z (bias not yet added unless bias == null);
                                  // out: h = act_pre(z + bias), in place
  void* y = nullptr;              // T [N, M] out
  const void* bias = nullptr;     // acc [M] or null
  const void* gamma = nullptr;    // acc [M] or null (1)
  const void* beta = nullptr;     // acc [M] or null (0)
  void* mean = nullptr;           // acc [M] out
  void* invstd = nullptr;         // acc [M] out
  void* running_mean = nullptr;   // acc [M] in/out, or null
  void* running_var = nullptr;    // acc [M] in/out, or null
  int64_t N = 0, M = 0;
  ActMode act_pre = ActMode::kIdentity, act_post = ActMode::kIdentity;
  double slope_pre = 0.0, slope_post = 0.0;
  bool unbiased_running_var = true;
  double momentum = 0.1, eps = 1e-5;
};

struct LinBnBwdParams {
  DType dtype = DType::kFloat32;
  const void* grad = nullptr;     // T [N, M]: dL/dy
  const void* h = nullptr;        // T [N, M]: the forward's saved h
  const void* gamma = nullptr;    // acc [M] or null
  const void* beta = nullptr;     // acc [M] or null
  const void* mean = nullptr;     // acc [M]
  const void* invstd = nullptr;   // acc [M]
  void* gz = nullptr;             // T [N, M] out: dL/dz
  void* db = nullptr;             // acc [M] out, or null (not needed)
  void* dgamma = nullptr;         // acc [M] out
  void* dbeta = nullptr;          // acc [M] out
  int64_t N = 0, M = 0;
  ActMode act_pre = ActMode::kIdentity, act_post = ActMode::kIdentity;
  double slope_pre = 0.0, slope_post = 0.0;
};

// CUDA (cuda/linear_bn_act.cu): one launch each, a block owning whole columns. 0 or a cudaError_t.
int launch_linear_bn_fwd(const LinBnFwdParams& p, cudaStream_t stream);
int launch_linear_bn_bwd(const LinBnBwdParams& p, cudaStream_t stream);

// CPU (cpu/linear_bn_act.cpp).
void cpu_linear_bn_fwd(const LinBnFwdParams& p);
void cpu_linear_bn_bwd(const LinBnBwdParams& p);

}  // namespace fastgan
