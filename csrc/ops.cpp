// fastgan._C operator registration: schemas (TORCH_LIBRARY), argument checks, dtype mapping and
// the CPU / CUDA implementations that hand raw pointers to the kernels (cpu_kernels.cpp, *.cu).
// This is the only translation unit that includes torch headers; it uses per-operator ATen
// headers to keep its compile time short. Fake (meta) implementations and autograd formulas are
// registered from Python (fastgan/_cuda_backend.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mm.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <optional>
#include <string>
#include <tuple>

#ifdef FASTGAN_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "bias_act.h"
#include "bn_act.h"
#include "gan_loss.h"

namespace fastgan {

namespace {
std::atomic<bool> g_poison{false};
}  // namespace

void set_debug_poison(bool on) { g_poison.store(on); }
bool debug_poison() { return g_poison.load(std::memory_order_relaxed); }

namespace {

using at::Tensor;

// Every output / workspace allocation goes through here (see set_debug_poison).
Tensor fresh(Tensor t) {
  if (debug_poison() && t.numel() > 0) {
    if (at::isFloatingType(t.scalar_type()))
      t.fill_(std::numeric_limits<double>::quiet_NaN());
    else
      t.fill_(255);
  }
  return t;
}
using OptTensor = std::optional<Tensor>;

enum class Dev { kCPU, kCUDA };

// Numbers, shapes and dtypes are formatted here (std::to_string) rather than streamed into the
// error message: with torch 2.11 (gcc 13 build, H100 machine) streaming an integer into a
// TORCH_CHECK message segfaulted the process; strings were fine.
std::string shape_str(c10::IntArrayRef s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ", ";
    r += std::to_string(s[i]);
  }
  return r + "]";
}
std::string dtype_str(at::ScalarType st) { return std::string(c10::toString(st)); }
std::string dev_str(const Tensor& t) { return t.device().str(); }

DType dtype_of(const Tensor& t, const char* op, const char* arg) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::kFloat32;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kDouble: return DType::kFloat64;
    default:
      TORCH_CHECK(false, "fastgan::", op, ": ", arg, " must be float32, bfloat16 or float64, got ",
                  dtype_str(t.scalar_type()));
  }
  return DType::kFloat32;
}

at::ScalarType acc_type(at::ScalarType st) { return st == at::kDouble ? at::kDouble : at::kFloat; }

ActMode act_of(std::optional<double> slope, const char* op) {
  if (!slope.has_value()) return ActMode::kIdentity;
  TORCH_CHECK(std::isfinite(*slope) && *slope >= 0.0, "fastgan::", op,
              ": slope must be None (identity), 0 (ReLU) or a finite positive LeakyReLU slope, got ",
              std::to_string(*slope), " (the backward reads the activation mask off the output's sign)");
  return *slope == 0.0 ? ActMode::kReLU : ActMode::kLeaky;
}

void check_device(const Tensor& t, const Tensor& ref, const char* op, const char* arg) {
  TORCH_CHECK(t.device() == ref.device(), "fastgan::", op, ": ", arg, " is on ", dev_str(t),
              " but the input is on ", dev_str(ref));
}

void check_channel_vec(const OptTensor& t, int64_t C, const Tensor& ref, const char* op,
                       const char* arg) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->dim() == 1 && t->size(0) == C, "fastgan::", op, ": ", arg, " must be 1-D with ", std::to_string(C),
              " elements (the channel count), got shape ", shape_str(t->sizes()));
  check_device(*t, ref, op, arg);
  TORCH_CHECK(at::isFloatingType(t->scalar_type()), "fastgan::", op, ": ", arg,
              " must be a floating-point tensor, got ", dtype_str(t->scalar_type()));
}

// A per-channel vector in the accumulation dtype, contiguous (a no-op when it already is).
Tensor acc_vec(const Tensor& t, at::ScalarType acc) { return t.to(acc).contiguous(); }

