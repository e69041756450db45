// CPU kernel of fastgan::gather_scale: at::parallel_for over the images of the batch.
// Contraction of x * scale + shift into an FMA is switched off for this file: torch rounds the
// product and the sum separately, and so must we (GCC contracts by default in GNU mode).
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif
#include "gather_scale.h"
#include "cpu_common.h"

namespace fastgan {
namespace {

using namespace cpu;

template <typename T>
int64_t gather_scale_t(const GatherScaleParams& p) {
  for (int64_t i = 0; i < p.n; ++i)   // checked first: nothing is written for a bad index
    if (p.idx[i] < 0 || p.idx[i] >= p.n_rows) return i;
  const T scale = static_cast<T>(p.scale), shift = static_cast<T>(p.shift);
  const bool has_shift = p.shift != 0.0;
  T* out = static_cast<T*>(p.out);
  const int64_t grain = std::max<int64_t>(1, kGrainElems / std::max<int64_t>(p.px, 1));
  at::parallel_for(0, p.n, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const uint8_t* __restrict__ src = p.images + p.idx[i] * p.row_stride;
      T* __restrict__ dst = out + i * p.px;
      if (has_shift) {
#pragma omp simd
        for (int64_t j = 0; j < p.px; ++j) {
          const T v = static_cast<T>(src[j]) * scale;
          dst[j] = v + shift;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < p.px; ++j) dst[j] = static_cast<T>(src[j]) * scale;
      }
    }
  });
  return -1;
}

}  // namespace

int64_t cpu_gather_scale(const GatherScaleParams& p) {
  return p.dtype == DType::kFloat64 ? gather_scale_t<double>(p) : gather_scale_t<float>(p);
}

}  // namespace fastgan
