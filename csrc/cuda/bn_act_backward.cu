// Batch norm + activation on CUDA, backward (fastgan::bn_act_backward). Torch-free.
//   backward: pass 1 reduces sum(gz) and sum(gz * (x - mean)) per channel (gz = grad * act'(z),
//     z recomputed from x); a finalize turns them into dgamma, dbeta and the dx coefficients;
//     pass 2 writes dx. Two reads of x and grad in all.
#include "bn_act.h"
#include "cuda_common.cuh"

namespace fastgan {
namespace {

using namespace cu;

// ------------------------------------------------------------------------------------------
// Backward pass 2: dx, elementwise over [outer, C, inner]
// ------------------------------------------------------------------------------------------

// coef[4c..4c+3] = (p, q, mean, r): dx = p * gz - q * (x - mean) + r.
template <typename T, int VEC, bool PLANAR, typename I>
__global__ void
dx_kernel(const T* __restrict__ grad, const T* __restrict__ x, T* __restrict__ dx,
          const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ b,
          const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
          const acc_t<T>* __restrict__ coef, I nvec, I C, I inner, int act, acc_t<T> slope) {
  using A = acc_t<T>;
  for (I v = blockIdx.x * static_cast<I>(blockDim.x) + threadIdx.x; v < nvec;
       v += static_cast<I>(gridDim.x) * blockDim.x) {
    const I i = v * VEC;
    const Vec<T, VEC> xv = load_vec<T, VEC>(x + i);
    const Vec<T, VEC> gv = load_vec<T, VEC>(grad + i);
    Vec<T, VEC> ov;
    if (PLANAR) {
      const I c = (i / inner) % C;
      A m, sc, sh;
      scale_shift(w, b, mean, invstd, c, m, sc, sh);
      const A p = coef[4 * c], q = coef[4 * c + 1], r = coef[4 * c + 3];
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const A xa = to_acc(xv.v[k]);
        const A gz = act_grad(to_acc(gv.v[k]), bn_z(xa, m, sc, sh), act, slope);
        ov.v[k] = from_acc<T>(p * gz - q * (xa - m) + r);
      }
    } else {
      const I c0 = i % C;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const I c = c0 + k;
        A m, sc, sh;
        scale_shift(w, b, mean, invstd, c, m, sc, sh);
        const A xa = to_acc(xv.v[k]);
        const A gz = act_grad(to_acc(gv.v[k]), bn_z(xa, m, sc, sh), act, slope);
        ov.v[k] = from_acc<T>(coef[4 * c] * gz - coef[4 * c + 1] * (xa - m) + coef[4 * c + 3]);
      }
    }
    store_vec<T, VEC>(dx + i, ov);
  }
}

// ------------------------------------------------------------------------------------------
// Backward pass 1: per-channel sum(gz) and sum(gz * (x - mean))
// ------------------------------------------------------------------------------------------

template <typename T, int VEC, typename I>
__global__ void
bwd_reduce_planar_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                         const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ b,
                         const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                         acc_t<T>* __restrict__ partial, I outer, I C, I inner, I per_split, int act,
                         acc_t<T> slope) {
  using A = acc_t<T>;
  __shared__ A sh[32];
  const I c = blockIdx.x, s = blockIdx.y;
  A m, sc, shf;
  scale_shift(w, b, mean, invstd, c, m, sc, shf);
  const I vpr = inner / VEC;
  const I total = outer * vpr;
  const I begin = s * per_split;
  const I end = begin + per_split < total ? begin + per_split : total;
  A s1 = A(0), s2 = A(0);
  for (I k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const I o = k / vpr, j = k - o * vpr;
    const I off = (o * C + c) * inner + j * VEC;
    const Vec<T, VEC> xv = load_vec<T, VEC>(x + off);
    const Vec<T, VEC> gv = load_vec<T, VEC>(grad + off);
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      const A xa = to_acc(xv.v[q]);
      const A gz = act_grad(to_acc(gv.v[q]), bn_z(xa, m, sc, shf), act, slope);
      s1 += gz;
      s2 += gz * (xa - m);
    }
  }
  s1 = block_sum(s1, sh);
  s2 = block_sum(s2, sh);
  if (threadIdx.x == 0) {
    A* out = partial + 2 * (static_cast<int64_t>(s) * C + c);
    out[0] = s1;
    out[1] = s2;
  }
}