// The output layout for x: torch's empty_like rule (x's strides when x is dense and
// non-overlapping, else contiguous / channels_last). Fake implementations use empty_like too.
// Returns x itself when it already has that layout, else a copy of x in it.
Tensor in_layout_of(const Tensor& x, const Tensor& out) {
  if (x.strides() == out.strides()) return x;
  Tensor c = at::empty_like(out);
  c.copy_(x);
  return c;
}

// The [outer, C, inner] view of a dense tensor whose channel dimension is `dim`.
Geom geom_of(const Tensor& t, int64_t dim) {
  Geom g;
  const int64_t n = t.numel();
  const int64_t C = t.dim() > 0 ? t.size(dim) : 1;
  if (C <= 1 || n == 0) {
    g.outer = 1;
    g.C = std::max<int64_t>(C, 1);
    g.inner = n;
    if (g.C > 1) g.inner = 0;
    return g;
  }
  g.C = C;
  g.inner = t.stride(dim);
  g.outer = n / (C * g.inner);
  TORCH_INTERNAL_ASSERT(g.outer * g.C * g.inner == n, "fastgan: tensor is not dense");
  return g;
}

#ifdef FASTGAN_WITH_CUDA
cudaStream_t stream_for(const Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
void check_launch(int err, const char* op) {
  TORCH_CHECK(err == 0, "fastgan::", op, ": CUDA kernel launch failed: ", cuda_error_string(err));
}
#endif

// ------------------------------------------------------------------------------------------
// bias_act
// ------------------------------------------------------------------------------------------

void run_bias_act(const BiasActParams& p, const Tensor& ref, Dev dev) {
  if (dev == Dev::kCPU) {
    cpu_bias_act_fwd(p);
    return;
  }
#ifdef FASTGAN_WITH_CUDA
  check_launch(launch_bias_act_fwd(p, stream_for(ref)), "bias_act");
#else
  (void)ref;
  TORCH_CHECK(false, "fastgan::bias_act: this build of fastgan._C has no CUDA kernels");
#endif
}

Tensor bias_act_impl(const Tensor& x, const OptTensor& bias, std::optional<double> slope, int64_t dim,
                     Dev dev) {
  const char* op = "bias_act";
  const DType dt = dtype_of(x, op, "x");
  const ActMode act = act_of(slope, op);
  if (bias.has_value()) {
    TORCH_CHECK(x.dim() >= 1, "fastgan::bias_act: x must have at least one dimension when a bias is given");
    dim = c10::maybe_wrap_dim(dim, x.dim());
    check_channel_vec(bias, x.size(dim), x, op, "bias");
  }
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(x.device());
#endif
  Tensor y = fresh(at::empty_like(x));
  Tensor xd = in_layout_of(x, y);
  Tensor b;
  BiasActParams p;
  p.dtype = dt;
  p.x = xd.data_ptr();
  p.y = y.data_ptr();
  if (bias.has_value()) {
    b = acc_vec(*bias, acc_type(x.scalar_type()));
    p.bias = b.data_ptr();
    p.g = geom_of(y, dim);
  } else {
    p.g = Geom{1, 1, y.numel()};
  }
  p.act = act;
  p.slope = slope.value_or(0.0);
  run_bias_act(p, x, dev);
  return y;
}

std::tuple<Tensor, Tensor> bias_act_backward_impl(const Tensor& grad, const Tensor& y,
                                                   std::optional<double> slope, int64_t dim,
                                                   bool need_db, Dev dev) {
  const char* op = "bias_act_backward";
  const DType dt = dtype_of(y, op, "y");
  TORCH_CHECK(grad.sizes() == y.sizes(), "fastgan::bias_act_backward: grad has shape ", shape_str(grad.sizes()),
              " but y has shape ", shape_str(y.sizes()));
  TORCH_CHECK(grad.scalar_type() == y.scalar_type(), "fastgan::bias_act_backward: grad is ",
              dtype_str(grad.scalar_type()), " but y is ", dtype_str(y.scalar_type()));
  check_device(grad, y, op, "grad");
  const ActMode act = act_of(slope, op);
  int64_t C = 1;
  if (need_db) {
    TORCH_CHECK(y.dim() >= 1, "fastgan::bias_act_backward: y must have at least one dimension for db");
    dim = c10::maybe_wrap_dim(dim, y.dim());
    C = y.size(dim);
  }
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(y.device());
#endif
  Tensor gx = fresh(at::empty_like(y));
  Tensor yd = in_layout_of(y, gx);
  Tensor gd = in_layout_of(grad, gx);
  Tensor db = fresh(at::empty({need_db ? C : 0}, y.options()));
  BiasActBwdParams p;
  p.dtype = dt;
  p.grad = gd.data_ptr();
  p.y = yd.data_ptr();
  p.gx = gx.data_ptr();
  p.db = need_db ? db.data_ptr() : nullptr;
  p.g = need_db ? geom_of(gx, dim) : Geom{1, 1, gx.numel()};
  p.act = act;
  p.slope = slope.value_or(0.0);
  if (need_db && gx.numel() == 0) {
    db.zero_();
    return {gx, db};
  }
  if (dev == Dev::kCPU) {
    cpu_bias_act_bwd(p);
  } else {
#ifdef FASTGAN_WITH_CUDA
    Tensor ws = fresh(at::empty({static_cast<int64_t>(bias_act_bwd_workspace_bytes(p))}, y.options().dtype(at::kByte)));
    p.workspace = ws.data_ptr();
    check_launch(launch_bias_act_bwd(p, stream_for(y)), op);
#else
    TORCH_CHECK(false, "fastgan::bias_act_backward: this build of fastgan._C has no CUDA kernels");
#endif
  }
  return {gx, db};
}

// ------------------------------------------------------------------------------------------
// linear_act: cuBLAS / MKL matmul, then the fused bias + activation epilogue in place.
// ------------------------------------------------------------------------------------------

Tensor linear_act_impl(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                       std::optional<double> slope, Dev dev) {
  const char* op = "linear_act";
  const DType dt = dtype_of(x, op, "x");
  const ActMode act = act_of(slope, op);
  TORCH_CHECK(x.dim() >= 1, "fastgan::linear_act: x must have at least one dimension");
  TORCH_CHECK(weight.dim() == 2, "fastgan::linear_act: weight must be 2-D [out, in], got shape ",
              shape_str(weight.sizes()));
  const int64_t K = x.size(-1), M = weight.size(0);
  TORCH_CHECK(weight.size(1) == K, "fastgan::linear_act: x has ", std::to_string(K), " features but weight is ",
              shape_str(weight.sizes()));
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), "fastgan::linear_act: weight is ",
              dtype_str(weight.scalar_type()), " but x is ", dtype_str(x.scalar_type()));
  check_device(weight, x, op, "weight");
  check_channel_vec(bias, M, x, op, "bias");
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(x.device());
#endif
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = M;
  const Tensor x2 = x.reshape({-1, K});
  // float32 / float64: plain matmul, then bias + activation in one fused pass over the output.
  // bfloat16: the bias is added inside the GEMM (fp32 accumulator, one rounding), so that the
  // activation mask (the sign of the rounded output) is the sign of the exact pre-activation;
  // adding it after a rounded bf16 product would flip the mask of near-zero elements.
  const bool bias_in_gemm = bias.has_value() && (act == ActMode::kIdentity || dt == DType::kBFloat16);
  Tensor y = bias_in_gemm ? at::addmm(bias->to(x.scalar_type()), x2, weight.t()) : at::mm(x2, weight.t());
  if (act != ActMode::kIdentity) {
    Tensor b;
    BiasActParams p;
    p.dtype = dt;
    p.x = y.data_ptr();
    p.y = y.data_ptr();
    if (bias.has_value() && !bias_in_gemm) {
      b = acc_vec(*bias, acc_type(x.scalar_type()));
      p.bias = b.data_ptr();
    }
    p.g = Geom{y.size(0), M, 1};
    p.act = act;
    p.slope = *slope;
    run_bias_act(p, y, dev);
  }
  return x.dim() == 2 ? y : y.view(out_shape);
}

