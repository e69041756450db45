// Batch norm + activation on CUDA, forward: statistics and apply (the backward is in
// bn_act_backward.cu). Torch-free.
//   stats (training): one read of x; per-thread Welford, merged (Chan) across the block and then
//     across blocks in a per-channel finalize kernel that also updates the running statistics.
//   apply: y = act(x * scale + shift), scale = gamma * invstd, shift = beta - mean * scale; in
//     eval mode it may take the running variance and eps (invstd computed per element: one
//     kernel instead of stats_eval_kernel + apply).
#include "bn_act.h"
#include "cuda_common.cuh"

namespace fastgan {
namespace {

using namespace cu;

// ------------------------------------------------------------------------------------------
// Statistics
// ------------------------------------------------------------------------------------------

template <typename T, int VEC, typename I>
__global__ void
stats_planar_kernel(const T* __restrict__ x, acc_t<T>* __restrict__ partial, I outer, I C, I inner,
                    I per_split) {
  using A = acc_t<T>;
  __shared__ Welford<A> sh[32];
  const I c = blockIdx.x, s = blockIdx.y;
  const I vpr = inner / VEC;
  const I total = outer * vpr;
  const I begin = s * per_split;
  const I end = begin + per_split < total ? begin + per_split : total;
  Welford<A> w{A(0), A(0), A(0)};
  for (I k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const I o = k / vpr, j = k - o * vpr;
    const Vec<T, VEC> xv = load_vec<T, VEC>(x + (o * C + c) * inner + j * VEC);
#pragma unroll
    for (int q = 0; q < VEC; ++q) welford_add(w, to_acc(xv.v[q]));
  }
  w = warp_welford(w);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) sh[wid] = w;
  __syncthreads();
  if (threadIdx.x == 0) {
    Welford<A> t = sh[0];
    for (int i = 1; i < (int)(blockDim.x >> 5); ++i) t = welford_merge(t, sh[i]);
    A* out = partial + 3 * (static_cast<int64_t>(s) * C + c);
    out[0] = t.n;
    out[1] = t.mean;
    out[2] = t.m2;
  }
}

template <typename T, int VEC, typename I>
__global__ void
stats_rows_kernel(const T* __restrict__ x, acc_t<T>* __restrict__ partial, I R, I C,
                  I rows_per_split) {
  using A = acc_t<T>;
  __shared__ A sh_mean[kRowsTy][VEC][kRowsTx];
  __shared__ A sh_m2[kRowsTy][VEC][kRowsTx];
  __shared__ A sh_n[kRowsTy];
  const I c0 = (static_cast<I>(blockIdx.x) * kRowsTx + threadIdx.x) * VEC;
  const I s = blockIdx.y;
  const I r0 = s * rows_per_split;
  const I r1 = r0 + rows_per_split < R ? r0 + rows_per_split : R;
  A n = A(0), mean[VEC], m2[VEC];
#pragma unroll
  for (int q = 0; q < VEC; ++q) mean[q] = m2[q] = A(0);
  for (I r = r0 + threadIdx.y; r < r1; r += kRowsTy) {
    n += A(1);
    if (c0 < C) {
      const A inv = A(1) / n;
      const Vec<T, VEC> xv = load_vec<T, VEC>(x + r * C + c0);
#pragma unroll
      for (int q = 0; q < VEC; ++q) {
        const A v = to_acc(xv.v[q]);
        const A d = v - mean[q];
        mean[q] += d * inv;
        m2[q] += d * (v - mean[q]);
      }
    }
  }
#pragma unroll
  for (int q = 0; q < VEC; ++q) {
    sh_mean[threadIdx.y][q][threadIdx.x] = mean[q];
    sh_m2[threadIdx.y][q][threadIdx.x] = m2[q];
  }
  if (threadIdx.x == 0) sh_n[threadIdx.y] = n;
  __syncthreads();
  if (threadIdx.y == 0 && c0 < C) {
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      Welford<A> t{sh_n[0], sh_mean[0][q][threadIdx.x], sh_m2[0][q][threadIdx.x]};
#pragma unroll
      for (int r = 1; r < kRowsTy; ++r)
        t = welford_merge(t, Welford<A>{sh_n[r], sh_mean[r][q][threadIdx.x], sh_m2[r][q][threadIdx.x]});
      A* out = partial + 3 * (static_cast<int64_t>(s) * C + c0 + q);
      out[0] = t.n;
      out[1] = t.mean;
      out[2] = t.m2;
    }
  }
}

