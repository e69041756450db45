// bias + activation epilogue and its backward (activation mask fused with the bias-gradient
// reduction), for the output of a cuBLAS matmul or a cuDNN convolution. Torch-free.
#include "bias_act.h"
#include "cuda_common.cuh"

namespace fastgan {
namespace {

using namespace cu;

// apply_act / act_grad extended by the output activations (codes in bias_act.h); their
// derivative is read off the saved output y.
template <typename A>
__device__ __forceinline__ A epi_act(A v, int act, A slope) {
  if (act == kActTanh) return tanh(v);
  if (act == kActSigmoid) return A(1) / (A(1) + exp(-v));
  return apply_act(v, act, slope);
}
template <typename A>
__device__ __forceinline__ A epi_grad(A g, A y, int act, A slope) {
  if (act == kActTanh) return g * (A(1) - y * y);
  if (act == kActSigmoid) return g * (y * (A(1) - y));
  return act_grad(g, y, act, slope);
}

// Elementwise forward. PLANAR: every vector lies inside one channel (inner % VEC == 0);
// otherwise inner == 1 and C % VEC == 0, so a vector covers VEC consecutive channels.
// x and y may alias (in-place epilogue): no __restrict__ on them.
// The optional inference-mode batch norm after the activation (BiasActParams::bn_*).
template <typename A>
struct BnEval {
  const A* mean = nullptr;  // null: none
  const A* var = nullptr;
  const A* w = nullptr;
  const A* b = nullptr;
  A eps = A(0);
  __device__ __forceinline__ A operator()(A v, int64_t c) const {
    if (!mean) return v;
    return (v - mean[c]) / sqrt(var[c] + eps) * (w ? w[c] : A(1)) + (b ? b[c] : A(0));
  }
};

template <typename T, int VEC, bool PLANAR, typename I>
__global__ void
bias_act_fwd_kernel(const T* x, const acc_t<T>* __restrict__ bias, T* y, I nvec, I C, I inner,
                    int act, acc_t<T> slope, BnEval<acc_t<T>> bn) {
  using A = acc_t<T>;
  for (I v = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; v < nvec;
       v += static_cast<I>(gridDim.x) * blockDim.x) {
    const I i = v * VEC;
    const Vec<T, VEC> xv = load_vec<T, VEC>(x + i);
    Vec<T, VEC> yv;
    if (PLANAR) {
      const I c = (i / inner) % C;
      const A b = bias ? bias[c] : A(0);
#pragma unroll
      for (int k = 0; k < VEC; ++k) yv.v[k] = from_acc<T>(bn(epi_act(to_acc(xv.v[k]) + b, act, slope), c));
    } else {
      const I c0 = i % C;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const A b = bias ? bias[c0 + k] : A(0);
        yv.v[k] = from_acc<T>(bn(epi_act(to_acc(xv.v[k]) + b, act, slope), c0 + k));
      }
    }
    store_vec<T, VEC>(y + i, yv);
  }
}

// Elementwise backward without the bias gradient: gx = grad * act'(y).
template <typename T, int VEC, typename I>
__global__ void
act_bwd_kernel(const T* __restrict__ grad, const T* __restrict__ y, T* __restrict__ gx, I nvec,
               int act, acc_t<T> slope) {
  using A = acc_t<T>;
  for (I v = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; v < nvec;
       v += static_cast<I>(gridDim.x) * blockDim.x) {
    const I i = v * VEC;
    const Vec<T, VEC> gv = load_vec<T, VEC>(grad + i);
    const Vec<T, VEC> yv = load_vec<T, VEC>(y + i);
    Vec<T, VEC> ov;
#pragma unroll
    for (int k = 0; k < VEC; ++k)
      ov.v[k] = from_acc<T>(epi_grad(to_acc(gv.v[k]), to_acc(yv.v[k]), act, slope));
    store_vec<T, VEC>(gx + i, ov);
  }
}

// Backward with the bias gradient, planar layout (inner > 1): block (c, s) covers a slice of
// channel c's outer*inner elements, writes gx and one partial sum.
template <typename T, int VEC, typename I>
__global__ void
bias_act_bwd_planar_kernel(const T* __restrict__ grad, const T* __restrict__ y, T* __restrict__ gx,
                           acc_t<T>* __restrict__ partial, I outer, I C, I inner, I per_split,
                           int act, acc_t<T> slope) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  const I c = blockIdx.x, s = blockIdx.y;
  const I vpr = inner / VEC;
  const I total = outer * vpr;
  const I begin = s * per_split;
  const I end = begin + per_split < total ? begin + per_split : total;
  A sum = A(0);
  for (I k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const I o = k / vpr, j = k - o * vpr;
    const I off = (o * C + c) * inner + j * VEC;
    const Vec<T, VEC> gv = load_vec<T, VEC>(grad + off);
    const Vec<T, VEC> yv = load_vec<T, VEC>(y + off);
    Vec<T, VEC> ov;
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      const A r = epi_grad(to_acc(gv.v[q]), to_acc(yv.v[q]), act, slope);
      ov.v[q] = from_acc<T>(r);
      sum += r;
    }
    store_vec<T, VEC>(gx + off, ov);
  }
  sum = block_sum(sum, sh);
  if (threadIdx.x == 0) partial[static_cast<int64_t>(s) * C + c] = sum;
}

