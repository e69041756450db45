// fastgan::gather_scale on CUDA: one grid-stride pass over the [n, px] output; each element reads
// its image row from idx (on the device). __fmul_rn / __fadd_rn (and their double forms) keep
// nvcc from contracting x * scale + shift into an FMA: torch rounds the two separately.
// Torch-free.
#include "cuda_common.cuh"
#include "gather_scale.h"

namespace fastgan {
namespace {

using namespace cu;

constexpr int kThreads = 256;

__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

template <typename T>
__global__ void gather_scale_kernel(const uint8_t* __restrict__ images, int64_t row_stride,
                                    int64_t px, const int64_t* __restrict__ idx, int64_t total,
                                    T scale, T shift, bool has_shift, T* __restrict__ out) {
  for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < total;
       e += (int64_t)gridDim.x * blockDim.x) {
    const int64_t i = e / px, j = e - i * px;
    const T v = mul_rn((T)images[idx[i] * row_stride + j], scale);
    out[e] = has_shift ? add_rn(v, shift) : v;
  }
}

template <typename T>
int impl(const GatherScaleParams& p, cudaStream_t stream) {
  const int64_t total = p.n * p.px;
  if (total == 0) return 0;
  gather_scale_kernel<T><<<elementwise_blocks(total, kThreads), kThreads, 0, stream>>>(
      p.images, p.row_stride, p.px, p.idx, total, (T)p.scale, (T)p.shift, p.shift != 0.0,
      static_cast<T*>(p.out));
  return launch_status();
}

}  // namespace

int launch_gather_scale(const GatherScaleParams& p, cudaStream_t stream) {
  switch (p.dtype) {
    case DType::kFloat32: return impl<float>(p, stream);
    case DType::kFloat64: return impl<double>(p, stream);
    default: break;
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace fastgan
