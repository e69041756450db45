// fastgan::linear_bn_act's epilogue and backward on the [N, M] output of a cuBLAS matmul
// (include/linear_bn_act.h): a block owns kCols whole columns (threadIdx.x: the column, so a
// warp reads one row's consecutive columns; threadIdx.y: rows strided by kRows), its column
// sums reduced in shared memory, so statistics, normalization and the running-stat update are
// one launch. Torch-free.
#include "cuda_common.cuh"
#include "linear_bn_act.h"

namespace fastgan {
namespace {

using namespace cu;

constexpr int kCols = 32, kRows = 8;

// Sum over threadIdx.y of each column's partial; every thread of the column gets the result.
template <typename A>
__device__ __forceinline__ A col_sum(A v, A (*sh)[kCols]) {
  sh[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  A s = A(0);
#pragma unroll
  for (int k = 0; k < kRows; ++k) s += sh[k][threadIdx.x];   // fixed order: deterministic
  __syncthreads();
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kCols * kRows)
lin_bn_fwd_kernel(T* h, T* __restrict__ y, const acc_t<T>* __restrict__ bias,
                  const acc_t<T>* __restrict__ gamma, const acc_t<T>* __restrict__ beta,
                  acc_t<T>* __restrict__ mean_out, acc_t<T>* __restrict__ invstd_out,
                  acc_t<T>* __restrict__ rm, acc_t<T>* __restrict__ rv, int64_t N, int64_t M,
                  int pre, acc_t<T> sp, int post, acc_t<T> sq, bool unbiased, acc_t<T> mom,
                  acc_t<T> eps) {
  using A = acc_t<T>;
  __shared__ A sh[kRows][kCols];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + threadIdx.x;
  const bool live = c < M;
  const A b = live && bias ? bias[c] : A(0);
  A s = A(0);
  for (int64_t r = threadIdx.y; live && r < N; r += kRows) {
    const T v = from_acc<T>(apply_act(to_acc(h[r * M + c]) + b, pre, sp));
    h[r * M + c] = v;   // rounded to T: the statistics are those of the stored h
    s += to_acc(v);
  }
  const A n = static_cast<A>(N);
  const A mean = col_sum(s, sh) / n;
  A q = A(0);
  for (int64_t r = threadIdx.y; live && r < N; r += kRows) {
    const A d = to_acc(h[r * M + c]) - mean;
    q += d * d;
  }
  const A m2 = col_sum(q, sh);
  if (!live) return;
  const A is = A(1) / sqrt(m2 / n + eps);
  if (threadIdx.y == 0) {
    mean_out[c] = mean;
    invstd_out[c] = is;
    if (rm) rm[c] = (A(1) - mom) * rm[c] + mom * mean;
    if (rv) rv[c] = (A(1) - mom) * rv[c] + mom * (m2 / (unbiased ? n - A(1) : n));
  }
  const A scale = (gamma ? gamma[c] : A(1)) * is, shift = beta ? beta[c] : A(0);
  for (int64_t r = threadIdx.y; r < N; r += kRows)
    y[r * M + c] = from_acc<T>(apply_act((to_acc(h[r * M + c]) - mean) * scale + shift, post, sq));
}

template <typename T>
__global__ void __launch_bounds__(kCols * kRows)
lin_bn_bwd_kernel(const T* __restrict__ g, const T* __restrict__ h, T* __restrict__ gz,
                  const acc_t<T>* __restrict__ gamma, const acc_t<T>* __restrict__ beta,
                  const acc_t<T>* __restrict__ mean_in, const acc_t<T>* __restrict__ invstd_in,
                  acc_t<T>* __restrict__ db, acc_t<T>* __restrict__ dgamma,
                  acc_t<T>* __restrict__ dbeta, int64_t N, int64_t M, int pre, acc_t<T> sp,
                  int post, acc_t<T> sq) {
  using A = acc_t<T>;
  __shared__ A sh[kRows][kCols];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kCols + threadIdx.x;
  const bool live = c < M;
  const A mean = live ? mean_in[c] : A(0), is = live ? invstd_in[c] : A(0);
  const A scale = live ? (gamma ? gamma[c] : A(1)) * is : A(0);
  const A shift = live && beta ? beta[c] : A(0);
  A sg = A(0), sgx = A(0);
  for (int64_t r = threadIdx.y; live && r < N; r += kRows) {
    const A xc = to_acc(h[r * M + c]) - mean;
    const A gu = act_grad(to_acc(g[r * M + c]), xc * scale + shift, post, sq);
    sg += gu;
    sgx += gu * xc;
  }
  sg = col_sum(sg, sh);
  sgx = col_sum(sgx, sh);
  const A inv_n = A(1) / static_cast<A>(N);
  const A k1 = sg * inv_n, k2 = sgx * is * is * inv_n;
  A sz = A(0);
  for (int64_t r = threadIdx.y; live && r < N; r += kRows) {
    const A hv = to_acc(h[r * M + c]);
    const A xc = hv - mean;
    const A gu = act_grad(to_acc(g[r * M + c]), xc * scale + shift, post, sq);
    const T v = from_acc<T>(act_grad(scale * (gu - k1 - xc * k2), hv, pre, sp));
    gz[r * M + c] = v;
    sz += to_acc(v);
  }
  sz = col_sum(sz, sh);
  if (live && threadIdx.y == 0) {
    dbeta[c] = sg;
    dgamma[c] = sgx * is;
    if (db) db[c] = sz;
  }
}

template <typename F>
int dispatch(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32: f(float{}); break;
    case DType::kBFloat16: f(__nv_bfloat16{}); break;
    case DType::kFloat64: f(double{}); break;
  }
  return static_cast<int>(cudaGetLastError());
}

dim3 grid_of(int64_t M) { return dim3(static_cast<unsigned>((M + kCols - 1) / kCols)); }

}  // namespace

int launch_linear_bn_fwd(const LinBnFwdParams& p, cudaStream_t stream) {
  return dispatch(p.dtype, [&](auto t) {
    using T = decltype(t);
    using A = acc_t<T>;
    lin_bn_fwd_kernel<T><<<grid_of(p.M), dim3(kCols, kRows), 0, stream>>>(
        static_cast<T*>(p.h), static_cast<T*>(p.y), static_cast<const A*>(p.bias),
        static_cast<const A*>(p.gamma), static_cast<const A*>(p.beta), static_cast<A*>(p.mean),
        static_cast<A*>(p.invstd), static_cast<A*>(p.running_mean), static_cast<A*>(p.running_var),
        p.N, p.M, static_cast<int>(p.act_pre), static_cast<A>(p.slope_pre),
        static_cast<int>(p.act_post), static_cast<A>(p.slope_post), p.unbiased_running_var,
        static_cast<A>(p.momentum), static_cast<A>(p.eps));
  });
}

int launch_linear_bn_bwd(const LinBnBwdParams& p, cudaStream_t stream) {
  return dispatch(p.dtype, [&](auto t) {
    using T = decltype(t);
    using A = acc_t<T>;
    lin_bn_bwd_kernel<T><<<grid_of(p.M), dim3(kCols, kRows), 0, stream>>>(
        static_cast<const T*>(p.grad), static_cast<const T*>(p.h), static_cast<T*>(p.gz),
        static_cast<const A*>(p.gamma), static_cast<const A*>(p.beta), static_cast<const A*>(p.mean),
        static_cast<const A*>(p.invstd), static_cast<A*>(p.db), static_cast<A*>(p.dgamma),
        static_cast<A*>(p.dbeta), p.N, p.M, static_cast<int>(p.act_pre), static_cast<A>(p.slope_pre),
        static_cast<int>(p.act_post), static_cast<A>(p.slope_post));
  });
}

}  // namespace fastgan