template <typename A>
__global__ void stats_finalize_kernel(const A* __restrict__ partial, int64_t C, int64_t S,
                                      A* __restrict__ mean_out, A* __restrict__ invstd_out,
                                      A* __restrict__ running_mean, A* __restrict__ running_var,
                                      A momentum, A eps, bool unbiased_running_var) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const A* p = partial + 3 * c;
  Welford<A> t{p[0], p[1], p[2]};
  for (int64_t s = 1; s < S; ++s) {
    p = partial + 3 * (s * C + c);
    t = welford_merge(t, Welford<A>{p[0], p[1], p[2]});
  }
  const A var = t.m2 / t.n;
  mean_out[c] = t.mean;
  invstd_out[c] = A(1) / sqrt(var + eps);
  if (running_mean) running_mean[c] = (A(1) - momentum) * running_mean[c] + momentum * t.mean;
  if (running_var) {
    const A batch_var = t.m2 / (unbiased_running_var ? t.n - A(1) : t.n);
    running_var[c] = (A(1) - momentum) * running_var[c] + momentum * batch_var;
  }
}

template <typename A>
__global__ void stats_eval_kernel(const A* __restrict__ running_mean, const A* __restrict__ running_var,
                                  int64_t C, A eps, A* __restrict__ mean_out, A* __restrict__ invstd_out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  mean_out[c] = running_mean[c];
  invstd_out[c] = A(1) / sqrt(running_var[c] + eps);
}

// ------------------------------------------------------------------------------------------
// Apply: elementwise over [outer, C, inner]
// ------------------------------------------------------------------------------------------

// scale_shift; with var_eps >= 0 `invstd` holds the running variance (eval mode in one kernel),
// turned into 1/sqrt(var + eps) as stats_eval_kernel does.
template <typename A>
__device__ __forceinline__ void apply_coefs(const A* __restrict__ w, const A* __restrict__ b,
                                            const A* __restrict__ mean, const A* __restrict__ invstd,
                                            int64_t c, A var_eps, A& m, A& scale, A& shift) {
  scale_shift(w, b, mean, invstd, c, m, scale, shift);
  if (var_eps >= A(0)) scale = (w ? w[c] : A(1)) * (A(1) / sqrt(invstd[c] + var_eps));
}

template <typename T, int VEC, bool PLANAR, typename I>
__global__ void
apply_kernel(const T* __restrict__ x, T* __restrict__ y, const acc_t<T>* __restrict__ w,
             const acc_t<T>* __restrict__ b, const acc_t<T>* __restrict__ mean,
             const acc_t<T>* __restrict__ invstd, I nvec, I C, I inner, int act, acc_t<T> slope,
             acc_t<T> var_eps) {
  using A = acc_t<T>;
  for (I v = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; v < nvec;
       v += static_cast<I>(gridDim.x) * blockDim.x) {
    const I i = v * VEC;
    const Vec<T, VEC> xv = load_vec<T, VEC>(x + i);
    Vec<T, VEC> yv;
    if (PLANAR) {
      A m, sc, sh;
      apply_coefs(w, b, mean, invstd, (i / inner) % C, var_eps, m, sc, sh);
#pragma unroll
      for (int q = 0; q < VEC; ++q) yv.v[q] = from_acc<T>(apply_act(bn_z(to_acc(xv.v[q]), m, sc, sh), act, slope));
    } else {
      const I c0 = i % C;
#pragma unroll
      for (int q = 0; q < VEC; ++q) {
        A m, sc, sh;
        apply_coefs(w, b, mean, invstd, c0 + q, var_eps, m, sc, sh);
        yv.v[q] = from_acc<T>(apply_act(bn_z(to_acc(xv.v[q]), m, sc, sh), act, slope));
      }
    }
    store_vec<T, VEC>(y + i, yv);
  }
}

// ------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------

template <typename T>
bool stats_aligned(const BnStatsParams& p) { return aligned16(p.x); }

