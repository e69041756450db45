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

#ifdef __CUDACC__
#include "cuda_common.cuh"

namespace fastgan {
namespace cu {

constexpr int kGanStatsThreads = 512;   // gan_loss's block too: one reduction tree for both

template <typename T>
__device__ acc_t<T> sigmoid_sum(const T* __restrict__ z, int64_t n, acc_t<T>* sh) {
  using A = acc_t<T>;
  A s = A(0);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += A(1) / (A(1) + exp(-to_acc(z[i])));
  return block_sum(s, sh);
}

// The gan_stats kernel's work for one block of kGanStatsThreads threads; loss_g is read by
// thread 0 only (gan_loss_stats: the loss that thread has just written).
template <typename T, typename S>
__device__ void gan_stats_block(S* __restrict__ stats, const S* __restrict__ loss_d,
                                const S* loss_g, const T* __restrict__ real, int64_t n_real,
                                const T* __restrict__ fake, int64_t n_fake) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  const A sr = sigmoid_sum(real, n_real, sh);
  const A sf = sigmoid_sum(fake, n_fake, sh);
  if (threadIdx.x == 0) {
    stats[0] += *loss_d;
    stats[1] += *loss_g;
    stats[2] += (S)(sr / (A)n_real);   // n == 0: NaN, as torch's mean
    stats[3] += (S)(sf / (A)n_fake);
    stats[4] += S(1);
  }
}

// gan_stats_block for p's logit dtype (stats' dtype S chosen by the caller).
template <typename S>
__device__ void gan_stats_block_of(const GanStatsParams& p) {
  S* st = static_cast<S*>(p.stats);
  const S* ld = static_cast<const S*>(p.loss_d);
  const S* lg = static_cast<const S*>(p.loss_g);
  if (p.logit_dtype == DType::kFloat64)
    gan_stats_block(st, ld, lg, static_cast<const double*>(p.real), p.n_real,
                    static_cast<const double*>(p.fake), p.n_fake);
  else if (p.logit_dtype == DType::kBFloat16)
    gan_stats_block(st, ld, lg, static_cast<const __nv_bfloat16*>(p.real), p.n_real,
                    static_cast<const __nv_bfloat16*>(p.fake), p.n_fake);
  else
    gan_stats_block(st, ld, lg, static_cast<const float*>(p.real), p.n_real,
                    static_cast<const float*>(p.fake), p.n_fake);
}

}  // namespace cu
}  // namespace fastgan
#endif