// ------------------------------------------------------------------------------------------
// bn_act
// ------------------------------------------------------------------------------------------

void check_bn_input(const Tensor& x, const char* op) {
  TORCH_CHECK(x.dim() >= 2, "fastgan::", op, ": x must be [N, C] or [N, C, ...], got shape ", shape_str(x.sizes()));
}

// Runs `launch` on a float/double copy of a running statistic when the caller's tensor is not
// contiguous or not in the accumulation dtype, then copies the result back (all on device).
struct StatArg {
  Tensor orig, work;
  void prepare(const OptTensor& t, at::ScalarType acc) {
    if (!t.has_value()) return;
    orig = *t;
    work = (orig.scalar_type() == acc && orig.is_contiguous()) ? orig : orig.to(acc).contiguous();
  }
  void* ptr() { return work.defined() ? work.data_ptr() : nullptr; }
  void finish() {
    if (work.defined() && !work.is_same(orig)) orig.copy_(work);
  }
};

std::tuple<Tensor, Tensor> bn_stats_impl(const Tensor& x, const OptTensor& running_mean,
                                         const OptTensor& running_var, bool training, double momentum,
                                         double eps, Dev dev) {
  const char* op = "bn_stats";
  check_bn_input(x, op);
  const DType dt = dtype_of(x, op, "x");
  const int64_t C = x.size(1);
  check_channel_vec(running_mean, C, x, op, "running_mean");
  check_channel_vec(running_var, C, x, op, "running_var");
  TORCH_CHECK(eps >= 0.0, "fastgan::bn_stats: eps must be >= 0, got ", std::to_string(eps));
  if (training) {
    const int64_t count = C > 0 ? x.numel() / C : 0;
    TORCH_CHECK(count > 1, "fastgan::bn_stats: expected more than 1 value per channel when training, "
                "got input of shape ", shape_str(x.sizes()));
  } else {
    TORCH_CHECK(running_mean.has_value() && running_var.has_value(),
                "fastgan::bn_stats: running_mean and running_var are required when training=False");
  }
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(x.device());
#endif
  const at::ScalarType acc = acc_type(x.scalar_type());
  const Tensor xd = x.is_non_overlapping_and_dense() ? x : x.contiguous();
  Tensor mean = fresh(at::empty({C}, x.options().dtype(acc)));
  Tensor invstd = fresh(at::empty({C}, x.options().dtype(acc)));
  StatArg rm, rv;
  rm.prepare(running_mean, acc);
  rv.prepare(running_var, acc);
  BnStatsParams p;
  p.dtype = dt;
  p.x = xd.data_ptr();
  p.g = geom_of(xd, 1);
  p.mean = mean.data_ptr();
  p.invstd = invstd.data_ptr();
  p.running_mean = rm.ptr();
  p.running_var = rv.ptr();
  p.training = training;
  p.momentum = momentum;
  p.eps = eps;
  if (dev == Dev::kCPU) {
    cpu_bn_stats(p);
  } else {
#ifdef FASTGAN_WITH_CUDA
    Tensor ws = fresh(at::empty({static_cast<int64_t>(bn_stats_workspace_bytes(p))}, x.options().dtype(at::kByte)));
    p.workspace = ws.data_ptr();
    check_launch(launch_bn_stats(p, stream_for(x)), op);
#else
    TORCH_CHECK(false, "fastgan::bn_stats: this build of fastgan._C has no CUDA kernels");
#endif
  }
  if (training) {
    rm.finish();
    rv.finish();
  }
  return {mean, invstd};
}

