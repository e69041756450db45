// Device-side helpers shared by the .cu files (csrc/cuda/): type conversion, 16-byte vectors,
// activation, reductions, Welford merges, launch planning, batch norm's affine part. Torch-free.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.h"

namespace fastgan {
namespace cu {

template <typename T> struct AccT { using type = float; };
template <> struct AccT<double> { using type = double; };
template <typename T> using acc_t = typename AccT<T>::type;

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(acc_t<T> v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// N elements of T in one 16-byte access (N = 16 / sizeof(T)), or a scalar when N = 1.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load_vec(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}
template <typename T, int N>
__device__ __forceinline__ void store_vec(T* p, const Vec<T, N>& v) {
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

template <typename T> constexpr int vec_width() { return 16 / static_cast<int>(sizeof(T)); }

// Activation (NaN-propagating, like torch's relu / leaky_relu); act is warp-uniform.
template <typename A>
__device__ __forceinline__ A apply_act(A v, int act, A slope) {
  if (act == static_cast<int>(ActMode::kReLU)) return v < A(0) ? A(0) : v;
  if (act == static_cast<int>(ActMode::kLeaky)) return v < A(0) ? v * slope : v;
  return v;
}
// Gradient through the activation, from the sign of its output (or pre-activation: same sign).
template <typename A>
__device__ __forceinline__ A act_grad(A g, A y, int act, A slope) {
  if (act == static_cast<int>(ActMode::kReLU)) return y > A(0) ? g : A(0);
  if (act == static_cast<int>(ActMode::kLeaky)) return y > A(0) ? g : g * slope;
  return g;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Welford state: count, mean, sum of squared deviations. Chan et al.'s merge.
template <typename A>
struct Welford {
  A n, mean, m2;
};

template <typename A>
__device__ __forceinline__ void welford_add(Welford<A>& w, A x) {
  w.n += A(1);
  const A d = x - w.mean;
  w.mean += d / w.n;
  w.m2 += d * (x - w.mean);
}

template <typename A>
__device__ __forceinline__ Welford<A> welford_merge(const Welford<A>& a, const Welford<A>& b) {
  const A n = a.n + b.n;
  if (n == A(0)) return a;
  const A d = b.mean - a.mean;
  const A fb = b.n / n;
  Welford<A> r;
  r.n = n;
  r.mean = a.mean + d * fb;
  r.m2 = a.m2 + b.m2 + d * d * a.n * fb;
  return r;
}

template <typename A>
__device__ __forceinline__ Welford<A> warp_welford(Welford<A> w) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    Welford<A> other;
    other.n = __shfl_xor_sync(0xffffffffu, w.n, o);
    other.mean = __shfl_xor_sync(0xffffffffu, w.mean, o);
    other.m2 = __shfl_xor_sync(0xffffffffu, w.m2, o);
    w = welford_merge(w, other);
  }
  return w;
}

// Sum over a 1-D block (blockDim.x a multiple of 32, at most 1024); the result is valid in
// thread 0. `sh` holds at least 32 values and is free again when the function returns.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* sh) {
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
  if (lane == 0) sh[wid] = v;
  __syncthreads();
  const int nw = blockDim.x >> 5;
  v = threadIdx.x < nw ? sh[threadIdx.x] : A(0);
  if (wid == 0) v = warp_sum(v);
  __syncthreads();
  return v;
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid size for a grid-stride elementwise loop over `work` items with `threads` per block.
inline int elementwise_blocks(int64_t work, int threads) {
  int64_t sms = cuda_num_sms();
  if (sms <= 0) sms = 132;
  int64_t b = ceil_div(work, threads);
  const int64_t cap = sms * 16;
  if (b > cap) b = cap;
  if (b < 1) b = 1;
  return static_cast<int>(b);
}

inline int launch_status() { return static_cast<int>(cudaGetLastError()); }

// ---- launch planning of the per-channel reductions (bias_act's db, bn_act's statistics and
// backward), shared by each op's workspace query and its launch ----
constexpr int kThreads = 256;
constexpr int kRowsTx = 32, kRowsTy = 8;  // rows layout: 32 channel vectors x 8 rows per block

struct Plan {
  bool rows = false;   // rows layout (inner == 1) vs planar
  int vec = 1;
  int64_t grid_x = 1, splits = 1, per_split = 1;
};

template <typename T>
Plan plan_reduce(const Geom& g, bool aligned) {
  Plan p;
  const int VEC = vec_width<T>();
  int64_t sms = cuda_num_sms();
  if (sms <= 0) sms = 132;
  const int64_t target_blocks = 4 * sms;
  if (g.inner == 1) {
    p.rows = true;
    p.vec = (aligned && g.C % VEC == 0) ? VEC : 1;
    p.grid_x = ceil_div(g.C / p.vec, kRowsTx);
    const int64_t R = g.outer;
    int64_t S = ceil_div(target_blocks, p.grid_x);
    const int64_t max_s = ceil_div(R, 4 * kRowsTy);  // at least 4 rows per thread
    if (S > max_s) S = max_s;
    if (S > 65535) S = 65535;
    if (S < 1) S = 1;
    p.per_split = ceil_div(R, S);
    p.splits = ceil_div(R, p.per_split);
  } else {
    p.rows = false;
    p.vec = (aligned && g.inner % VEC == 0) ? VEC : 1;
    p.grid_x = g.C;
    const int64_t total = g.outer * (g.inner / p.vec);
    int64_t S = ceil_div(target_blocks, g.C);
    const int64_t max_s = ceil_div(total, 4 * kThreads);  // at least 4 vectors per thread
    if (S > max_s) S = max_s;
    if (S > 65535) S = 65535;
    if (S < 1) S = 1;
    p.per_split = ceil_div(total, S);
    p.splits = ceil_div(total, p.per_split);
  }
  return p;
}

// ---- batch norm + activation (bn_act.cu and bn_act_backward.cu) ----
// The affine part, identical in the forward and the backward (so that the recomputed
// pre-activation has exactly the forward's sign): z = (x - mean) * scale + shift with
// scale = gamma * invstd, shift = beta. Centring first keeps z accurate when |mean| >> std.
template <typename A>
__device__ __forceinline__ void scale_shift(const A* __restrict__ w, const A* __restrict__ b,
                                            const A* __restrict__ mean, const A* __restrict__ invstd,
                                            int64_t c, A& m, A& scale, A& shift) {
  m = mean[c];
  scale = (w ? w[c] : A(1)) * invstd[c];
  shift = b ? b[c] : A(0);
}

template <typename A>
__device__ __forceinline__ A bn_z(A x, A m, A scale, A shift) { return (x - m) * scale + shift; }

}  // namespace cu
}  // namespace fastgan
