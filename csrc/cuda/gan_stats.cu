// fastgan::gan_stats on CUDA: one block sums both sets of sigmoids in the logits' accumulation
// type (a deterministic block reduction) and adds the five metrics to stats in place. Torch-free.
#include "cuda_common.cuh"
#include "gan_stats.h"

namespace fastgan {
namespace {

using namespace cu;

template <typename S>
__global__ void gan_stats_kernel(GanStatsParams p) {
  gan_stats_block_of<S>(p);
}

}  // namespace

int launch_gan_stats(const GanStatsParams& p, cudaStream_t stream) {
  if (p.stats_dtype == DType::kFloat64)
    gan_stats_kernel<double><<<1, kGanStatsThreads, 0, stream>>>(p);
  else
    gan_stats_kernel<float><<<1, kGanStatsThreads, 0, stream>>>(p);
  return launch_status();
}

}  // namespace fastgan