void check_stat_vec(const Tensor& t, int64_t C, const Tensor& x, const char* op, const char* arg) {
  TORCH_CHECK(t.dim() == 1 && t.size(0) == C, "fastgan::", op, ": ", arg, " must be 1-D with ", std::to_string(C),
              " elements, got shape ", shape_str(t.sizes()));
  TORCH_CHECK(t.scalar_type() == acc_type(x.scalar_type()), "fastgan::", op, ": ", arg, " must be ",
              dtype_str(acc_type(x.scalar_type())), " (as returned by fastgan::bn_stats), got ", dtype_str(t.scalar_type()));
  check_device(t, x, op, arg);
}

// What bn_act and its backward both take: checked arguments and the per-channel vectors in the
// accumulation dtype, contiguous.
struct BnApplyArgs {
  DType dt;
  ActMode act;
  int64_t C;
  Tensor w, b, mean, invstd;  // w, b undefined when absent
};

BnApplyArgs check_bn_apply_args(const Tensor& x, const OptTensor& weight, const OptTensor& bias,
                                const Tensor& mean, const Tensor& invstd,
                                std::optional<double> slope, const char* op) {
  check_bn_input(x, op);
  BnApplyArgs a;
  a.dt = dtype_of(x, op, "x");
  a.act = act_of(slope, op);
  a.C = x.size(1);
  check_channel_vec(weight, a.C, x, op, "weight");
  check_channel_vec(bias, a.C, x, op, "bias");
  check_stat_vec(mean, a.C, x, op, "mean");
  check_stat_vec(invstd, a.C, x, op, "invstd");
  const at::ScalarType acc = acc_type(x.scalar_type());
  if (weight.has_value()) a.w = acc_vec(*weight, acc);
  if (bias.has_value()) a.b = acc_vec(*bias, acc);
  a.mean = mean.contiguous();
  a.invstd = invstd.contiguous();
  return a;
}

