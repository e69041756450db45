// CPU kernels of fastgan::linear_bn_act's epilogue and backward (include/linear_bn_act.h): the
// columns in fixed blocks over the threads, each block's rows walked in order (vectorized
// across its columns), so the per-column sums never depend on the thread count.
#include "cpu_common.h"
#include "linear_bn_act.h"

namespace fastgan {
namespace {

using namespace cpu;

constexpr int64_t kCols = 64;  // columns per task

template <int PRE, int POST, typename T>
void fwd_t(const LinBnFwdParams& p) {
  using A = acc_t<T>;
  const int64_t N = p.N, M = p.M;
  T* h = static_cast<T*>(p.h);
  T* y = static_cast<T*>(p.y);
  const A* bias = static_cast<const A*>(p.bias);
  const A* gamma = static_cast<const A*>(p.gamma);
  const A* beta = static_cast<const A*>(p.beta);
  A* mean_out = static_cast<A*>(p.mean);
  A* invstd_out = static_cast<A*>(p.invstd);
  A* rm = static_cast<A*>(p.running_mean);
  A* rv = static_cast<A*>(p.running_var);
  const A sp = static_cast<A>(p.slope_pre), sq = static_cast<A>(p.slope_post);
  const double count = static_cast<double>(N), mom = p.momentum;
  at::parallel_for(0, (M + kCols - 1) / kCols, 1, [&](int64_t b0, int64_t b1) {
    double s[kCols], q[kCols];
    A center[kCols], scale[kCols], shift[kCols];
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t c0 = blk * kCols, nc = std::min(kCols, M - c0);
      std::fill(s, s + nc, 0.0);
      std::fill(q, q + nc, 0.0);
      // h = act_pre(z + bias), rounded to T: the statistics are those of the stored h
      for (int64_t r = 0; r < N; ++r) {
        T* __restrict__ hr = h + r * M + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const T v = T(act_fn<PRE>(ld(hr[c]) + (bias ? bias[c0 + c] : A(0)), sp));
          hr[c] = v;
          s[c] += static_cast<double>(ld(v));
        }
      }
      for (int64_t c = 0; c < nc; ++c) s[c] /= count;
      for (int64_t r = 0; r < N; ++r) {
        const T* __restrict__ hr = h + r * M + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const double d = static_cast<double>(ld(hr[c])) - s[c];
          q[c] += d * d;
        }
      }
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t j = c0 + c;
        const A m = static_cast<A>(s[c]);
        const A is = static_cast<A>(1.0 / std::sqrt(q[c] / count + p.eps));
        mean_out[j] = m;
        invstd_out[j] = is;
        if (rm) rm[j] = static_cast<A>((1.0 - mom) * static_cast<double>(rm[j]) + mom * s[c]);
        const double bv = q[c] / (p.unbiased_running_var ? count - 1.0 : count);
        if (rv) rv[j] = static_cast<A>((1.0 - mom) * static_cast<double>(rv[j]) + mom * bv);
        center[c] = m;
        scale[c] = (gamma ? gamma[j] : A(1)) * is;
        shift[c] = beta ? beta[j] : A(0);
      }
      for (int64_t r = 0; r < N; ++r) {
        const T* __restrict__ hr = h + r * M + c0;
        T* __restrict__ yr = y + r * M + c0;
        for (int64_t c = 0; c < nc; ++c)
          yr[c] = T(act_fn<POST>((ld(hr[c]) - center[c]) * scale[c] + shift[c], sq));
      }
    }
  });
}

template <int PRE, int POST, typename T>
void bwd_t(const LinBnBwdParams& p) {
  using A = acc_t<T>;
  const int64_t N = p.N, M = p.M;
  const T* g = static_cast<const T*>(p.grad);
  const T* h = static_cast<const T*>(p.h);
  T* gz = static_cast<T*>(p.gz);
  const A* gamma = static_cast<const A*>(p.gamma);
  const A* beta = static_cast<const A*>(p.beta);
  const A* mean = static_cast<const A*>(p.mean);
  const A* invstd = static_cast<const A*>(p.invstd);
  A* db = static_cast<A*>(p.db);
  A* dgamma = static_cast<A*>(p.dgamma);
  A* dbeta = static_cast<A*>(p.dbeta);
  const A sp = static_cast<A>(p.slope_pre), sq = static_cast<A>(p.slope_post);
  const A inv_n = A(1) / static_cast<A>(N);
  at::parallel_for(0, (M + kCols - 1) / kCols, 1, [&](int64_t b0, int64_t b1) {
    A sg[kCols], sgx[kCols], sz[kCols], scale[kCols], shift[kCols], k1[kCols], k2[kCols];
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t c0 = blk * kCols, nc = std::min(kCols, M - c0);
      for (int64_t c = 0; c < nc; ++c) {
        sg[c] = sgx[c] = sz[c] = A(0);
        scale[c] = (gamma ? gamma[c0 + c] : A(1)) * invstd[c0 + c];
        shift[c] = beta ? beta[c0 + c] : A(0);
      }
      for (int64_t r = 0; r < N; ++r) {
        const T* __restrict__ hr = h + r * M + c0;
        const T* __restrict__ gr = g + r * M + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const A xc = ld(hr[c]) - mean[c0 + c];
          // the forward's u, with the same arithmetic, for act_post's mask
          const A gu = act_grad<POST>(ld(gr[c]), xc * scale[c] + shift[c], sq);
          sg[c] += gu;
          sgx[c] += gu * xc;
        }
      }
      for (int64_t c = 0; c < nc; ++c) {
        const A is = invstd[c0 + c];
        dbeta[c0 + c] = sg[c];
        dgamma[c0 + c] = sgx[c] * is;
        k1[c] = sg[c] * inv_n;
        k2[c] = sgx[c] * is * is * inv_n;   // dgamma * invstd / N
      }
      for (int64_t r = 0; r < N; ++r) {
        const T* __restrict__ hr = h + r * M + c0;
        const T* __restrict__ gr = g + r * M + c0;
        T* __restrict__ zr = gz + r * M + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const A hv = ld(hr[c]);
          const A xc = hv - mean[c0 + c];
          const A gu = act_grad<POST>(ld(gr[c]), xc * scale[c] + shift[c], sq);
          const T v = T(act_grad<PRE>(scale[c] * (gu - k1[c] - xc * k2[c]), hv, sp));
          zr[c] = v;
          sz[c] += ld(v);
        }
      }
      if (db)
        for (int64_t c = 0; c < nc; ++c) db[c0 + c] = sz[c];
    }
  });
}

template <typename P, typename F>
void dispatch(const P& p, F&& f) {
  dispatch_dtype(p.dtype, [&](auto t) {
    dispatch_act(p.act_pre, [&](auto pre) {
      dispatch_act(p.act_post, [&](auto post) { f(t, pre, post); });
    });
  });
}

}  // namespace

void cpu_linear_bn_fwd(const LinBnFwdParams& p) {
  dispatch(p, [&](auto t, auto pre, auto post) { fwd_t<decltype(pre)::value, decltype(post)::value, decltype(t)>(p); });
}

void cpu_linear_bn_bwd(const LinBnBwdParams& p) {
  dispatch(p, [&](auto t, auto pre, auto post) { bwd_t<decltype(pre)::value, decltype(post)::value, decltype(t)>(p); });
}

}  // namespace fastgan
