// CPU kernels of fastgan::bn_stats, bn_act and bn_act_backward: at::parallel_for over
// vectorizable loops (helpers in cpu_common.h).
#include "bn_act.h"
#include "cpu_common.h"

namespace fastgan {
namespace {

using namespace cpu;

template <typename T>
void bn_stats_t(const BnStatsParams& p) {
  using A = acc_t<T>;
  const int64_t C = p.g.C, inner = p.g.inner, outer = p.g.outer;
  A* mean_out = static_cast<A*>(p.mean);
  A* invstd_out = static_cast<A*>(p.invstd);
  A* rm = static_cast<A*>(p.running_mean);
  A* rv = static_cast<A*>(p.running_var);
  const double eps = p.eps, mom = p.momentum;
  if (!p.training) {
    for (int64_t c = 0; c < C; ++c) {
      mean_out[c] = rm[c];
      invstd_out[c] = static_cast<A>(1.0 / std::sqrt(static_cast<double>(rv[c]) + eps));
    }
    return;
  }
  const T* x = static_cast<const T*>(p.x);
  // Per-channel (count, mean, M2) in double, combined from exact-in-cache partials.
  std::vector<double> cmean(static_cast<size_t>(C)), cm2(static_cast<size_t>(C));
  double count = static_cast<double>(outer) * static_cast<double>(inner);
  if (inner == 1) {
    const int64_t rpc = std::max<int64_t>(2, kChunkElems / C);
    const int64_t nchunks = (outer + rpc - 1) / rpc;
    std::vector<double> pmean(static_cast<size_t>(nchunks * C)), pm2(static_cast<size_t>(nchunks * C));
    at::parallel_for(0, nchunks, 1, [&](int64_t k0, int64_t k1) {
      std::vector<double> s(static_cast<size_t>(C)), q(static_cast<size_t>(C));
      for (int64_t k = k0; k < k1; ++k) {
        const int64_t r0 = k * rpc, r1 = std::min(outer, r0 + rpc);
        const double inv_n = 1.0 / static_cast<double>(r1 - r0);
        double* __restrict__ sp = s.data();
        double* __restrict__ qp = q.data();
        std::fill(s.begin(), s.end(), 0.0);
        std::fill(q.begin(), q.end(), 0.0);
        for (int64_t r = r0; r < r1; ++r) {
          const T* __restrict__ xr = x + r * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) sp[c] += static_cast<double>(ld(xr[c]));
        }
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) sp[c] *= inv_n;  // chunk mean
        for (int64_t r = r0; r < r1; ++r) {
          const T* __restrict__ xr = x + r * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const double d = static_cast<double>(ld(xr[c])) - sp[c];
            qp[c] += d * d;
          }
        }
        for (int64_t c = 0; c < C; ++c) {
          pmean[k * C + c] = sp[c];
          pm2[k * C + c] = qp[c];
        }
      }
    });
    at::parallel_for(0, C, 64, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double n = 0, m = 0, m2 = 0;
        for (int64_t k = 0; k < nchunks; ++k) {
          const double nb = static_cast<double>(std::min(outer, (k + 1) * rpc) - k * rpc);
          const double mb = pmean[k * C + c], d = mb - m, nn = n + nb;
          m += d * nb / nn;
          m2 += pm2[k * C + c] + d * d * n * nb / nn;
          n = nn;
        }
        cmean[c] = m;
        cm2[c] = m2;
      }
    });
  } else {
    // planar: exact two-pass statistics per unit (in cache), then combined (Chan et al.).
    const Units U(p.g);
    std::vector<double> umean(static_cast<size_t>(U.count())), um2(static_cast<size_t>(U.count()));
    at::parallel_for(0, U.count(), U.grain(), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t n = U.length(u);
        const T* __restrict__ xr = x + U.offset(u);
        double sum = 0.0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(ld(xr[i]));
        const double m = sum / static_cast<double>(n);
        double q = 0.0;
#pragma omp simd reduction(+ : q)
        for (int64_t i = 0; i < n; ++i) {
          const double d = static_cast<double>(ld(xr[i])) - m;
          q += d * d;
        }
        umean[u] = m;
        um2[u] = q;
      }
    });
    at::parallel_for(0, C, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double n = 0, m = 0, m2 = 0;
        for (int64_t o = 0; o < outer; ++o) {
          for (int64_t k = 0; k < U.nseg; ++k) {
            const int64_t u = (o * C + c) * U.nseg + k;
            const double nb = static_cast<double>(U.length(u));
            const double d = umean[u] - m, nn = n + nb;
            m += d * nb / nn;
            m2 += um2[u] + d * d * n * nb / nn;
            n = nn;
          }
        }
        cmean[c] = m;
        cm2[c] = m2;
      }
    });
  }
  for (int64_t c = 0; c < C; ++c) {
    const double var = cm2[c] / count;
    mean_out[c] = static_cast<A>(cmean[c]);
    invstd_out[c] = static_cast<A>(1.0 / std::sqrt(var + eps));
    if (rm) rm[c] = static_cast<A>((1.0 - mom) * static_cast<double>(rm[c]) + mom * cmean[c]);
    const double batch_var = cm2[c] / (p.unbiased_running_var ? count - 1.0 : count);
    if (rv) rv[c] = static_cast<A>((1.0 - mom) * static_cast<double>(rv[c]) + mom * batch_var);
  }
}