Tensor bn_act_impl(const Tensor& x, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                   const Tensor& invstd, std::optional<double> slope, bool training, Dev dev) {
  (void)training;  // only the backward uses it
  const char* op = "bn_act";
  const BnApplyArgs a = check_bn_apply_args(x, weight, bias, mean, invstd, slope, op);
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(x.device());
#endif
  Tensor y = fresh(at::empty_like(x));
  Tensor xd = in_layout_of(x, y);
  BnApplyParams p;
  p.dtype = a.dt;
  p.x = xd.data_ptr();
  p.y = y.data_ptr();
  p.weight = a.w.defined() ? a.w.data_ptr() : nullptr;
  p.bias = a.b.defined() ? a.b.data_ptr() : nullptr;
  p.mean = a.mean.data_ptr();
  p.invstd = a.invstd.data_ptr();
  p.g = geom_of(y, 1);
  p.act = a.act;
  p.slope = slope.value_or(0.0);
  if (dev == Dev::kCPU) {
    cpu_bn_apply(p);
  } else {
#ifdef FASTGAN_WITH_CUDA
    check_launch(launch_bn_apply(p, stream_for(x)), op);
#else
    TORCH_CHECK(false, "fastgan::bn_act: this build of fastgan._C has no CUDA kernels");
#endif
  }
  return y;
}