template <typename T, int VEC, typename I>
__global__ void
bwd_reduce_rows_kernel(const T* __restrict__ grad, const T* __restrict__ x,
                       const acc_t<T>* __restrict__ w, const acc_t<T>* __restrict__ b,
                       const acc_t<T>* __restrict__ mean, const acc_t<T>* __restrict__ invstd,
                       acc_t<T>* __restrict__ partial, I R, I C, I rows_per_split, int act,
                       acc_t<T> slope) {
  using A = acc_t<T>;
  __shared__ A sh1[kRowsTy][VEC][kRowsTx];
  __shared__ A sh2[kRowsTy][VEC][kRowsTx];
  const I c0 = (static_cast<I>(blockIdx.x) * kRowsTx + threadIdx.x) * VEC;
  const I s = blockIdx.y;
  const I r0 = s * rows_per_split;
  const I r1 = r0 + rows_per_split < R ? r0 + rows_per_split : R;
  A s1[VEC], s2[VEC], sc[VEC], sf[VEC], m[VEC];
#pragma unroll
  for (int q = 0; q < VEC; ++q) {
    s1[q] = s2[q] = A(0);
    if (c0 < C) {
      scale_shift(w, b, mean, invstd, c0 + q, m[q], sc[q], sf[q]);
    } else {
      sc[q] = sf[q] = m[q] = A(0);
    }
  }
  if (c0 < C) {
    for (I r = r0 + threadIdx.y; r < r1; r += kRowsTy) {
      const I off = r * C + c0;
      const Vec<T, VEC> xv = load_vec<T, VEC>(x + off);
      const Vec<T, VEC> gv = load_vec<T, VEC>(grad + off);
#pragma unroll
      for (int q = 0; q < VEC; ++q) {
        const A xa = to_acc(xv.v[q]);
        const A gz = act_grad(to_acc(gv.v[q]), bn_z(xa, m[q], sc[q], sf[q]), act, slope);
        s1[q] += gz;
        s2[q] += gz * (xa - m[q]);
      }
    }
  }
#pragma unroll
  for (int q = 0; q < VEC; ++q) {
    sh1[threadIdx.y][q][threadIdx.x] = s1[q];
    sh2[threadIdx.y][q][threadIdx.x] = s2[q];
  }
  __syncthreads();
  if (threadIdx.y == 0 && c0 < C) {
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      A t1 = A(0), t2 = A(0);
#pragma unroll
      for (int r = 0; r < kRowsTy; ++r) {
        t1 += sh1[r][q][threadIdx.x];
        t2 += sh2[r][q][threadIdx.x];
      }
      A* out = partial + 2 * (static_cast<int64_t>(s) * C + c0 + q);
      out[0] = t1;
      out[1] = t2;
    }
  }
}

template <typename A>
__global__ void bwd_finalize_kernel(const A* __restrict__ partial, int64_t C, int64_t S, A count,
                                    const A* __restrict__ w, const A* __restrict__ mean,
                                    const A* __restrict__ invstd, bool training,
                                    A* __restrict__ dweight, A* __restrict__ dbias,
                                    A* __restrict__ coef) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  A s1 = A(0), s2 = A(0);
  for (int64_t s = 0; s < S; ++s) {
    s1 += partial[2 * (s * C + c)];
    s2 += partial[2 * (s * C + c) + 1];
  }
  const A is = invstd[c];
  const A dgamma = s2 * is;
  dweight[c] = dgamma;
  dbias[c] = s1;
  const A p = (w ? w[c] : A(1)) * is;
  coef[4 * c] = p;
  coef[4 * c + 1] = training ? p * is * dgamma / count : A(0);
  coef[4 * c + 2] = mean[c];
  coef[4 * c + 3] = training ? -p * s1 / count : A(0);
}

// ------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------

template <typename T>
bool bwd_aligned(const BnBwdParams& p) { return aligned16(p.x) && aligned16(p.grad) && aligned16(p.dx); }