template <typename T, typename I>
int stats_impl(const BnStatsParams& p, cudaStream_t stream) {
  using A = acc_t<T>;
  A* mean = static_cast<A*>(p.mean);
  A* invstd = static_cast<A*>(p.invstd);
  A* rm = static_cast<A*>(p.running_mean);
  A* rv = static_cast<A*>(p.running_var);
  const unsigned fin_blocks = (unsigned)ceil_div(p.g.C, 256);
  if (!p.training) {
    stats_eval_kernel<A><<<fin_blocks, 256, 0, stream>>>(rm, rv, p.g.C, (A)p.eps, mean, invstd);
    return launch_status();
  }
  constexpr int VEC = vec_width<T>();
  const T* x = static_cast<const T*>(p.x);
  const Plan pl = plan_reduce<T>(p.g, stats_aligned<T>(p));
  A* partial = static_cast<A*>(p.workspace);
  if (pl.rows) {
    const dim3 block(kRowsTx, kRowsTy), grid((unsigned)pl.grid_x, (unsigned)pl.splits);
    if (pl.vec == VEC)
      stats_rows_kernel<T, VEC, I><<<grid, block, 0, stream>>>(x, partial, (I)p.g.outer, (I)p.g.C, (I)pl.per_split);
    else
      stats_rows_kernel<T, 1, I><<<grid, block, 0, stream>>>(x, partial, (I)p.g.outer, (I)p.g.C, (I)pl.per_split);
  } else {
    const dim3 grid((unsigned)pl.grid_x, (unsigned)pl.splits);
    if (pl.vec == VEC)
      stats_planar_kernel<T, VEC, I><<<grid, kThreads, 0, stream>>>(x, partial, (I)p.g.outer, (I)p.g.C, (I)p.g.inner, (I)pl.per_split);
    else
      stats_planar_kernel<T, 1, I><<<grid, kThreads, 0, stream>>>(x, partial, (I)p.g.outer, (I)p.g.C, (I)p.g.inner, (I)pl.per_split);
  }
  int err = launch_status();
  if (err) return err;
  stats_finalize_kernel<A><<<fin_blocks, 256, 0, stream>>>(partial, p.g.C, pl.splits, mean, invstd, rm, rv,
                                                           (A)p.momentum, (A)p.eps,
                                                           p.unbiased_running_var);
  return launch_status();
}

template <typename T, typename I>
int apply_impl(const BnApplyParams& p, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int VEC = vec_width<T>();
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const A* w = static_cast<const A*>(p.weight);
  const A* b = static_cast<const A*>(p.bias);
  const A* mean = static_cast<const A*>(p.mean);
  const A* invstd = static_cast<const A*>(p.invstd);
  const int64_t n = p.g.numel();
  const int act = static_cast<int>(p.act);
  const A slope = static_cast<A>(p.slope);
  const A var_eps = static_cast<A>(p.var_eps);
  const bool al = aligned16(x) && aligned16(y) && n % VEC == 0;
  if (al && p.g.inner % VEC == 0) {
    apply_kernel<T, VEC, true, I><<<elementwise_blocks(n / VEC, kThreads), kThreads, 0, stream>>>(
        x, y, w, b, mean, invstd, (I)(n / VEC), (I)p.g.C, (I)p.g.inner, act, slope, var_eps);
  } else if (al && p.g.inner == 1 && p.g.C % VEC == 0) {
    apply_kernel<T, VEC, false, I><<<elementwise_blocks(n / VEC, kThreads), kThreads, 0, stream>>>(
        x, y, w, b, mean, invstd, (I)(n / VEC), (I)p.g.C, (I)p.g.inner, act, slope, var_eps);
  } else {
    apply_kernel<T, 1, true, I><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(
        x, y, w, b, mean, invstd, (I)n, (I)p.g.C, (I)p.g.inner, act, slope, var_eps);
  }
  return launch_status();
}

template <typename T>
int stats_idx(const BnStatsParams& p, cudaStream_t s) {
  return p.g.numel() < (int64_t(1) << 31) ? stats_impl<T, uint32_t>(p, s) : stats_impl<T, int64_t>(p, s);
}
template <typename T>
int apply_idx(const BnApplyParams& p, cudaStream_t s) {
  return p.g.numel() < (int64_t(1) << 31) ? apply_impl<T, uint32_t>(p, s) : apply_impl<T, int64_t>(p, s);
}

}  // namespace

int launch_bn_stats(const BnStatsParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat32: return stats_idx<float>(p, stream);
    case DType::kBFloat16: return stats_idx<__nv_bfloat16>(p, stream);
    case DType::kFloat64: return stats_idx<double>(p, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int launch_bn_apply(const BnApplyParams& p, cudaStream_t stream) {
  if (p.g.numel() == 0) return 0;
  switch (p.dtype) {
    case DType::kFloat32: return apply_idx<float>(p, stream);
    case DType::kBFloat16: return apply_idx<__nv_bfloat16>(p, stream);
    case DType::kFloat64: return apply_idx<double>(p, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

size_t bn_stats_workspace_bytes(const BnStatsParams& p) {
  if (!p.training) return 0;
  switch (p.dtype) {
    case DType::kFloat32: return 3 * plan_reduce<float>(p.g, stats_aligned<float>(p)).splits * p.g.C * sizeof(float);
    case DType::kBFloat16:
      return 3 * plan_reduce<__nv_bfloat16>(p.g, stats_aligned<__nv_bfloat16>(p)).splits * p.g.C * sizeof(float);
    case DType::kFloat64: return 3 * plan_reduce<double>(p.g, stats_aligned<double>(p)).splits * p.g.C * sizeof(double);
  }
  return 0;
}

}  // namespace fastgan