// Backward with the bias gradient, rows layout (inner == 1, x is [R, C]): threadIdx.x walks
// channel vectors (coalesced along C), threadIdx.y rows; block (cx, s) covers a slice of rows.
template <typename T, int VEC, typename I>
__global__ void
bias_act_bwd_rows_kernel(const T* __restrict__ grad, const T* __restrict__ y, T* __restrict__ gx,
                         acc_t<T>* __restrict__ partial, I R, I C, I rows_per_split, int act,
                         acc_t<T> slope) {
  using A = acc_t<T>;
  __shared__ A sh[kRowsTy][VEC][kRowsTx];
  const I c0 = (static_cast<I>(blockIdx.x) * kRowsTx + threadIdx.x) * VEC;
  const I s = blockIdx.y;
  const I r0 = s * rows_per_split;
  const I r1 = r0 + rows_per_split < R ? r0 + rows_per_split : R;
  A sum[VEC];
#pragma unroll
  for (int q = 0; q < VEC; ++q) sum[q] = A(0);
  if (c0 < C) {
    for (I r = r0 + threadIdx.y; r < r1; r += kRowsTy) {
      const I off = r * C + c0;
      const Vec<T, VEC> gv = load_vec<T, VEC>(grad + off);
      const Vec<T, VEC> yv = load_vec<T, VEC>(y + off);
      Vec<T, VEC> ov;
#pragma unroll
      for (int q = 0; q < VEC; ++q) {
        const A rv = epi_grad(to_acc(gv.v[q]), to_acc(yv.v[q]), act, slope);
        ov.v[q] = from_acc<T>(rv);
        sum[q] += rv;
      }
      store_vec<T, VEC>(gx + off, ov);
    }
  }
#pragma unroll
  for (int q = 0; q < VEC; ++q) sh[threadIdx.y][q][threadIdx.x] = sum[q];
  __syncthreads();
  if (threadIdx.y == 0 && c0 < C) {
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      A t = A(0);
#pragma unroll
      for (int r = 0; r < kRowsTy; ++r) t += sh[r][q][threadIdx.x];
      partial[static_cast<int64_t>(s) * C + c0 + q] = t;
    }
  }
}

template <typename T>
__global__ void bias_grad_finalize_kernel(const acc_t<T>* __restrict__ partial, T* __restrict__ db,
                                          int64_t C, int64_t S) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  acc_t<T> t = 0;
  for (int64_t s = 0; s < S; ++s) t += partial[s * C + c];
  db[c] = from_acc<T>(t);
}


template <typename T, typename I>
int fwd_impl(const BiasActParams& p, cudaStream_t stream) {
  using A = acc_t<T>;
  const T* x = static_cast<const T*>(p.x);
  T* y = static_cast<T*>(p.y);
  const A* bias = static_cast<const A*>(p.bias);
  const int64_t n = p.g.numel();
  const int act = static_cast<int>(p.act);
  const A slope = static_cast<A>(p.slope);
  BnEval<A> bn;
  bn.mean = static_cast<const A*>(p.bn_mean);
  bn.var = static_cast<const A*>(p.bn_var);
  bn.w = static_cast<const A*>(p.bn_w);
  bn.b = static_cast<const A*>(p.bn_b);
  bn.eps = static_cast<A>(p.bn_eps);
  constexpr int VEC = vec_width<T>();
  const bool al = aligned16(x) && aligned16(y) && n % VEC == 0;
  if (al && p.g.inner % VEC == 0) {
    const int64_t nv = n / VEC;
    bias_act_fwd_kernel<T, VEC, true, I><<<elementwise_blocks(nv, kThreads), kThreads, 0, stream>>>(
        x, bias, y, (I)nv, (I)p.g.C, (I)p.g.inner, act, slope, bn);
  } else if (al && p.g.inner == 1 && p.g.C % VEC == 0) {
    const int64_t nv = n / VEC;
    bias_act_fwd_kernel<T, VEC, false, I><<<elementwise_blocks(nv, kThreads), kThreads, 0, stream>>>(
        x, bias, y, (I)nv, (I)p.g.C, (I)p.g.inner, act, slope, bn);
  } else {
    bias_act_fwd_kernel<T, 1, true, I><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(
        x, bias, y, (I)n, (I)p.g.C, (I)p.g.inner, act, slope, bn);
  }
  return launch_status();
}

template <typename T>
bool bwd_aligned(const BiasActBwdParams& p) {
  return aligned16(p.grad) && aligned16(p.y) && aligned16(p.gx);
}

