// GAN loss on logits: one block reads every logit once, writes d(loss)/d(logit) for each and the
// reduced loss (deterministic block reduction). GAN logits are small (one per sample, or a patch
// map), so a single block is enough and saves a second kernel. Torch-free.
#include <type_traits>

#include "cuda_common.cuh"
#include "gan_loss.h"

namespace fastgan {
namespace {

using namespace cu;

constexpr int kThreads = kGanStatsThreads;   // gan_loss_stats: the gan_stats block's tree


// Loss and gradient of one logit (before the reduction scale), in double whatever the input
// dtype: sigmoid(l) - t and 1 - sigmoid(l) cancel badly in float32 (GAN logits are few, so the
// cost is small). s and 1 - s both come from e = exp(-|l|) without a subtraction.
__device__ __forceinline__ void loss_grad(double l, double t, int kind, double& loss, double& grad) {
  if (kind == static_cast<int>(GanLossKind::kHinge)) {
    // `a < 0 ? 0 : a` keeps a NaN logit NaN; the subgradient at the kinks is 0, as torch.relu's
    const double a = 1.0 - l, b = 1.0 + l;
    loss = t * (a < 0.0 ? 0.0 : a) + (1.0 - t) * (b < 0.0 ? 0.0 : b);
    grad = (a > 0.0 ? -t : 0.0) + (b > 0.0 ? 1.0 - t : 0.0);
    return;
  }
  if (kind == static_cast<int>(GanLossKind::kLinear)) {
    loss = (1.0 - 2.0 * t) * l;
    grad = 1.0 - 2.0 * t;
    return;
  }
  const double e = exp(-fabs(l));  // in (0, 1]: no overflow
  const double d = 1.0 + e;
  const double s = l >= 0.0 ? 1.0 / d : e / d;   // sigmoid(l)
  const double sc = l >= 0.0 ? e / d : 1.0 / d;  // 1 - sigmoid(l)
  const double st = t > 0.5 ? (1.0 - t) - sc : s - t;  // s - t, the accurate way round
  if (kind == static_cast<int>(GanLossKind::kBCE)) {
    loss = (l > 0.0 ? l : 0.0) - l * t + log1p(e);
    grad = st;
  } else {
    loss = st * st;
    grad = 2.0 * st * s * sc;
  }
}

template <typename T, int VEC>
__global__ void gan_loss_kernel(const T* __restrict__ logits, int64_t n,
                                const acc_t<T>* __restrict__ target, bool per_element,
                                double target_value, int kind, double scale,
                                T* loss_out, acc_t<T>* __restrict__ grad,
                                GanStatsParams stats) {   // loss_out not restrict: stats reads it
  using A = acc_t<T>;
  __shared__ double sh[32];
  const double tscalar = (target && !per_element) ? (double)target[0] : (double)target_value;
  double sum = 0.0;
  const int64_t nvec = n / VEC;
  for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
    const int64_t i = v * VEC;
    const Vec<T, VEC> lv = load_vec<T, VEC>(logits + i);
    A gv[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const double t = per_element ? (double)target[i + k] : tscalar;
      double le, ge;
      loss_grad((double)to_acc(lv.v[k]), t, kind, le, ge);
      sum += le;
      gv[k] = (A)(ge * scale);
    }
#pragma unroll
    for (int k = 0; k < VEC; ++k) grad[i + k] = gv[k];
  }
  for (int64_t i = nvec * VEC + threadIdx.x; i < n; i += blockDim.x) {  // tail (VEC > 1)
    const double t = per_element ? (double)target[i] : tscalar;
    double le, ge;
    loss_grad((double)to_acc(logits[i]), t, kind, le, ge);
    sum += le;
    grad[i] = (A)(ge * scale);
  }
  sum = block_sum(sum, sh);
  if (threadIdx.x == 0) *loss_out = from_acc<T>(sum * scale);
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
    if (stats.stats != nullptr) gan_stats_block_of<T>(stats);   // loss_g = loss_out (thread 0)
  }
}

template <typename T>
int impl(const GanLossParams& p, cudaStream_t stream) {
  using A = acc_t<T>;
  const T* logits = static_cast<const T*>(p.logits);
  A* grad = static_cast<A*>(p.grad);
  const A* target = static_cast<const A*>(p.target);
  constexpr int VEC = vec_width<T>();
  const GanStatsParams stats = p.stats ? *p.stats : GanStatsParams{};   // stats null: none
  if (aligned16(logits) && aligned16(grad)) {
    gan_loss_kernel<T, VEC><<<1, kThreads, 0, stream>>>(logits, p.n, target, p.target_per_element,
                                                        p.target_value, (int)p.kind, p.scale,
                                                        static_cast<T*>(p.loss), grad, stats);
  } else {
    gan_loss_kernel<T, 1><<<1, kThreads, 0, stream>>>(logits, p.n, target, p.target_per_element,
                                                      p.target_value, (int)p.kind, p.scale,
                                                      static_cast<T*>(p.loss), grad, stats);
  }
  return launch_status();
}

}  // namespace

int launch_gan_loss(const GanLossParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat32: return impl<float>(p, stream);
    case DType::kBFloat16: return impl<__nv_bfloat16>(p, stream);
    case DType::kFloat64: return impl<double>(p, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace fastgan