std::tuple<Tensor, Tensor, Tensor> bn_act_backward_impl(const Tensor& grad, const Tensor& x,
                                                        const OptTensor& weight, const OptTensor& bias,
                                                        const Tensor& mean, const Tensor& invstd,
                                                        std::optional<double> slope, bool training,
                                                        Dev dev) {
  const char* op = "bn_act_backward";
  const BnApplyArgs a = check_bn_apply_args(x, weight, bias, mean, invstd, slope, op);
  TORCH_CHECK(grad.sizes() == x.sizes(), "fastgan::bn_act_backward: grad has shape ", shape_str(grad.sizes()),
              " but x has shape ", shape_str(x.sizes()));
  TORCH_CHECK(grad.scalar_type() == x.scalar_type(), "fastgan::bn_act_backward: grad is ",
              dtype_str(grad.scalar_type()), " but x is ", dtype_str(x.scalar_type()));
  check_device(grad, x, op, "grad");
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(x.device());
#endif
  const at::ScalarType acc = acc_type(x.scalar_type());
  Tensor dx = fresh(at::empty_like(x));
  Tensor xd = in_layout_of(x, dx);
  Tensor gd = in_layout_of(grad, dx);
  Tensor dw = fresh(at::empty({a.C}, x.options().dtype(acc)));
  Tensor dbias = fresh(at::empty({a.C}, x.options().dtype(acc)));
  BnBwdParams p;
  p.dtype = a.dt;
  p.grad = gd.data_ptr();
  p.x = xd.data_ptr();
  p.weight = a.w.defined() ? a.w.data_ptr() : nullptr;
  p.bias = a.b.defined() ? a.b.data_ptr() : nullptr;
  p.mean = a.mean.data_ptr();
  p.invstd = a.invstd.data_ptr();
  p.dx = dx.data_ptr();
  p.dweight = dw.data_ptr();
  p.dbias = dbias.data_ptr();
  p.g = geom_of(dx, 1);
  p.act = a.act;
  p.slope = slope.value_or(0.0);
  p.training = training;
  if (x.numel() == 0) {
    dw.zero_();
    dbias.zero_();
    return {dx, dw, dbias};
  }
  if (dev == Dev::kCPU) {
    cpu_bn_bwd(p);
  } else {
#ifdef FASTGAN_WITH_CUDA
    Tensor ws = fresh(at::empty({static_cast<int64_t>(bn_bwd_workspace_bytes(p))}, x.options().dtype(at::kByte)));
    p.workspace = ws.data_ptr();
    check_launch(launch_bn_bwd(p, stream_for(x)), op);
#else
    TORCH_CHECK(false, "fastgan::bn_act_backward: this build of fastgan._C has no CUDA kernels");
#endif
  }
  return {dx, dw, dbias};
}

// ------------------------------------------------------------------------------------------
// gan_loss
// ------------------------------------------------------------------------------------------

std::tuple<Tensor, Tensor> gan_loss_impl(const Tensor& logits, const OptTensor& target,
                                         double target_value, c10::string_view kind,
                                         c10::string_view reduction, Dev dev) {
  const char* op = "gan_loss";
  const DType dt = dtype_of(logits, op, "logits");
  GanLossKind k;
  if (kind == "bce") k = GanLossKind::kBCE;
  else if (kind == "lsgan") k = GanLossKind::kLSGAN;
  else TORCH_CHECK(false, "fastgan::gan_loss: unknown kind '", std::string(kind), "' (use 'bce' or 'lsgan')");
  bool mean;
  if (reduction == "mean") mean = true;
  else if (reduction == "sum") mean = false;
  else TORCH_CHECK(false, "fastgan::gan_loss: unknown reduction '", std::string(reduction), "' (use 'mean' or 'sum')");
#ifdef FASTGAN_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (dev == Dev::kCUDA) guard.emplace(logits.device());
#endif
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
  p.scale = mean ? (p.n > 0 ? 1.0 / static_cast<double>(p.n) : std::numeric_limits<double>::quiet_NaN()) : 1.0;
  p.loss = loss.data_ptr();
  p.grad = grad.data_ptr();
  if (dev == Dev::kCPU) {
    cpu_gan_loss(p);
  } else {
#ifdef FASTGAN_WITH_CUDA
    check_launch(launch_gan_loss(p, stream_for(logits)), op);
#else
    TORCH_CHECK(false, "fastgan::gan_loss: this build of fastgan._C has no CUDA kernels");
#endif
  }
  return {loss, grad};
}

// ------------------------------------------------------------------------------------------
// Per-device entry points
// ------------------------------------------------------------------------------------------

