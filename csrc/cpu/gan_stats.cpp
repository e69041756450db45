// CPU kernel of fastgan::gan_stats: serial (a GAN has a few logits per sample), the sigmoids in
// the logits' accumulation type, their sums in double, in index order (deterministic).
#include "gan_stats.h"
#include "cpu_common.h"

namespace fastgan {
namespace {

using namespace cpu;

template <typename T>
double mean_sigmoid(const void* z, int64_t n) {
  using A = acc_t<T>;
  const T* p = static_cast<const T*>(z);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += A(1) / (A(1) + std::exp(-ld(p[i])));
  return static_cast<A>(s / static_cast<double>(n));   // n == 0: NaN
}

template <typename S>
void add_stats(const GanStatsParams& p, double mr, double mf) {
  S* st = static_cast<S*>(p.stats);
  st[0] += *static_cast<const S*>(p.loss_d);
  st[1] += *static_cast<const S*>(p.loss_g);
  st[2] += static_cast<S>(mr);
  st[3] += static_cast<S>(mf);
  st[4] += S(1);
}

}  // namespace

void cpu_gan_stats(const GanStatsParams& p) {
  double mr = 0.0, mf = 0.0;
  dispatch_dtype(p.logit_dtype, [&](auto t) {
    using T = decltype(t);
    mr = mean_sigmoid<T>(p.real, p.n_real);
    mf = mean_sigmoid<T>(p.fake, p.n_fake);
  });
  if (p.stats_dtype == DType::kFloat64) add_stats<double>(p, mr, mf);
  else add_stats<float>(p, mr, mf);
}

}  // namespace fastgan
