// CPU kernels of fastgan::bias_act and bias_act_backward: at::parallel_for over vectorizable loops
// (helpers in cpu_common.h).
#include "bias_act.h"
#include "cpu_common.h"

namespace fastgan {
namespace {

using namespace cpu;

// act_grad extended by the output activations: their derivative from the saved output y.
template <int ACT, typename A>
inline A epi_grad(A g, A y, A slope) {
  if constexpr (ACT == kActTanh) return g * (A(1) - y * y);
  else if constexpr (ACT == kActSigmoid) return g * (y * (A(1) - y));
  else return act_grad<ACT>(g, y, slope);
}

template <int ACT, typename A>
inline A epi_fn(A v) {
  if constexpr (ACT == kActTanh) return std::tanh(v);
  else if constexpr (ACT == kActSigmoid) return A(1) / (A(1) + std::exp(-v));
  else return v;  // not called
}

// dispatch_act plus the two output activations.
template <typename F>
void dispatch_epi(int act, F&& f) {
  if (act == kActTanh) f(std::integral_constant<int, kActTanh>{});
  else if (act == kActSigmoid) f(std::integral_constant<int, kActSigmoid>{});
  else dispatch_act(static_cast<ActMode>(act), f);
}

template <int ACT, typename T>
void bias_act_bwd_t(const BiasActBwdParams& p) {
  using A = acc_t<T>;
  const T* grad = static_cast<const T*>(p.grad);
  const T* y = static_cast<const T*>(p.y);
  T* gx = static_cast<T*>(p.gx);
  const A slope = static_cast<A>(p.slope);
  const int64_t C = p.g.C, outer = p.g.outer;
  auto row = [&](int64_t off, int64_t n) {
    const T* __restrict__ gi = grad + off;
    const T* __restrict__ yi = y + off;
    T* __restrict__ o = gx + off;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) o[i] = T(epi_grad<ACT>(ld(gi[i]), ld(yi[i]), slope));
  };
  if (p.db == nullptr) {
    at::parallel_for(0, p.g.numel(), kGrainElems, [&](int64_t b, int64_t e) { row(b, e - b); });
    return;
  }
  T* db = static_cast<T*>(p.db);
  if (p.g.inner == 1) {
    // rows [outer, C]: chunk partials per channel.
    const int64_t rpc = std::max<int64_t>(1, kChunkElems / C);
    const int64_t nchunks = (outer + rpc - 1) / rpc;
    std::vector<double> part(static_cast<size_t>(nchunks * C), 0.0);
    at::parallel_for(0, nchunks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        double* __restrict__ acc = part.data() + k * C;
        const int64_t r1 = std::min(outer, (k + 1) * rpc);
        for (int64_t r = k * rpc; r < r1; ++r) {
          const T* __restrict__ gi = grad + r * C;
          const T* __restrict__ yi = y + r * C;
          T* __restrict__ o = gx + r * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const A v = epi_grad<ACT>(ld(gi[c]), ld(yi[c]), slope);
            o[c] = T(v);
            acc[c] += v;
          }
        }
      }
    });
    at::parallel_for(0, C, 256, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double t = 0;
        for (int64_t k = 0; k < nchunks; ++k) t += part[k * C + c];
        db[c] = T(static_cast<A>(t));
      }
    });
  } else {
    const Units U(p.g);
    std::vector<double> usum(static_cast<size_t>(U.count()));
    at::parallel_for(0, U.count(), U.grain(), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t off = U.offset(u), n = U.length(u);
        const T* __restrict__ gi = grad + off;
        const T* __restrict__ yi = y + off;
        T* __restrict__ o = gx + off;
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < n; ++i) {
          const A v = epi_grad<ACT>(ld(gi[i]), ld(yi[i]), slope);
          o[i] = T(v);
          sum += v;
        }
        usum[u] = sum;
      }
    });
    at::parallel_for(0, C, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double t = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t k = 0; k < U.nseg; ++k) t += usum[(o * C + c) * U.nseg + k];
        db[c] = T(static_cast<A>(t));
      }
    });
  }
}

template <typename T>
void bias_act_fwd_t(const BiasActParams& p) {
  using A = acc_t<T>;
  std::vector<A> zeros;
  const A* shift = static_cast<const A*>(p.bias);
  if (!shift) {
    zeros.assign(static_cast<size_t>(p.g.C), A(0));
    shift = zeros.data();
  }
  if (p.act == kActTanh || p.act == kActSigmoid || p.bn_mean) {
    const T* x = static_cast<const T*>(p.x);
    T* y = static_cast<T*>(p.y);
    const A slope = static_cast<A>(p.slope);
    const A* bm = static_cast<const A*>(p.bn_mean);
    const A* bv = static_cast<const A*>(p.bn_var);
    const A* bw = static_cast<const A*>(p.bn_w);
    const A* bb = static_cast<const A*>(p.bn_b);
    const A eps = static_cast<A>(p.bn_eps);
    dispatch_epi(p.act, [&](auto act) {
      constexpr int ACT = decltype(act)::value;
      auto f = [&](A v, int64_t c) {
        v = (ACT == kActTanh || ACT == kActSigmoid) ? epi_fn<ACT>(v) : act_fn<ACT>(v, slope);
        if (bm) v = (v - bm[c]) / std::sqrt(bv[c] + eps) * (bw ? bw[c] : A(1)) + (bb ? bb[c] : A(0));
        return v;
      };
      at::parallel_for(0, p.g.numel(), kGrainElems, [&](int64_t b, int64_t e) {
        for_segments(
            p.g, b, e,
            [&](int64_t off, int64_t n, int64_t c0) {
              for (int64_t i = 0; i < n; ++i) y[off + i] = T(f(ld(x[off + i]) + shift[c0 + i], c0 + i));
            },
            [&](int64_t off, int64_t n, int64_t c) {
              const A s = shift[c];
              for (int64_t i = 0; i < n; ++i) y[off + i] = T(f(ld(x[off + i]) + s, c));
            });
      });
    });
    return;
  }
  dispatch_act(static_cast<ActMode>(p.act), [&](auto act) {
    affine_act<decltype(act)::value>(static_cast<const T*>(p.x), static_cast<T*>(p.y), nullptr, nullptr,
                                     shift, p.g, static_cast<A>(p.slope));
  });
}

}  // namespace

void cpu_bias_act_fwd(const BiasActParams& p) {
  if (p.g.numel() == 0) return;
  dispatch_dtype(p.dtype, [&](auto t) { bias_act_fwd_t<decltype(t)>(p); });
}

void cpu_bias_act_bwd(const BiasActBwdParams& p) {
  if (p.g.numel() == 0) return;
  dispatch_dtype(p.dtype, [&](auto t) {
    dispatch_epi(p.act, [&](auto act) { bias_act_bwd_t<decltype(act)::value, decltype(t)>(p); });
  });
}

}  // namespace fastgan
