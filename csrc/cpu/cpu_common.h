// Shared by the CPU kernels (csrc/cpu/<op>.cpp): accumulation types, activations, dtype and
// activation dispatch, the fused affine + activation loop and the reduction chunking. Only
// ATen/Parallel.h and c10's BFloat16 are included, so the kernel files compile in seconds (the
// torch checks and the registration live in csrc/ops/).
//
// Reductions are split into chunks whose boundaries depend only on the shape, never on the
// thread count, and the chunk partials are combined in a fixed order: results are bit-identical
// from run to run and across thread counts.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common.h"

// Templates and inline functions in a named namespace (not an anonymous one): every kernel file
// includes this header, and one definition is shared by all of them.
namespace fastgan {
namespace cpu {

// Elements per parallel task: large enough to amortise the task, small enough to balance.
inline constexpr int64_t kGrainElems = 32768;
// Elements per reduction chunk (fixed: the summation order must not depend on the threads).
inline constexpr int64_t kChunkElems = 16384;

template <typename T> struct AccT { using type = float; };
template <> struct AccT<double> { using type = double; };
template <typename T> using acc_t = typename AccT<T>::type;

inline constexpr int kIdentity = static_cast<int>(ActMode::kIdentity);
inline constexpr int kReLU = static_cast<int>(ActMode::kReLU);
inline constexpr int kLeaky = static_cast<int>(ActMode::kLeaky);

template <typename T>
inline acc_t<T> ld(T v) { return static_cast<acc_t<T>>(v); }

// Written as selects between values that are already computed (or constants) followed by
// arithmetic, never as `cond ? v * slope : v`: with -ftrapping-math GCC will not if-convert a
// conditional multiplication, and the loop becomes a mispredicted branch per element (measured
// 50x slower on random signs).
template <int ACT, typename A>
inline A act_fn(A v, A slope) {
  if constexpr (ACT == kReLU) return v < A(0) ? A(0) : v;
  else if constexpr (ACT == kLeaky) return v * (v < A(0) ? slope : A(1));
  else return v;
}

// d act / d z applied to g, from the sign of the (pre-)activation.
template <int ACT, typename A>
inline A act_grad(A g, A z, A slope) {
  if constexpr (ACT == kReLU) return z > A(0) ? g : A(0);
  else if constexpr (ACT == kLeaky) return g * (z > A(0) ? A(1) : slope);
  else return g;
}


template <typename F>
void dispatch_act(ActMode act, F&& f) {
  switch (act) {
    case ActMode::kReLU: f(std::integral_constant<int, kReLU>{}); break;
    case ActMode::kLeaky: f(std::integral_constant<int, kLeaky>{}); break;
    default: f(std::integral_constant<int, kIdentity>{}); break;
  }
}

template <typename F>
void dispatch_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::kFloat32: f(float{}); break;
    case DType::kBFloat16: f(c10::BFloat16{}); break;
    case DType::kFloat64: f(double{}); break;
  }
}

// One row segment of y = act(z). Rows layout (per-element channel vectors):
//   z = (x - center[i]) * scale[i] + shift[i]   (batch norm), or x + shift[i] when scale is null;
// planar layout (one channel per segment): z = (x - center) * scale + shift.
template <int ACT, typename T>
inline void affine_act_row_vec(const T* x, T* y, const acc_t<T>* __restrict__ center,
                               const acc_t<T>* __restrict__ scale, const acc_t<T>* __restrict__ shift,
                               int64_t n, acc_t<T> slope) {
  if (x == y) {
    T* __restrict__ p = y;
    if (scale) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) p[i] = T(act_fn<ACT>((ld(p[i]) - center[i]) * scale[i] + shift[i], slope));
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) p[i] = T(act_fn<ACT>(ld(p[i]) + shift[i], slope));
    }
  } else {
    const T* __restrict__ xi = x;
    T* __restrict__ yo = y;
    if (scale) {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yo[i] = T(act_fn<ACT>((ld(xi[i]) - center[i]) * scale[i] + shift[i], slope));
    } else {
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) yo[i] = T(act_fn<ACT>(ld(xi[i]) + shift[i], slope));
    }
  }
}

template <int ACT, typename T>
inline void affine_act_row_scalar(const T* x, T* y, acc_t<T> center, acc_t<T> scale, acc_t<T> shift,
                                  int64_t n, acc_t<T> slope) {
  if (x == y) {
    T* __restrict__ p = y;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) p[i] = T(act_fn<ACT>((ld(p[i]) - center) * scale + shift, slope));
  } else {
    const T* __restrict__ xi = x;
    T* __restrict__ yo = y;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) yo[i] = T(act_fn<ACT>((ld(xi[i]) - center) * scale + shift, slope));
  }
}

// Walks [begin, end) of the flat [outer, C, inner] index space in row segments. Rows layout
// (inner == 1): f_rows(offset, n, first_channel); planar: f_planar(offset, n, channel).
template <typename FRows, typename FPlanar>
inline void for_segments(const Geom& g, int64_t begin, int64_t end, FRows&& f_rows, FPlanar&& f_planar) {
  if (g.inner == 1) {
    for (int64_t i = begin; i < end;) {
      const int64_t r = i / g.C, c0 = i - r * g.C;
      const int64_t n = std::min(end, (r + 1) * g.C) - i;
      f_rows(i, n, c0);
      i += n;
    }
  } else {
    for (int64_t i = begin; i < end;) {
      const int64_t r = i / g.inner;
      const int64_t n = std::min(end, (r + 1) * g.inner) - i;
      f_planar(i, n, r % g.C);
      i += n;
    }
  }
}

// y = act(z) over [outer, C, inner]; center/scale null: z = x + shift[c] (bias_act).
template <int ACT, typename T>
void affine_act(const T* x, T* y, const acc_t<T>* center, const acc_t<T>* scale, const acc_t<T>* shift,
                const Geom& g, acc_t<T> slope) {
  using A = acc_t<T>;
  at::parallel_for(0, g.numel(), kGrainElems, [&](int64_t b, int64_t e) {
    for_segments(
        g, b, e,
        [&](int64_t off, int64_t n, int64_t c0) {
          affine_act_row_vec<ACT>(x + off, y + off, scale ? center + c0 : nullptr,
                                  scale ? scale + c0 : nullptr, shift + c0, n, slope);
        },
        [&](int64_t off, int64_t n, int64_t c) {
          affine_act_row_scalar<ACT>(x + off, y + off, scale ? center[c] : A(0), scale ? scale[c] : A(1),
                                     shift[c], n, slope);
        });
  });
}

// Planar reductions work on units: segments of at most kChunkElems of one (o, c) row, so that
// a few long rows (C == 1, or few large images) still spread over the threads.
struct Units {
  int64_t rows, inner, nseg, seg;
  explicit Units(const Geom& g) : rows(g.outer * g.C), inner(g.inner) {
    nseg = (inner + kChunkElems - 1) / kChunkElems;
    seg = (inner + nseg - 1) / nseg;
  }
  int64_t count() const { return rows * nseg; }
  int64_t offset(int64_t u) const { return (u / nseg) * inner + (u % nseg) * seg; }
  int64_t length(int64_t u) const { return std::min(seg, inner - (u % nseg) * seg); }
  int64_t row(int64_t u) const { return u / nseg; }
  int64_t grain() const { return std::max<int64_t>(1, kGrainElems / seg); }
};

}  // namespace cpu
}  // namespace fastgan
