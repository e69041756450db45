// fastgan::gan_stats on CUDA: one block sums both sets of sigmoids in the logits' accumulation
// type (a deterministic block reduction) and adds the five metrics to stats in place. Torch-free.
#include "cuda_common.cuh"
#include "gan_stats.h"

namespace fastgan {
namespace {

using namespace cu;

constexpr int kThreads = 256;

template <typename T>
__device__ acc_t<T> sigmoid_sum(const T* __restrict__ z, int64_t n, acc_t<T>* sh) {
  using A = acc_t<T>;
  A s = A(0);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += A(1) / (A(1) + exp(-to_acc(z[i])));
  return block_sum(s, sh);
}

template <typename T, typename S>
__global__ void gan_stats_kernel(S* __restrict__ stats, const S* __restrict__ loss_d,
                                 const S* __restrict__ loss_g, const T* __restrict__ real,
                                 int64_t n_real, const T* __restrict__ fake, int64_t n_fake) {
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

template <typename T>
int impl(const GanStatsParams& p, cudaStream_t stream) {
  const T* real = static_cast<const T*>(p.real);
  const T* fake = static_cast<const T*>(p.fake);
  if (p.stats_dtype == DType::kFloat64)
    gan_stats_kernel<T, double><<<1, kThreads, 0, stream>>>(
        static_cast<double*>(p.stats), static_cast<const double*>(p.loss_d),
        static_cast<const double*>(p.loss_g), real, p.n_real, fake, p.n_fake);
  else
    gan_stats_kernel<T, float><<<1, kThreads, 0, stream>>>(
        static_cast<float*>(p.stats), static_cast<const float*>(p.loss_d),
        static_cast<const float*>(p.loss_g), real, p.n_real, fake, p.n_fake);
  return launch_status();
}

}  // namespace

int launch_gan_stats(const GanStatsParams& p, cudaStream_t stream) {
  switch (p.logit_dtype) {
    case DType::kFloat32: return impl<float>(p, stream);
    case DType::kBFloat16: return impl<__nv_bfloat16>(p, stream);
    case DType::kFloat64: return impl<double>(p, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace fastgan
