// Shared, torch-free and CUDA-free declarations of the fastgan._C kernels.
//
// Every kernel sees its tensor as dense memory laid out as [outer, C, inner]: C is the channel
// (bias / batch-norm) dimension and `inner` its stride. A contiguous NCHW tensor is
// [N, C, H*W]; a channels_last one is [N*H*W, C, 1]; a [N, C] matrix is [N, C, 1]. Any dense,
// non-overlapping tensor maps onto this view, so the kernels never see strides.
#pragma once

#include <cstddef>
#include <cstdint>

// The CUDA runtime's own definition (driver_types.h), repeated so that headers need no CUDA.
typedef struct CUstream_st* cudaStream_t;

namespace fastgan {

enum class DType : int32_t { kFloat32 = 0, kBFloat16 = 1, kFloat64 = 2 };

// slope None = identity, 0.0 = ReLU, otherwise LeakyReLU(slope).
enum class ActMode : int32_t { kIdentity = 0, kReLU = 1, kLeaky = 2 };

struct Geom {
  int64_t outer = 1;
  int64_t C = 1;
  int64_t inner = 1;
  int64_t numel() const { return outer * C * inner; }
};

// Pointers typed `void*` hold the tensor dtype (T); pointers documented as "acc" hold the
// accumulation type: float for float32/bfloat16 tensors, double for float64 tensors.

// Debug: when on, every output and workspace the ops allocate is filled with NaN (0xFF bytes)
// before the kernels run, so that an element a kernel forgets to write shows in the tests.
// Defined in ops/op_common.cpp; toggled from Python with fastgan._C._set_debug_poison(bool).
void set_debug_poison(bool on);
bool debug_poison();

// ---- CUDA helpers (defined in cuda/cuda_common.cu; absent in CPU-only builds) ----
const char* cuda_error_string(int err);
// Multiprocessor count of the current device (cached); 0 if unknown.
int cuda_num_sms();

}  // namespace fastgan
