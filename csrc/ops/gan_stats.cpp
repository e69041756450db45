// fastgan::gan_stats: schema, argument checks and the launch of the CPU (cpu/gan_stats.cpp) or
// CUDA (cuda/gan_stats.cu) kernel. In place on `stats`.
#include <vector>

#include "gan_stats.h"
#include "op_common.h"

namespace fastgan {
namespace detail {

namespace {

// One element in stats' dtype (a copy only for a loss of another dtype).
Tensor loss_as_stats(const Tensor& t, const Tensor& stats, const char* arg) {
  TORCH_CHECK(t.numel() == 1 && at::isFloatingType(t.scalar_type()), "fastgan::gan_stats: ", arg,
              " must be one floating-point element, got ", dtype_str(t.scalar_type()), " of shape ",
              shape_str(t.sizes()));
  check_device(t, stats, "gan_stats", arg);
  return t.scalar_type() == stats.scalar_type() ? t : t.to(stats.scalar_type());
}

template <Dev dev>
void gan_stats_impl(const Tensor& stats, const Tensor& loss_d, const Tensor& loss_g,
                    const Tensor& real, const Tensor& fake) {
  std::vector<Tensor> keep;
  GanStatsParams p = gan_stats_params(stats, loss_d, &loss_g, real, fake, keep, "gan_stats");
  const DeviceGuard guard(stats, dev);
  run_kernel(dev, "gan_stats", stats, [&] { cpu_gan_stats(p); },
             [&](cudaStream_t s) { return launch_gan_stats(p, s); });
}

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  def_ops(m, {"gan_stats(Tensor(a!) stats, Tensor loss_d, Tensor loss_g, Tensor real_logits, "
              "Tensor fake_logits) -> ()"});
}
FASTGAN_IMPLS(m.impl("gan_stats", &gan_stats_impl<D>);)

}  // namespace

GanStatsParams gan_stats_params(const Tensor& stats, const Tensor& loss_d, const Tensor* loss_g,
                                const Tensor& real, const Tensor& fake, std::vector<Tensor>& keep,
                                const char* op) {
  TORCH_CHECK(stats.dim() == 1 && stats.numel() == 5 && stats.is_contiguous() &&
                  (stats.scalar_type() == at::kFloat || stats.scalar_type() == at::kDouble),
              "fastgan::", op, ": stats must be a contiguous 1-D float32 or float64 tensor of 5 "
              "elements, got ", dtype_str(stats.scalar_type()), " of shape ",
              shape_str(stats.sizes()));
  const DType dt = dtype_of(real, op, "real_logits");
  check_device(real, stats, op, "real_logits");
  check_device(fake, stats, op, "fake_logits");
  keep.push_back(loss_as_stats(loss_d, stats, "loss_d"));
  if (loss_g) keep.push_back(loss_as_stats(*loss_g, stats, "loss_g"));
  keep.push_back(real.contiguous());
  keep.push_back(fake.scalar_type() == real.scalar_type()
                     ? fake.contiguous() : fake.to(real.scalar_type()).contiguous());
  const Tensor& r = keep[keep.size() - 2];
  const Tensor& f = keep.back();
  GanStatsParams p;
  p.stats_dtype = stats.scalar_type() == at::kDouble ? DType::kFloat64 : DType::kFloat32;
  p.stats = stats.data_ptr();
  p.loss_d = keep[0].data_ptr();
  p.loss_g = loss_g ? keep[1].data_ptr() : nullptr;
  p.logit_dtype = dt;
  p.real = r.data_ptr();
  p.n_real = r.numel();
  p.fake = f.data_ptr();
  p.n_fake = f.numel();
  return p;
}

}  // namespace detail
}  // namespace fastgan
