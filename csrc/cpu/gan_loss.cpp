// CPU kernels of fastgan::gan_loss: at::parallel_for over vectorizable loops
// (helpers in cpu_common.h).
#include "gan_loss.h"
#include "cpu_common.h"

namespace fastgan {
namespace {

using namespace cpu;

// In double whatever the input dtype (see gan_loss.cu): s and 1 - s from e = exp(-|l|).
inline void loss_grad(double l, double t, GanLossKind kind, double& loss, double& grad) {
  if (kind == GanLossKind::kHinge) {
    // `a < 0 ? 0 : a` keeps a NaN logit NaN; the subgradient at the kinks is 0, as torch.relu's
    const double a = 1.0 - l, b = 1.0 + l;
    loss = t * (a < 0.0 ? 0.0 : a) + (1.0 - t) * (b < 0.0 ? 0.0 : b);
    grad = (a > 0.0 ? -t : 0.0) + (b > 0.0 ? 1.0 - t : 0.0);
    return;
  }
  if (kind == GanLossKind::kLinear) {
    loss = (1.0 - 2.0 * t) * l;
    grad = 1.0 - 2.0 * t;
    return;
  }
  const double e = std::exp(-std::fabs(l));
  const double d = 1.0 + e;
  const double s = l >= 0.0 ? 1.0 / d : e / d;
  const double sc = l >= 0.0 ? e / d : 1.0 / d;
  const double st = t > 0.5 ? (1.0 - t) - sc : s - t;
  if (kind == GanLossKind::kBCE) {
    loss = (l > 0.0 ? l : 0.0) - l * t + std::log1p(e);
    grad = st;
  } else {
    loss = st * st;
    grad = 2.0 * st * s * sc;
  }
}

template <typename T>
void gan_loss_t(const GanLossParams& p) {
  using A = acc_t<T>;
  const T* logits = static_cast<const T*>(p.logits);
  A* grad = static_cast<A*>(p.grad);
  const A* target = static_cast<const A*>(p.target);
  const double tscalar = (target && !p.target_per_element) ? static_cast<double>(target[0]) : p.target_value;
  const bool per = target && p.target_per_element;
  const double scale = p.scale;
  const int64_t n = p.n;
  const int64_t nchunks = (n + kChunkElems - 1) / kChunkElems;
  std::vector<double> part(static_cast<size_t>(std::max<int64_t>(nchunks, 1)), 0.0);
  at::parallel_for(0, nchunks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t i0 = k * kChunkElems, i1 = std::min(n, i0 + kChunkElems);
      double s = 0.0;
      for (int64_t i = i0; i < i1; ++i) {
        double le, ge;
        loss_grad(static_cast<double>(ld(logits[i])), per ? static_cast<double>(target[i]) : tscalar, p.kind, le, ge);
        s += le;
        grad[i] = static_cast<A>(ge * scale);
      }
      part[k] = s;
    }
  });
  double total = 0;
  for (int64_t k = 0; k < nchunks; ++k) total += part[k];
  *static_cast<T*>(p.loss) = T(static_cast<A>(total * p.scale));
}

}  // namespace

void cpu_gan_loss(const GanLossParams& p) {
  dispatch_dtype(p.dtype, [&](auto t) { gan_loss_t<decltype(t)>(p); });
  if (p.stats) cpu_gan_stats(*p.stats);   // gan_loss_stats: the metrics, with the loss just written
}

}  // namespace fastgan