// z = (x - mean) * scale + shift with scale = gamma * invstd, shift = beta: the same arithmetic
// forward and backward, so the recomputed pre-activation has exactly the forward's sign; centring
// first keeps z accurate when |mean| >> std.
template <typename A>
void scale_shift(const A* w, const A* b, const A* mean, const A* invstd, int64_t C,
                 std::vector<A>& scale, std::vector<A>& shift) {
  (void)mean;
  scale.resize(static_cast<size_t>(C));
  shift.resize(static_cast<size_t>(C));
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = (w ? w[c] : A(1)) * invstd[c];
    shift[c] = b ? b[c] : A(0);
  }
}

template <typename T>
void bn_apply_t(const BnApplyParams& p) {
  using A = acc_t<T>;
  const A* invstd = static_cast<const A*>(p.invstd);
  std::vector<A> from_var;
  if (p.var_eps >= 0.0) {  // eval mode from the running variance: as bn_stats' eval branch
    from_var.resize(static_cast<size_t>(p.g.C));
    for (int64_t c = 0; c < p.g.C; ++c)
      from_var[c] = static_cast<A>(1.0 / std::sqrt(static_cast<double>(invstd[c]) + p.var_eps));
    invstd = from_var.data();
  }
  std::vector<A> scale, shift;
  scale_shift(static_cast<const A*>(p.weight), static_cast<const A*>(p.bias), static_cast<const A*>(p.mean),
              invstd, p.g.C, scale, shift);
  dispatch_act(p.act, [&](auto act) {
    affine_act<decltype(act)::value>(static_cast<const T*>(p.x), static_cast<T*>(p.y),
                                     static_cast<const A*>(p.mean), scale.data(), shift.data(), p.g,
                                     static_cast<A>(p.slope));
  });
}

