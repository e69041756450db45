// The training iteration's metrics in one kernel:
//   stats[0..4] += [loss_d, loss_g, mean sigmoid(real), mean sigmoid(fake), 1]
// with sigmoid and the means in the logits' accumulation type (float32; float64 for float64
// logits; the CPU sums in float64), every value converted to stats' dtype and added in it. The
// mean of zero logits is NaN (0 / 0), as torch's.
#pragma once
#include "common.h"

namespace fastgan {

struct GanStatsParams {
  DType stats_dtype = DType::kFloat32;   // kFloat32 or kFloat64
  void* stats = nullptr;                 // [5], contiguous
  const void* loss_d = nullptr;          // one element each, in stats' dtype
  const void* loss_g = nullptr;
  DType logit_dtype = DType::kFloat32;   // of real and fake
  const void* real = nullptr;            // [n_real], contiguous
  int64_t n_real = 0;
  const void* fake = nullptr;
  int64_t n_fake = 0;
};

// CUDA (cuda/gan_stats.cu): one block. Returns 0 or a cudaError_t value.
int launch_gan_stats(const GanStatsParams& p, cudaStream_t stream);

// CPU (cpu/gan_stats.cpp).
void cpu_gan_stats(const GanStatsParams& p);

}  // namespace fastgan
