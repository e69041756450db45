// out[i, :] = images[idx[i], :] * scale + shift: a batch of uint8 images gathered and converted
// to float in one pass. The product and the sum are rounded separately (no FMA), as torch's mul
// then add_ round them, so the result is bit-identical to those two ops.
#pragma once
#include "common.h"

namespace fastgan {

struct GatherScaleParams {
  DType dtype = DType::kFloat32;   // of out: kFloat32 or kFloat64 (the math is in out's dtype)
  const uint8_t* images = nullptr; // row r at images + r * row_stride, px contiguous bytes
  int64_t n_rows = 0;              // rows of images (idx must lie in [0, n_rows))
  int64_t row_stride = 0;
  int64_t px = 0;
  const int64_t* idx = nullptr;    // [n]
  int64_t n = 0;
  double scale = 1.0, shift = 0.0;
  void* out = nullptr;             // [n, px], contiguous
};

// CUDA (cuda/gather_scale.cu). Returns 0 or a cudaError_t value.
int launch_gather_scale(const GatherScaleParams& p, cudaStream_t stream);

// CPU (cpu/gather_scale.cpp). Returns -1, or the position in idx of an index out of range.
int64_t cpu_gather_scale(const GatherScaleParams& p);

}  // namespace fastgan
