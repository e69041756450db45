// GAN losses on logits, reduced, with d(loss)/d(logits) written in the same pass.
//   bce:   max(l, 0) - l * t + log1p(exp(-|l|))        grad: sigmoid(l) - t
//   lsgan: (sigmoid(l) - t)^2                           grad: 2 (s - t) s (1 - s)
//   hinge: t relu(1 - l) + (1 - t) relu(1 + l)          grad: -t [l < 1] + (1 - t) [l > -1]
//   linear: (1 - 2t) l                                  grad: 1 - 2t
// both multiplied by `scale` (weight/n for mean, weight for sum: the op's constant weight).
// With `stats` (gan_loss_stats), the same kernel then adds the iteration's metrics, the loss it
// wrote as loss_g (gan_stats.h: logits in stats' dtype, float32 or float64).
#pragma once
#include "common.h"
#include "gan_stats.h"

namespace fastgan {

enum class GanLossKind : int32_t { kBCE = 0, kLSGAN = 1, kHinge = 2, kLinear = 3 };

struct GanLossParams {
  DType dtype = DType::kFloat32;
  const void* logits = nullptr;   // T [n], contiguous
  int64_t n = 0;
  const void* target = nullptr;   // acc: [1] (a device scalar) or [n]; null: use target_value
  bool target_per_element = false;
  double target_value = 0.0;
  GanLossKind kind = GanLossKind::kBCE;
  double scale = 1.0;             // weight / n (mean) or weight (sum)
  void* loss = nullptr;           // T, one element
  void* grad = nullptr;           // acc [n] (float32 for bfloat16 logits: one rounding, later)
  const GanStatsParams* stats = nullptr;   // gan_loss_stats: its loss_g is `loss`
};

// CUDA (cuda/gan_loss.cu): one block-reduction kernel. Returns 0 or a cudaError_t value.
int launch_gan_loss(const GanLossParams& p, cudaStream_t stream);

// CPU (cpu/gan_loss.cpp).
void cpu_gan_loss(const GanLossParams& p);

}  // namespace fastgan