template <int ACT, typename T>
void bn_bwd_t(const BnBwdParams& p) {
  using A = acc_t<T>;
  const int64_t C = p.g.C, inner = p.g.inner, outer = p.g.outer;
  const T* grad = static_cast<const T*>(p.grad);
  const T* x = static_cast<const T*>(p.x);
  T* dx = static_cast<T*>(p.dx);
  const A* w = static_cast<const A*>(p.weight);
  const A* mean = static_cast<const A*>(p.mean);
  const A* invstd = static_cast<const A*>(p.invstd);
  const A slope = static_cast<A>(p.slope);
  std::vector<A> scale, shift;
  scale_shift(w, static_cast<const A*>(p.bias), mean, invstd, C, scale, shift);
  std::vector<double> s1(static_cast<size_t>(C)), s2(static_cast<size_t>(C));

  // Pass 1: sum(gz), sum(gz * (x - mean)) per channel.
  if (inner == 1) {
    const int64_t rpc = std::max<int64_t>(1, kChunkElems / C);
    const int64_t nchunks = (outer + rpc - 1) / rpc;
    std::vector<double> p1(static_cast<size_t>(nchunks * C), 0.0), p2(static_cast<size_t>(nchunks * C), 0.0);
    const A* __restrict__ sc = scale.data();
    const A* __restrict__ sh = shift.data();
    at::parallel_for(0, nchunks, 1, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        double* __restrict__ a1 = p1.data() + k * C;
        double* __restrict__ a2 = p2.data() + k * C;
        const int64_t r1 = std::min(outer, (k + 1) * rpc);
        for (int64_t r = k * rpc; r < r1; ++r) {
          const T* __restrict__ xr = x + r * C;
          const T* __restrict__ gr = grad + r * C;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) {
            const A xa = ld(xr[c]);
            const A gz = act_grad<ACT>(ld(gr[c]), (xa - mean[c]) * sc[c] + sh[c], slope);
            a1[c] += gz;
            a2[c] += static_cast<double>(gz * (xa - mean[c]));
          }
        }
      }
    });
    for (int64_t c = 0; c < C; ++c) {
      double t1 = 0, t2 = 0;
      for (int64_t k = 0; k < nchunks; ++k) {
        t1 += p1[k * C + c];
        t2 += p2[k * C + c];
      }
      s1[c] = t1;
      s2[c] = t2;
    }
  } else {
    const Units U(p.g);
    std::vector<double> u1s(static_cast<size_t>(U.count())), u2s(static_cast<size_t>(U.count()));
    at::parallel_for(0, U.count(), U.grain(), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t c = U.row(u) % C, n = U.length(u), off = U.offset(u);
        const A sc = scale[c], sh = shift[c], m = mean[c];
        const T* __restrict__ xr = x + off;
        const T* __restrict__ gr = grad + off;
        double a1 = 0.0, a2 = 0.0;
#pragma omp simd reduction(+ : a1, a2)
        for (int64_t i = 0; i < n; ++i) {
          const A xa = ld(xr[i]);
          const A gz = act_grad<ACT>(ld(gr[i]), (xa - m) * sc + sh, slope);
          a1 += gz;
          a2 += static_cast<double>(gz * (xa - m));
        }
        u1s[u] = a1;
        u2s[u] = a2;
      }
    });
    at::parallel_for(0, C, 16, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double t1 = 0, t2 = 0;
        for (int64_t o = 0; o < outer; ++o)
          for (int64_t k = 0; k < U.nseg; ++k) {
            t1 += u1s[(o * C + c) * U.nseg + k];
            t2 += u2s[(o * C + c) * U.nseg + k];
          }
        s1[c] = t1;
        s2[c] = t2;
      }
    });
  }

  // Finalize: dgamma, dbeta and dx = P * gz - Q * (x - mean) + R per channel.
  const double count = static_cast<double>(outer) * static_cast<double>(inner);
  std::vector<A> P(static_cast<size_t>(C)), Q(static_cast<size_t>(C)), R(static_cast<size_t>(C));
  A* dweight = static_cast<A*>(p.dweight);
  A* dbias = static_cast<A*>(p.dbias);
  for (int64_t c = 0; c < C; ++c) {
    const double is = invstd[c];
    const double dgamma = s2[c] * is;
    dweight[c] = static_cast<A>(dgamma);
    dbias[c] = static_cast<A>(s1[c]);
    const double pc = (w ? static_cast<double>(w[c]) : 1.0) * is;
    P[c] = static_cast<A>(pc);
    Q[c] = p.training ? static_cast<A>(pc * is * dgamma / count) : A(0);
    R[c] = p.training ? static_cast<A>(-pc * s1[c] / count) : A(0);
  }

  // Pass 2: dx.
  const A* __restrict__ sc = scale.data();
  const A* __restrict__ sh = shift.data();
  const A* __restrict__ Pp = P.data();
  const A* __restrict__ Qp = Q.data();
  const A* __restrict__ Rp = R.data();
  at::parallel_for(0, p.g.numel(), kGrainElems, [&](int64_t b, int64_t e) {
    for_segments(
        p.g, b, e,
        [&](int64_t off, int64_t n, int64_t c0) {
          const T* __restrict__ xr = x + off;
          const T* __restrict__ gr = grad + off;
          T* __restrict__ o = dx + off;
          const A* __restrict__ scc = sc + c0;
          const A* __restrict__ shc = sh + c0;
          const A* __restrict__ mc = mean + c0;
          const A* __restrict__ pc = Pp + c0;
          const A* __restrict__ qc = Qp + c0;
          const A* __restrict__ rc = Rp + c0;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            const A xa = ld(xr[i]);
            const A gz = act_grad<ACT>(ld(gr[i]), (xa - mc[i]) * scc[i] + shc[i], slope);
            o[i] = T(pc[i] * gz - qc[i] * (xa - mc[i]) + rc[i]);
          }
        },
        [&](int64_t off, int64_t n, int64_t c) {
          const A scv = sc[c], shv = sh[c], m = mean[c], pc = Pp[c], qc = Qp[c], rc = Rp[c];
          const T* __restrict__ xr = x + off;
          const T* __restrict__ gr = grad + off;
          T* __restrict__ o = dx + off;
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            const A xa = ld(xr[i]);
            const A gz = act_grad<ACT>(ld(gr[i]), (xa - m) * scv + shv, slope);
            o[i] = T(pc * gz - qc * (xa - m) + rc);
          }
        });
  });
}

}  // namespace

void cpu_bn_stats(const BnStatsParams& p) {
  dispatch_dtype(p.dtype, [&](auto t) { bn_stats_t<decltype(t)>(p); });
}

void cpu_bn_apply(const BnApplyParams& p) {
  if (p.g.numel() == 0) return;
  dispatch_dtype(p.dtype, [&](auto t) { bn_apply_t<decltype(t)>(p); });
}

void cpu_bn_bwd(const BnBwdParams& p) {
  dispatch_dtype(p.dtype, [&](auto t) {
    dispatch_act(p.act, [&](auto act) { bn_bwd_t<decltype(act)::value, decltype(t)>(p); });
  });
}

}  // namespace fastgan
