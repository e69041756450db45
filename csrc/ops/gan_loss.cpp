// fastgan::gan_loss: schema, argument checks, allocation and the launch of the CPU
// (cpu/gan_loss.cpp) or CUDA (cuda/gan_loss.cu) kernel.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <limits>
#include <tuple>
#include <vector>

#include "gan_loss.h"
#include "op_common.h"

namespace fastgan {
namespace detail {

namespace {

// stats (gan_loss_stats): the metrics' parameters, whose loss_g becomes the loss written here.
template <Dev dev>
std::tuple<Tensor, Tensor> gan_loss_run(const Tensor& logits, const OptTensor& target,
                                        double target_value, c10::string_view kind,
                                        c10::string_view reduction, double weight,
                                        GanStatsParams* stats) {
  const char* op = stats ? "gan_loss_stats" : "gan_loss";
  const DType dt = dtype_of(logits, op, "logits");
  GanLossKind k;
  if (kind == "bce") k = GanLossKind::kBCE;
  else if (kind == "lsgan") k = GanLossKind::kLSGAN;
  else if (kind == "hinge") k = GanLossKind::kHinge;
  else if (kind == "linear") k = GanLossKind::kLinear;
  else TORCH_CHECK(false, "fastgan::gan_loss: unknown kind '", std::string(kind),
                   "' (use 'bce', 'lsgan', 'hinge' or 'linear')");
  bool mean;
  if (reduction == "mean") mean = true;
  else if (reduction == "sum") mean = false;
  else TORCH_CHECK(false, "fastgan::gan_loss: unknown reduction '", std::string(reduction), "' (use 'mean' or 'sum')");
  const DeviceGuard guard(logits, dev);
  const at::ScalarType acc = acc_type(logits.scalar_type());
  const Tensor lg = logits.contiguous();
  Tensor grad = fresh(at::empty_like(logits, logits.options().dtype(acc), at::MemoryFormat::Contiguous));
  Tensor loss = fresh(at::empty({}, logits.options()));
  Tensor t;
  GanLossParams p;
  p.dtype = dt;
  p.logits = lg.data_ptr();
  p.n = lg.numel();
  if (target.has_value()) {
    check_device(*target, logits, op, "target");
    TORCH_CHECK(at::isFloatingType(target->scalar_type()), "fastgan::gan_loss: target must be a "
                "floating-point tensor, got ", dtype_str(target->scalar_type()));
    if (target->numel() == 1) {
      t = target->reshape({1}).to(acc).contiguous();
      p.target_per_element = false;
    } else {
      t = target->expand_as(logits).to(acc).contiguous();  // errors if not broadcastable
      p.target_per_element = true;
    }
    p.target = t.data_ptr();
  }
  p.target_value = target_value;
  p.kind = k;
  // the constant weight rides in the reduction's scale: weight * loss costs no kernel
  p.scale = mean ? (p.n > 0 ? weight * (1.0 / static_cast<double>(p.n))
                            : std::numeric_limits<double>::quiet_NaN())
                 : weight;
  p.loss = loss.data_ptr();
  p.grad = grad.data_ptr();
  if (stats) {
    stats->loss_g = p.loss;
    p.stats = stats;
  }
  run_kernel(dev, op, logits, [&] { cpu_gan_loss(p); },
             [&](cudaStream_t s) { return launch_gan_loss(p, s); });
  return {loss, grad};
}

template <Dev dev>
std::tuple<Tensor, Tensor> gan_loss_impl(const Tensor& logits, const OptTensor& target,
                                         double target_value, c10::string_view kind,
                                         c10::string_view reduction, double weight) {
  return gan_loss_run<dev>(logits, target, target_value, kind, reduction, weight, nullptr);
}

// gan_loss, then gan_stats with its loss as loss_g, in the loss kernel: the loss (logits'
// dtype) must be in stats' dtype.
template <Dev dev>
std::tuple<Tensor, Tensor> gan_loss_stats_impl(const Tensor& logits, const OptTensor& target,
                                               double target_value, c10::string_view kind,
                                               c10::string_view reduction, double weight,
                                               const Tensor& stats, const Tensor& loss_d,
                                               const Tensor& real, const Tensor& fake) {
  const char* op = "gan_loss_stats";
  std::vector<Tensor> keep;
  GanStatsParams sp = gan_stats_params(stats, loss_d, nullptr, real, fake, keep, op);
  check_device(logits, stats, op, "logits");
  TORCH_CHECK(logits.scalar_type() == stats.scalar_type(), "fastgan::gan_loss_stats: logits ("
              , dtype_str(logits.scalar_type()), ") must have stats' dtype (",
              dtype_str(stats.scalar_type()), "): the loss is added to stats as it is stored");
  return gan_loss_run<dev>(logits, target, target_value, kind, reduction, weight, &sp);
}

TORCH_LIBRARY_FRAGMENT(fastgan, m) {
  def_ops(m, {"gan_loss(Tensor logits, Tensor? target, float target_value, str kind, str reduction, "
              "float weight=1.0) -> (Tensor, Tensor)",
              "gan_loss_stats(Tensor logits, Tensor? target, float target_value, str kind, "
              "str reduction, float weight, Tensor(a!) stats, Tensor loss_d, Tensor real_logits, "
              "Tensor fake_logits) -> (Tensor, Tensor)"});
}
FASTGAN_IMPLS(m.impl("gan_loss", &gan_loss_impl<D>); m.impl("gan_loss_stats", &gan_loss_stats_impl<D>);)

}  // namespace
}  // namespace detail
}  // namespace fastgan