template <typename T, typename I>
int bwd_impl(const BnBwdParams& p, cudaStream_t stream) {
  using A = acc_t<T>;
  constexpr int VEC = vec_width<T>();
  const T* grad = static_cast<const T*>(p.grad);
  const T* x = static_cast<const T*>(p.x);
  T* dx = static_cast<T*>(p.dx);
  const A* w = static_cast<const A*>(p.weight);
  const A* b = static_cast<const A*>(p.bias);
  const A* mean = static_cast<const A*>(p.mean);
  const A* invstd = static_cast<const A*>(p.invstd);
  const int64_t n = p.g.numel();
  const int act = static_cast<int>(p.act);
  const A slope = static_cast<A>(p.slope);
  const bool al = bwd_aligned<T>(p);
  const Plan pl = plan_reduce<T>(p.g, al);
  A* partial = static_cast<A*>(p.workspace);
  A* coef = partial + 2 * pl.splits * p.g.C;
  if (pl.rows) {
    const dim3 block(kRowsTx, kRowsTy), grid((unsigned)pl.grid_x, (unsigned)pl.splits);
    if (pl.vec == VEC)
      bwd_reduce_rows_kernel<T, VEC, I><<<grid, block, 0, stream>>>(
          grad, x, w, b, mean, invstd, partial, (I)p.g.outer, (I)p.g.C, (I)pl.per_split, act, slope);
    else
      bwd_reduce_rows_kernel<T, 1, I><<<grid, block, 0, stream>>>(
          grad, x, w, b, mean, invstd, partial, (I)p.g.outer, (I)p.g.C, (I)pl.per_split, act, slope);
  } else {
    const dim3 grid((unsigned)pl.grid_x, (unsigned)pl.splits);
    if (pl.vec == VEC)
      bwd_reduce_planar_kernel<T, VEC, I><<<grid, kThreads, 0, stream>>>(
          grad, x, w, b, mean, invstd, partial, (I)p.g.outer, (I)p.g.C, (I)p.g.inner, (I)pl.per_split, act, slope);
    else
      bwd_reduce_planar_kernel<T, 1, I><<<grid, kThreads, 0, stream>>>(
          grad, x, w, b, mean, invstd, partial, (I)p.g.outer, (I)p.g.C, (I)p.g.inner, (I)pl.per_split, act, slope);
  }
  int err = launch_status();
  if (err) return err;
  const A count = static_cast<A>(p.g.outer * p.g.inner);
  bwd_finalize_kernel<A><<<(unsigned)ceil_div(p.g.C, 256), 256, 0, stream>>>(
      partial, p.g.C, pl.splits, count, w, mean, invstd, p.training, static_cast<A*>(p.dweight),
      static_cast<A*>(p.dbias), coef);
  err = launch_status();
  if (err) return err;
  const bool al2 = al && n % VEC == 0;
  if (al2 && p.g.inner % VEC == 0) {
    dx_kernel<T, VEC, true, I><<<elementwise_blocks(n / VEC, kThreads), kThreads, 0, stream>>>(
        grad, x, dx, w, b, mean, invstd, coef, (I)(n / VEC), (I)p.g.C, (I)p.g.inner, act, slope);
  } else if (al2 && p.g.inner == 1 && p.g.C % VEC == 0) {
    dx_kernel<T, VEC, false, I><<<elementwise_blocks(n / VEC, kThreads), kThreads, 0, stream>>>(
        grad, x, dx, w, b, mean, invstd, coef, (I)(n / VEC), (I)p.g.C, (I)p.g.inner, act, slope);
  } else {
    dx_kernel<T, 1, true, I><<<elementwise_blocks(n, kThreads), kThreads, 0, stream>>>(
        grad, x, dx, w, b, mean, invstd, coef, (I)n, (I)p.g.C, (I)p.g.inner, act, slope);
  }
  return launch_status();
}

template <typename T>
int bwd_idx(const BnBwdParams& p, cudaStream_t s) {
  return p.g.numel() < (int64_t(1) << 31) ? bwd_impl<T, uint32_t>(p, s) : bwd_impl<T, int64_t>(p, s);
}

}  // namespace

int launch_bn_bwd(const BnBwdParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat32: return bwd_idx<float>(p, stream);
    case DType::kBFloat16: return bwd_idx<__nv_bfloat16>(p, stream);
    case DType::kFloat64: return bwd_idx<double>(p, stream);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

size_t bn_bwd_workspace_bytes(const BnBwdParams& p) {
  switch (p.dtype) {
    case DType::kFloat32: return (2 * plan_reduce<float>(p.g, bwd_aligned<float>(p)).splits + 4) * p.g.C * sizeof(float);
    case DType::kBFloat16:
      return (2 * plan_reduce<__nv_bfloat16>(p.g, bwd_aligned<__nv_bfloat16>(p)).splits + 4) * p.g.C * sizeof(float);
    case DType::kFloat64: return (2 * plan_reduce<double>(p.g, bwd_aligned<double>(p)).splits + 4) * p.g.C * sizeof(double);
  }
  return 0;
}

}  // namespace fastgan
