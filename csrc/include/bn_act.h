// Batch norm + activation. Three pieces:
//   stats:    per-channel batch mean and 1/sqrt(var + eps) (training: one-pass Welford; running
//             statistics updated in place on the device), or the running statistics (eval);
//   apply:    y = act((x - mean) * invstd * weight + bias); in eval mode it may read the running
//             statistics itself (invstd = 1/sqrt(running_var + eps)), one kernel in all;
//   backward: dx, dweight, dbias in two passes (a per-channel reduction, then elementwise).
#pragma once
#include "common.h"

namespace fastgan {

struct BnStatsParams {
  DType dtype = DType::kFloat32;
  const void* x = nullptr;        // T, dense [outer, C, inner]
  Geom g;
  void* mean = nullptr;           // acc [C] out
  void* invstd = nullptr;         // acc [C] out
  void* running_mean = nullptr;   // acc [C] in/out, or null
  void* running_var = nullptr;    // acc [C] in/out, or null
  bool training = true;
  bool unbiased_running_var = true;  // running_var tracks the unbiased (PyTorch) or biased variance
  double momentum = 0.1;
  double eps = 1e-5;
  void* workspace = nullptr;      // CUDA only: bn_stats_workspace_bytes() bytes
};

struct BnApplyParams {
  DType dtype = DType::kFloat32;
  const void* x = nullptr;       // T
  void* y = nullptr;             // T, same layout as x
  const void* weight = nullptr;  // acc [C] or null (gamma = 1)
  const void* bias = nullptr;    // acc [C] or null (beta = 0)
  const void* mean = nullptr;    // acc [C]
  const void* invstd = nullptr;  // acc [C]; a variance when var_eps >= 0
  double var_eps = -1.0;         // >= 0: invstd holds a variance, normalized by 1/sqrt(var + var_eps)
  Geom g;
  ActMode act = ActMode::kIdentity;
  double slope = 0.0;
};

struct BnBwdParams {
  DType dtype = DType::kFloat32;
  const void* grad = nullptr;    // T, same layout as x
  const void* x = nullptr;       // T
  const void* weight = nullptr;  // acc [C] or null
  const void* bias = nullptr;    // acc [C] or null
  const void* mean = nullptr;    // acc [C]
  const void* invstd = nullptr;  // acc [C]
  void* dx = nullptr;            // T, same layout as x
  void* dweight = nullptr;       // acc [C] out
  void* dbias = nullptr;         // acc [C] out
  Geom g;
  ActMode act = ActMode::kIdentity;
  double slope = 0.0;
  bool training = true;          // mean/invstd are x's batch statistics (adds their gradient terms)
  void* workspace = nullptr;     // CUDA only: bn_bwd_workspace_bytes() bytes
};

// CUDA (cuda/bn_act.cu; the backward in cuda/bn_act_backward.cu). Return 0 or a cudaError_t value.
int launch_bn_stats(const BnStatsParams& p, cudaStream_t stream);
int launch_bn_apply(const BnApplyParams& p, cudaStream_t stream);
int launch_bn_bwd(const BnBwdParams& p, cudaStream_t stream);
size_t bn_stats_workspace_bytes(const BnStatsParams& p);
size_t bn_bwd_workspace_bytes(const BnBwdParams& p);

// CPU (cpu/bn_act.cpp).
void cpu_bn_stats(const BnStatsParams& p);
void cpu_bn_apply(const BnApplyParams& p);
void cpu_bn_bwd(const BnBwdParams& p);

}  // namespace fastgan