template <Dev D>
struct Impl {
  static Tensor bias_act(const Tensor& x, const OptTensor& bias, std::optional<double> slope, int64_t dim) {
    return bias_act_impl(x, bias, slope, dim, D);
  }
  static std::tuple<Tensor, Tensor> bias_act_backward(const Tensor& grad, const Tensor& y,
                                                      std::optional<double> slope, int64_t dim, bool need_db) {
    return bias_act_backward_impl(grad, y, slope, dim, need_db, D);
  }
  static Tensor linear_act(const Tensor& x, const Tensor& weight, const OptTensor& bias,
                           std::optional<double> slope) {
    return linear_act_impl(x, weight, bias, slope, D);
  }
  static std::tuple<Tensor, Tensor> bn_stats(const Tensor& x, const OptTensor& running_mean,
                                             const OptTensor& running_var, bool training, double momentum,
                                             double eps) {
    return bn_stats_impl(x, running_mean, running_var, training, momentum, eps, D);
  }
  static Tensor bn_act(const Tensor& x, const OptTensor& weight, const OptTensor& bias, const Tensor& mean,
                       const Tensor& invstd, std::optional<double> slope, bool training) {
    return bn_act_impl(x, weight, bias, mean, invstd, slope, training, D);
  }
  static std::tuple<Tensor, Tensor, Tensor> bn_act_backward(const Tensor& grad, const Tensor& x,
                                                            const OptTensor& weight, const OptTensor& bias,
                                                            const Tensor& mean, const Tensor& invstd,
                                                            std::optional<double> slope, bool training) {
    return bn_act_backward_impl(grad, x, weight, bias, mean, invstd, slope, training, D);
  }
  static std::tuple<Tensor, Tensor> gan_loss(const Tensor& logits, const OptTensor& target,
                                             double target_value, c10::string_view kind,
                                             c10::string_view reduction) {
    return gan_loss_impl(logits, target, target_value, kind, reduction, D);
  }
};

}  // namespace
}  // namespace fastgan

TORCH_LIBRARY(fastgan, m) {
  const std::vector<at::Tag> tags{at::Tag::pt2_compliant_tag};
  m.def("bias_act(Tensor x, Tensor? bias, float? slope, int dim) -> Tensor", tags);
  m.def("bias_act_backward(Tensor grad, Tensor y, float? slope, int dim, bool need_db) -> (Tensor, Tensor)", tags);
  m.def("linear_act(Tensor x, Tensor weight, Tensor? bias, float? slope) -> Tensor", tags);
  m.def("bn_stats(Tensor x, Tensor(a!)? running_mean, Tensor(b!)? running_var, bool training, "
        "float momentum, float eps) -> (Tensor, Tensor)", tags);
  m.def("bn_act(Tensor x, Tensor? weight, Tensor? bias, Tensor mean, Tensor invstd, float? slope, "
        "bool training) -> Tensor", tags);
  m.def("bn_act_backward(Tensor grad, Tensor x, Tensor? weight, Tensor? bias, Tensor mean, "
        "Tensor invstd, float? slope, bool training) -> (Tensor, Tensor, Tensor)", tags);
  m.def("gan_loss(Tensor logits, Tensor? target, float target_value, str kind, str reduction) "
        "-> (Tensor, Tensor)", tags);
}

#define FASTGAN_IMPLS(D)                                                 \
  m.impl("bias_act", &fastgan::Impl<D>::bias_act);                       \
  m.impl("bias_act_backward", &fastgan::Impl<D>::bias_act_backward);     \
  m.impl("linear_act", &fastgan::Impl<D>::linear_act);                   \
  m.impl("bn_stats", &fastgan::Impl<D>::bn_stats);                       \
  m.impl("bn_act", &fastgan::Impl<D>::bn_act);                           \
  m.impl("bn_act_backward", &fastgan::Impl<D>::bn_act_backward);         \
  m.impl("gan_loss", &fastgan::Impl<D>::gan_loss);

TORCH_LIBRARY_IMPL(fastgan, CPU, m) { FASTGAN_IMPLS(fastgan::Dev::kCPU) }

#ifdef FASTGAN_WITH_CUDA
TORCH_LIBRARY_IMPL(fastgan, CUDA, m) { FASTGAN_IMPLS(fastgan::Dev::kCUDA) }
#endif