template <typename T, typename I>
int bwd_impl(const BiasActBwdParams& p, cudaStream_t stream) {
  using A = acc_t<T>;
  const T* grad = static_cast<const T*>(p.grad);
  const T* y = static_cast<const T*>(p.y);
  T* gx = static_cast<T*>(p.gx);
  const int64_t n = p.g.numel();
  const int act = static_cast<int>(p.act);
  const A slope = static_cast<A>(p.slope);
  constexpr int VEC = vec_width<T>();
  if (p.db == nullptr) {
    if (bwd_aligned<T>(p) && n % VEC == 0) {
      act_bwd_kernel<T, VEC, I><<<elementwise_blocks(n / VEC, kThreads), kThreads, 0, stream>>>(
          grad, y, gx, (I)(n / VEC), act, slope);
    } else {
      act_bwd_kernel<T, 1, I><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(
          grad, y, gx, (I)n, act, slope);
    }
    return launch_status();
  }
  const Plan pl = plan_reduce<T>(p.g, bwd_aligned<T>(p));
  A* partial = static_cast<A*>(p.workspace);
  if (pl.rows) {
    const dim3 block(kRowsTx, kRowsTy), grid((unsigned)pl.grid_x, (unsigned)pl.splits);
    if (pl.vec == VEC)
      bias_act_bwd_rows_kernel<T, VEC, I><<<grid, block, 0, stream>>>(
          grad, y, gx, partial, (I)p.g.outer, (I)p.g.C, (I)pl.per_split, act, slope);
    else
      bias_act_bwd_rows_kernel<T, 1, I><<<grid, block, 0, stream>>>(
          grad, y, gx, partial, (I)p.g.outer, (I)p.g.C, (I)pl.per_split, act, slope);
  } else {
    const dim3 grid((unsigned)pl.grid_x, (unsigned)pl.splits);
    if (pl.vec == VEC)
      bias_act_bwd_planar_kernel<T, VEC, I><<<grid, kThreads, 0, stream>>>(
          grad, y, gx, partial, (I)p.g.outer, (I)p.g.C, (I)p.g.inner, (I)pl.per_split, act, slope);
    else
      bias_act_bwd_planar_kernel<T, 1, I><<<grid, kThreads, 0, stream>>>(
          grad, y, gx, partial, (I)p.g.outer, (I)p.g.C, (I)p.g.inner, (I)pl.per_split, act, slope);
  }
  int err = launch_status();
  if (err) return err;
  bias_grad_finalize_kernel<T><<<(unsigned)ceil_div(p.g.C, 256), 256, 0, stream>>>(
      partial, static_cast<T*>(p.db), p.g.C, pl.splits);
  return launch_status();
}

template <typename T>
int fwd_dispatch_index(const BiasActParams& p, cudaStream_t s) {
  return p.g.numel() < (int64_t(1) << 31) ? fwd_impl<T, uint32_t>(p, s) : fwd_impl<T, int64_t>(p, s);
}
template <typename T>
int bwd_dispatch_index(const BiasActBwdParams& p, cudaStream_t s) {
  return p.g.numel() < (int64_t(1) << 31) ? bwd_impl<T, uint32_t>(p, s) : bwd_impl<T, int64_t>(p, s);
}

}  // namespace

int launch_bias_act_fwd(const BiasActParams& p, cudaStream_t stream) {
  if (p.g.numel() == 0) return 0;
  switch (p.dtype) {
    case DType::kFloat32: return fwd_dispatch_index<float>(p, stream);
    case DType::kBFloat16: return fwd_dispatch_index<__nv_bfloat16>(p, stream);
    case DType::kFloat64: return fwd_dispatch_index<double>(p, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int launch_bias_act_bwd(const BiasActBwdParams& p, cudaStream_t stream) {
  if (p.g.numel() == 0) {
    return 0;  // the caller zero-fills db
  }
  switch (p.dtype) {
    case DType::kFloat32: return bwd_dispatch_index<float>(p, stream);
    case DType::kBFloat16: return bwd_dispatch_index<__nv_bfloat16>(p, stream);
    case DType::kFloat64: return bwd_dispatch_index<double>(p, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

size_t bias_act_bwd_workspace_bytes(const BiasActBwdParams& p) {
  if (p.db == nullptr || p.g.numel() == 0) return 0;
  Plan pl;
  size_t acc = sizeof(float);
  switch (p.dtype) {
    case DType::kFloat32: pl = plan_reduce<float>(p.g, bwd_aligned<float>(p)); break;
    case DType::kBFloat16: pl = plan_reduce<__nv_bfloat16>(p.g, bwd_aligned<__nv_bfloat16>(p)); break;
    case DType::kFloat64: pl = plan_reduce<double>(p.g, bwd_aligned<double>(p)); acc = sizeof(double); break;
  }
  return static_cast<size_t>(pl.splits * p.g.C) * acc;
}

}  // namespace fastgan
