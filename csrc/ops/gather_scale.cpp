// fastgan::gather_scale: schema, argument checks and the launch of the CPU
// (cpu/gather_scale.cpp) or CUDA (cuda/gather_scale.cu) kernel. In place on `out`.
#include <c10/util/irange.h>

#include "gather_scale.h"
#include "op_common.h"

namespace fastgan {
namespace detail {

namespace {

template <Dev dev>
void gather_scale_impl(const Tensor& images, const Tensor& idx, double scale, double shift,
                       const Tensor& out) {
  const char* op = "gather_scale";
  TORCH_CHECK(images.scalar_type() == at::kByte && images.dim() >= 1,
              "fastgan::gather_scale: images must be a uint8 tensor [N, ...], got ",
              dtype_str(images.scalar_type()), " of shape ", shape_str(images.sizes()));
  TORCH_CHECK(idx.scalar_type() == at::kLong && idx.dim() == 1,
              "fastgan::gather_scale: idx must be a 1-D int64 tensor, got ",
              dtype_str(idx.scalar_type()), " of shape ", shape_str(idx.sizes()));
  TORCH_CHECK(out.scalar_type() == at::kFloat || out.scalar_type() == at::kDouble,
              "fastgan::gather_scale: out must be float32 or float64, got ",
              dtype_str(out.scalar_type()));
  check_device(idx, images, op, "idx");
  check_device(out, images, op, "out");
  int64_t px = 1;
  for (const auto d : c10::irange(1, images.dim())) px *= images.size(d);
  TORCH_CHECK(out.is_contiguous() && out.numel() == idx.numel() * px,
              "fastgan::gather_scale: out must be contiguous with ", std::to_string(idx.numel()),
              " x ", std::to_string(px), " elements, got shape ", shape_str(out.sizes()));
  const DeviceGuard guard(images, dev);
  // Each row must be px contiguous bytes; the rows themselves may have any stride.
  const Tensor img = (images.dim() == 1 || images[0].is_contiguous()) ? images : images.contiguous();
  const Tensor ix = idx.contiguous();
  GatherScaleParams p;
  p.dtype = out.scalar_type() == at::kDouble ? DType::kFloat64 : DType::kFloat32;
  p.images = img.data_ptr<uint8_t>();
  p.n_rows = img.size(0);
  p.row_stride = img.stride(0);
  p.px = px;
  p.idx = ix.data_ptr<int64_t>();
  p.n = ix.numel();
  p.scale = scale;
  p.shift = shift;
  p.out = out.data_ptr();
  int64_t bad = -1;
  run_kernel(dev, op, images, [&] { bad = cpu_gather_scale(p); },
             [&](cudaStream_t s) { return launch_gather_scale(p, s); });
  TORCH_CHECK(bad < 0, "fastgan::gather_scale: idx[", std::to_string(bad), "] = ",
              std::to_string(p.idx[bad < 0 ? 0 : bad]), " is out of range for ",
              std::to_string(p.n_rows), " images");
}

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  def_ops(m, {"gather_scale(Tensor images, Tensor idx, float scale, float shift, Tensor(a!) out) -> ()"});
}
FASTGAN_IMPLS(m.impl("gather_scale", &gather_scale_impl<D>);)

}  // namespace
}  // namespace detail
}  // namespace fastgan
