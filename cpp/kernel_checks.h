// kernel_checks.h — the argument validation of kernels that exist on both devices, written once.
//
// Plain C++ (no CUDA, no napi): included by the CPU kernels in cpp/ and by the CUDA kernels in cuda/,
// so that a CPU and a CUDA kernel of the same name accept exactly the same inputs and fail with the
// same message (docs/design.md, "One definition per op"). Each parse_* reads the positional arguments of one
// kernel (see KERNELS.md), checks them, and returns the parsed arguments. Device-only limits (CUDA
// grid sizes, 32-bit indices) stay in the device file, after the call. Data-dependent checks (index
// ranges) read device memory and stay in the device file too, with the same message.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "kernel_api.h"
#include "kernel_ops.h"

namespace llava {
namespace checks {

// Every output against every input (null entries skipped) and the outputs against each other.
inline void no_overlaps(const KernelArgs& a, std::initializer_list<const TensorArg*> outs,
                        std::initializer_list<const TensorArg*> ins, const char* what) {
  std::vector<const TensorArg*> o(outs);
  for (size_t i = 0; i < o.size(); i++) {
    if (!o[i]) continue;
    for (const TensorArg* in : ins)
      if (in) a.check_no_overlap(*o[i], *in, what);
    for (size_t j = i + 1; j < o.size(); j++)
      if (o[j]) a.check_no_overlap(*o[i], *o[j], what);
  }
}

// float32 or float64, contiguous, n elements (per-row statistics: mean, rstd, lse).
inline void check_stats(const KernelArgs& a, const TensorArg& t, int64_t n, const char* what) {
  if (t.dtype != DType::F32 && t.dtype != DType::F64)
    a.fail(std::string(what) + " must be float32 or float64, got " + dtype_name(t.dtype));
  a.check_contiguous(t, what);
  a.check_numel(t, n, what);
}

}  // namespace checks

// ------------------------------------------------------------------ adamw
struct AdamwArgs {
  const TensorArg *p, *g, *m, *v, *master;  // master may be null
  double lr, b1, b2, eps, wd;
  int64_t step, n;
};

// adamw(param, grad, m, v, master?, lr, beta1, beta2, eps, weight_decay, step)
inline AdamwArgs parse_adamw(const KernelArgs& a) {
  AdamwArgs r;
  r.p = &a.tensor(0), r.g = &a.tensor(1), r.m = &a.tensor(2), r.v = &a.tensor(3);
  r.master = a.optional_tensor(4);
  r.lr = a.num(5), r.b1 = a.num(6), r.b2 = a.num(7), r.eps = a.num(8), r.wd = a.num(9);
  r.step = a.int_(10);
  if (r.step < 1) a.fail("step must be >= 1");
  if (!(r.lr >= 0) || !(r.b1 >= 0 && r.b1 < 1) || !(r.b2 >= 0 && r.b2 < 1) || !(r.eps > 0) || !(r.wd >= 0))
    a.fail("invalid hyperparameters");
  a.check_float(*r.p, "param");
  a.check_same_dtype(*r.g, *r.p, "grad");
  r.n = r.p->numel();
  for (const TensorArg* t : {r.p, r.g, r.m, r.v}) {
    a.check_contiguous(*t, "operand");
    a.check_numel(*t, r.n, "operand");
  }
  // Moments are f32, or f64 for an f64 parameter.
  DType sd = r.p->dtype == DType::F64 ? DType::F64 : DType::F32;
  a.check_dtype(*r.m, sd, "exp_avg");
  a.check_dtype(*r.v, sd, "exp_avg_sq");
  if (r.master) {
    a.check_dtype(*r.master, DType::F32, "master weights");
    a.check_contiguous(*r.master, "master weights");
    a.check_numel(*r.master, r.n, "master weights");
  }
  return r;
}

// ------------------------------------------------------------------ layer_norm / rms_norm
namespace checks {
// x: float, contiguous, >= 1 dim; returns N (rows) and C (the normalised last dim).
inline void norm_rows(const KernelArgs& a, const TensorArg& x, int64_t& N, int64_t& C) {
  a.check_float(x, "x");
  a.check_contiguous(x, "x");
  if (x.ndim < 1) a.fail("x must have at least one dim (the normalised one)");
  C = x.shape[x.ndim - 1];
  N = 1;
  for (int d = 0; d < x.ndim - 1; d++) N *= x.shape[d];
  if (C <= 0 && N > 0) a.fail("the normalised (last) dim of x is empty");
}
inline void norm_like(const KernelArgs& a, const TensorArg& t, const TensorArg& x, const char* what) {
  a.check_same_dtype(t, x, what);
  a.check_contiguous(t, what);
  bool ok = t.ndim == x.ndim;
  for (int d = 0; ok && d < x.ndim; d++) ok = t.shape[d] == x.shape[d];
  if (!ok) a.fail(std::string(what) + " must have the shape of x");
}
inline void norm_param(const KernelArgs& a, const TensorArg* p, const TensorArg& x, int64_t C, const char* what) {
  if (!p) return;
  a.check_same_dtype(*p, x, what);
  a.check_contiguous(*p, what);
  a.check_shape(*p, {C}, what);
}
inline void norm_grad_param(const KernelArgs& a, const TensorArg* p, int64_t C, const char* what) {
  if (!p) return;
  a.check_float(*p, what);
  a.check_contiguous(*p, what);
  a.check_shape(*p, {C}, what);
}
inline double norm_eps(const KernelArgs& a, size_t i) {
  double eps = a.num(i);
  if (!std::isfinite(eps) || eps < 0) a.fail("eps must be a finite number >= 0");
  return eps;
}
}  // namespace checks

struct NormFwdArgs {
  const TensorArg *y, *mean, *rstd, *x, *w, *b;  // mean and b null for rms_norm; w, b null when absent
  double eps;
  int64_t N, C;
};
struct NormBwdArgs {
  const TensorArg *dx, *dw, *db, *dy, *x, *w, *mean, *rstd;  // dw, db, w optional; mean, db null for rms_norm
  int64_t N, C;
};

// layer_norm_fwd(y, mean, rstd, x, w?, b?, eps)
inline NormFwdArgs parse_layer_norm_fwd(const KernelArgs& a) {
  NormFwdArgs r;
  r.y = &a.tensor(0), r.mean = &a.tensor(1), r.rstd = &a.tensor(2), r.x = &a.tensor(3);
  r.w = a.optional_tensor(4), r.b = a.optional_tensor(5);
  r.eps = checks::norm_eps(a, 6);
  checks::norm_rows(a, *r.x, r.N, r.C);
  checks::norm_like(a, *r.y, *r.x, "y");
  checks::check_stats(a, *r.mean, r.N, "mean");
  checks::check_stats(a, *r.rstd, r.N, "rstd");
  checks::norm_param(a, r.w, *r.x, r.C, "w");
  checks::norm_param(a, r.b, *r.x, r.C, "b");
  checks::no_overlaps(a, {r.y, r.mean, r.rstd}, {r.x, r.w, r.b}, "norm");
  return r;
}

// layer_norm_bwd(dx, dw?, db?, dy, x, w?, mean, rstd)
inline NormBwdArgs parse_layer_norm_bwd(const KernelArgs& a) {
  NormBwdArgs r;
  r.dx = &a.tensor(0), r.dw = a.optional_tensor(1), r.db = a.optional_tensor(2);
  r.dy = &a.tensor(3), r.x = &a.tensor(4), r.w = a.optional_tensor(5);
  r.mean = &a.tensor(6), r.rstd = &a.tensor(7);
  checks::norm_rows(a, *r.x, r.N, r.C);
  checks::norm_like(a, *r.dx, *r.x, "dx");
  checks::norm_like(a, *r.dy, *r.x, "dy");
  checks::norm_param(a, r.w, *r.x, r.C, "w");
  if (r.dw && !r.w) a.fail("dw was asked for but w is absent");
  checks::norm_grad_param(a, r.dw, r.C, "dw");
  checks::norm_grad_param(a, r.db, r.C, "db");
  checks::check_stats(a, *r.mean, r.N, "mean");
  checks::check_stats(a, *r.rstd, r.N, "rstd");
  checks::no_overlaps(a, {r.dx, r.dw, r.db}, {r.dy, r.x, r.w, r.mean, r.rstd}, "norm");
  return r;
}

// rms_norm_fwd(y, rstd, x, w?, eps)
inline NormFwdArgs parse_rms_norm_fwd(const KernelArgs& a) {
  NormFwdArgs r;
  r.y = &a.tensor(0), r.mean = nullptr, r.rstd = &a.tensor(1), r.x = &a.tensor(2);
  r.w = a.optional_tensor(3), r.b = nullptr;
  r.eps = checks::norm_eps(a, 4);
  checks::norm_rows(a, *r.x, r.N, r.C);
  checks::norm_like(a, *r.y, *r.x, "y");
  checks::check_stats(a, *r.rstd, r.N, "rstd");
  checks::norm_param(a, r.w, *r.x, r.C, "w");
  checks::no_overlaps(a, {r.y, r.rstd}, {r.x, r.w}, "norm");
  return r;
}

// rms_norm_bwd(dx, dw?, dy, x, w?, rstd)
inline NormBwdArgs parse_rms_norm_bwd(const KernelArgs& a) {
  NormBwdArgs r;
  r.dx = &a.tensor(0), r.dw = a.optional_tensor(1), r.db = nullptr;
  r.dy = &a.tensor(2), r.x = &a.tensor(3), r.w = a.optional_tensor(4);
  r.mean = nullptr, r.rstd = &a.tensor(5);
  checks::norm_rows(a, *r.x, r.N, r.C);
  checks::norm_like(a, *r.dx, *r.x, "dx");
  checks::norm_like(a, *r.dy, *r.x, "dy");
  checks::norm_param(a, r.w, *r.x, r.C, "w");
  if (r.dw && !r.w) a.fail("dw was asked for but w is absent");
  checks::norm_grad_param(a, r.dw, r.C, "dw");
  checks::check_stats(a, *r.rstd, r.N, "rstd");
  checks::no_overlaps(a, {r.dx, r.dw}, {r.dy, r.x, r.w, r.rstd}, "norm");
  return r;
}

// ------------------------------------------------------------------ softmax / cross-entropy
struct SoftmaxFwdArgs {
  const TensorArg *y, *x;
  bool log;
  int64_t N, C;  // rows, last dim
};
struct SoftmaxBwdArgs {
  const TensorArg *dx, *y, *dy;
  bool log;
  int64_t N, C;
};

// softmax_fwd(y, x, log)
inline SoftmaxFwdArgs parse_softmax_fwd(const KernelArgs& a) {
  SoftmaxFwdArgs r;
  r.y = &a.tensor(0), r.x = &a.tensor(1);
  r.log = a.flag(2);
  const TensorArg &y = *r.y, &x = *r.x;
  a.check_float(x, "input");
  a.check_same_dtype(y, x, "output");
  a.check_contiguous(x, "input");
  a.check_contiguous(y, "output");
  if (x.ndim < 1) a.fail("input needs at least one dim");
  a.check_numel(y, x.numel(), "output");
  a.check_no_overlap(y, x, "softmax");
  r.C = x.shape[x.ndim - 1];
  r.N = r.C ? x.numel() / r.C : 0;
  return r;
}

// softmax_bwd(dx, y, dy, log)
inline SoftmaxBwdArgs parse_softmax_bwd(const KernelArgs& a) {
  SoftmaxBwdArgs r;
  r.dx = &a.tensor(0), r.y = &a.tensor(1), r.dy = &a.tensor(2);
  r.log = a.flag(3);
  const TensorArg &dx = *r.dx, &y = *r.y, &dy = *r.dy;
  a.check_float(y, "y");
  a.check_same_dtype(dx, y, "dx");
  a.check_same_dtype(dy, y, "dy");
  for (const TensorArg* t : {&dx, &y, &dy}) a.check_contiguous(*t, "operand");
  a.check_numel(dx, y.numel(), "dx");
  a.check_numel(dy, y.numel(), "dy");
  if (y.ndim < 1) a.fail("input needs at least one dim");
  a.check_no_overlap(dx, y, "softmax_bwd");
  a.check_no_overlap(dx, dy, "softmax_bwd");
  r.C = y.shape[y.ndim - 1];
  r.N = r.C ? y.numel() / r.C : 0;
  return r;
}

namespace checks {
inline void ce_common(const KernelArgs& a, const TensorArg& logits, const TensorArg& target, const TensorArg& lse) {
  a.check_float(logits, "logits");
  a.check_ndim(logits, 2, "logits");
  a.check_contiguous(logits, "logits");
  if (target.dtype != DType::I64 && target.dtype != DType::I32) a.fail("target must be int64 or int32");
  a.check_contiguous(target, "target");
  a.check_numel(target, logits.shape[0], "target");
  a.check_contiguous(lse, "lse");
  a.check_numel(lse, logits.shape[0], "lse");
  if (lse.dtype != DType::F32 && lse.dtype != DType::F64) a.fail("lse must be float32 or float64");
}
}  // namespace checks

struct CrossEntropyFwdArgs {
  const TensorArg *loss, *lse, *logits, *target;
  int64_t ignore, N, V;
};
struct CrossEntropyBwdArgs {
  const TensorArg *dlogits, *logits, *target, *lse, *dloss;
  int64_t ignore, N, V;
};

// The range check of every target (data-dependent, so left to the device) fails with this message
// in cross_entropy_fwd; cross_entropy_bwd says "target out of range".
inline std::string ce_target_range_message(int64_t t, int64_t V) {
  return "target " + std::to_string(t) + " out of range [0, " + std::to_string(V) + ")";
}

// cross_entropy_fwd(loss[N], lse[N], logits[N,V], target[N], ignore_index)
inline CrossEntropyFwdArgs parse_cross_entropy_fwd(const KernelArgs& a) {
  CrossEntropyFwdArgs r;
  r.loss = &a.tensor(0), r.lse = &a.tensor(1), r.logits = &a.tensor(2), r.target = &a.tensor(3);
  r.ignore = a.int_(4);
  const TensorArg &loss = *r.loss, &lse = *r.lse, &logits = *r.logits, &target = *r.target;
  checks::ce_common(a, logits, target, lse);
  a.check_contiguous(loss, "loss");
  a.check_numel(loss, logits.shape[0], "loss");
  a.check_same_dtype(loss, lse, "loss");
  for (const TensorArg* o : {&loss, &lse}) {
    a.check_no_overlap(*o, logits, "cross_entropy_fwd");
    a.check_no_overlap(*o, target, "cross_entropy_fwd");
  }
  a.check_no_overlap(loss, lse, "cross_entropy_fwd");
  r.N = logits.shape[0], r.V = logits.shape[1];
  if (r.N > 0 && r.V == 0) a.fail("cannot take the cross-entropy over zero classes");
  return r;
}

// cross_entropy_bwd(dlogits[N,V], logits, target, lse, dloss[N], ignore_index)
inline CrossEntropyBwdArgs parse_cross_entropy_bwd(const KernelArgs& a) {
  CrossEntropyBwdArgs r;
  r.dlogits = &a.tensor(0), r.logits = &a.tensor(1), r.target = &a.tensor(2), r.lse = &a.tensor(3);
  r.dloss = &a.tensor(4);
  r.ignore = a.int_(5);
  const TensorArg &dl = *r.dlogits, &logits = *r.logits, &target = *r.target, &lse = *r.lse, &dloss = *r.dloss;
  checks::ce_common(a, logits, target, lse);
  a.check_same_dtype(dl, logits, "dlogits");
  a.check_contiguous(dl, "dlogits");
  a.check_numel(dl, logits.numel(), "dlogits");
  a.check_contiguous(dloss, "dloss");
  a.check_numel(dloss, logits.shape[0], "dloss");
  a.check_same_dtype(dloss, lse, "dloss");
  for (const TensorArg* in : {&logits, &target, &lse, &dloss}) a.check_no_overlap(dl, *in, "cross_entropy_bwd");
  r.N = logits.shape[0], r.V = logits.shape[1];
  return r;
}

// ------------------------------------------------------------------ matmul
enum class MatmulEpilogue : int { None = 0, Gelu = 1, GeluTanh = 2 };

struct MatmulArgs {
  const TensorArg *out, *a, *b, *bias;  // bias may be null
  bool has_beta;
  double beta;  // 0 when absent
  MatmulEpilogue epilogue;
  int64_t Bt, M, N, K;
};

// matmul(out[Bt,M,N], a[Bt,M,K], b[Bt,K,N], bias[N]?, beta?, epilogue?); `dev` is the device of the
// kernel (every tensor must be on it).
inline MatmulArgs parse_matmul(const KernelArgs& args, Device dev) {
  MatmulArgs r;
  r.out = &args.tensor(0), r.a = &args.tensor(1), r.b = &args.tensor(2);
  r.bias = args.optional_tensor(3);
  r.has_beta = !args.is_none(4);
  r.beta = r.has_beta ? args.num(4) : 0.0;
  r.epilogue = MatmulEpilogue::None;
  if (args.size() > 5 && !args.is_none(5)) {
    const std::string& e = args.str(5);
    if (e == "gelu")
      r.epilogue = MatmulEpilogue::Gelu;
    else if (e == "gelu_tanh")
      r.epilogue = MatmulEpilogue::GeluTanh;
    else if (e != "none")
      args.fail("unknown epilogue '" + e + "' (expected none, gelu or gelu_tanh)");
  }
  const TensorArg &out = *r.out, &a = *r.a, &b = *r.b;
  const TensorArg* bias = r.bias;
  args.check_ndim(out, 3, "out");
  args.check_ndim(a, 3, "a");
  args.check_ndim(b, 3, "b");
  args.check_float(out, "out");
  args.check_same_dtype(out, a, "out and a");
  args.check_same_dtype(out, b, "out and b");
  for (const TensorArg* t : {&out, &a, &b, bias})
    if (t && t->device() != dev)
      args.fail(dev == Device::CPU ? "all tensors must be on the CPU" : "all tensors must be on the CUDA device");
  const int64_t Bt = a.shape[0], M = a.shape[1], K = a.shape[2], N = b.shape[2];
  if (b.shape[0] != Bt)
    args.fail("batch sizes differ: a has " + std::to_string(Bt) + ", b has " + std::to_string(b.shape[0]));
  if (b.shape[1] != K)
    args.fail("inner dimensions differ: a is [.., " + std::to_string(M) + ", " + std::to_string(K) + "], b is [.., " +
              std::to_string(b.shape[1]) + ", " + std::to_string(N) + "]");
  args.check_shape(out, {Bt, M, N}, "out");
  args.check_contiguous(out, "out");
  args.check_no_overlap(out, a, "a");
  args.check_no_overlap(out, b, "b");
  if (bias) {
    args.check_same_dtype(out, *bias, "out and bias");
    args.check_shape(*bias, {N}, "bias");
    args.check_no_overlap(out, *bias, "bias");
  }
  if (!std::isfinite(r.beta)) args.fail("beta must be finite");
  r.Bt = Bt, r.M = M, r.N = N, r.K = K;
  return r;
}

// ------------------------------------------------------------------ attention
struct AttnInputs {
  const TensorArg *q, *k, *v, *mask;  // mask may be null
  int64_t B, H, Hkv, T, S, D;
  bool causal;
  double scale;
};

namespace checks {
inline const char* device_words(Device dev) { return dev == Device::CPU ? "the CPU" : "the CUDA device"; }

// 4-D with unit stride in the last (head) dim, on `dev`.
inline void attn_head_view(const KernelArgs& a, const TensorArg& t, const char* what, Device dev) {
  a.check_ndim(t, 4, what);
  if (t.shape[3] > 1 && t.strides[3] != 1) a.fail(std::string(what) + " must have unit stride in its last (head) dim");
  if (t.device() != dev) a.fail(std::string(what) + " must be on " + device_words(dev));
}
}  // namespace checks

// Checks q/k/v/mask/causal/scale at the given positions (q at iq, k and v after it).
inline AttnInputs parse_attention_inputs(const KernelArgs& a, size_t iq, size_t imask, size_t icausal, Device dev) {
  const TensorArg &q = a.tensor(iq), &k = a.tensor(iq + 1), &v = a.tensor(iq + 2);
  AttnInputs p;
  p.mask = a.optional_tensor(imask);
  p.causal = a.flag(icausal);
  p.scale = a.num(icausal + 1);
  if (!std::isfinite(p.scale)) a.fail("scale must be finite");
  a.check_float(q, "q");
  a.check_same_dtype(k, q, "k");
  a.check_same_dtype(v, q, "v");
  checks::attn_head_view(a, q, "q", dev);
  checks::attn_head_view(a, k, "k", dev);
  checks::attn_head_view(a, v, "v", dev);
  p.B = q.shape[0], p.H = q.shape[1], p.T = q.shape[2], p.D = q.shape[3];
  p.Hkv = k.shape[1], p.S = k.shape[2];
  if (p.D <= 0) a.fail("head dim D must be positive");
  if (p.D > (1 << 20)) a.fail("head dim D is too large");
  a.check_shape(k, {p.B, p.Hkv, p.S, p.D}, "k");
  a.check_shape(v, {p.B, p.Hkv, p.S, p.D}, "v");
  if (p.Hkv <= 0) a.fail("k/v must have at least one head");
  if (p.H % p.Hkv != 0)
    a.fail("query heads (" + std::to_string(p.H) + ") must be a multiple of kv heads (" + std::to_string(p.Hkv) + ")");
  if (p.mask) {
    a.check_dtype(*p.mask, DType::BOOL, "mask");
    a.check_shape(*p.mask, {p.B, p.H, p.T, p.S}, "mask");
    if (p.mask->device() != dev) a.fail(std::string("mask must be on ") + checks::device_words(dev));
  }
  p.q = &q, p.k = &k, p.v = &v;
  return p;
}

// lse[B, H, T]: float32 or float64, contiguous, on `dev`.
inline void check_attention_lse(const KernelArgs& a, const TensorArg& lse, int64_t B, int64_t H, int64_t T,
                                Device dev) {
  if (lse.dtype != DType::F32 && lse.dtype != DType::F64)
    a.fail(std::string("lse must be float32 or float64, got ") + dtype_name(lse.dtype));
  a.check_contiguous(lse, "lse");
  a.check_shape(lse, {B, H, T}, "lse");
  if (lse.device() != dev) a.fail(std::string("lse must be on ") + checks::device_words(dev));
}

// ------------------------------------------------------------------ elementwise
// Every operand of a map is a view with the output's shape (broadcast inputs arrive expanded).
namespace checks {
inline void same_shape(const KernelArgs& a, const TensorArg& out, const TensorArg& x, const char* what) {
  if (out.ndim != x.ndim) a.fail(std::string(what) + " rank differs from the output's");
  for (int d = 0; d < out.ndim; d++)
    if (out.shape[d] != x.shape[d]) a.fail(std::string(what) + " shape differs from the output's (broadcast first)");
}
inline UnaryOp unary_op_arg(const KernelArgs& a, size_t i) {
  const std::string& s = a.str(i);
  int op = lookup_unary(s);
  if (op < 0) a.fail("unknown unary op '" + s + "'");
  return UnaryOp(op);
}
}  // namespace checks

struct CopyArgs {
  const TensorArg *out, *x;
};
// copy(out, x): any dtypes, any strides, no overlap.
inline CopyArgs parse_copy(const KernelArgs& a) {
  CopyArgs r{&a.tensor(0), &a.tensor(1)};
  checks::same_shape(a, *r.out, *r.x, "input");
  a.check_no_overlap(*r.out, *r.x, "copy");
  return r;
}

struct FillArgs {
  const TensorArg* out;
  double value;
};
// fill(out, value)
inline FillArgs parse_fill(const KernelArgs& a) {
  FillArgs r;
  r.out = &a.tensor(0);
  r.value = a.num(1);
  return r;
}

struct ArangeArgs {
  const TensorArg* out;
  double start, step;
};
// arange(out, start, step): out contiguous.
inline ArangeArgs parse_arange(const KernelArgs& a) {
  ArangeArgs r;
  r.out = &a.tensor(0);
  a.check_contiguous(*r.out, "out");
  r.start = a.num(1), r.step = a.num(2);
  return r;
}

struct UnaryArgs {
  const TensorArg *out, *x;
  UnaryOp op;
  double p;  // the exponent of pow (0 when absent)
};
// unary(out, x, op, p): neg/abs/sign/square also take integer dtypes (not bool).
inline UnaryArgs parse_unary(const KernelArgs& a) {
  UnaryArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1);
  r.op = checks::unary_op_arg(a, 2);
  r.p = a.is_none(3) ? 0.0 : a.num(3);
  checks::same_shape(a, *r.out, *r.x, "input");
  a.check_same_dtype(*r.out, *r.x, "unary");
  if (!is_float(r.x->dtype)) {
    if (r.op != UnaryOp::Neg && r.op != UnaryOp::Abs && r.op != UnaryOp::Sign && r.op != UnaryOp::Square)
      a.fail("op needs a floating dtype");
    if (r.x->dtype == DType::BOOL) a.fail("op not defined for bool");
  }
  return r;
}

struct UnaryBwdArgs {
  const TensorArg *dx, *x, *dy;
  UnaryOp op;
  double p;
};
// unary_bwd(dx, x, dy, op, p): one float dtype.
inline UnaryBwdArgs parse_unary_bwd(const KernelArgs& a) {
  UnaryBwdArgs r;
  r.dx = &a.tensor(0), r.x = &a.tensor(1), r.dy = &a.tensor(2);
  r.op = checks::unary_op_arg(a, 3);
  r.p = a.is_none(4) ? 0.0 : a.num(4);
  checks::same_shape(a, *r.dx, *r.x, "x");
  checks::same_shape(a, *r.dx, *r.dy, "dy");
  a.check_float(*r.x, "x");
  a.check_same_dtype(*r.dx, *r.x, "x");
  a.check_same_dtype(*r.dx, *r.dy, "dy");
  return r;
}

struct SwigluArgs {
  const TensorArg *out, *gate, *up;
};
// swiglu(out, gate, up): out = silu(gate) * up; one float dtype, one shape (inputs any strides).
inline SwigluArgs parse_swiglu(const KernelArgs& a) {
  SwigluArgs r{&a.tensor(0), &a.tensor(1), &a.tensor(2)};
  checks::same_shape(a, *r.out, *r.gate, "gate");
  checks::same_shape(a, *r.out, *r.up, "up");
  a.check_float(*r.gate, "gate");
  a.check_same_dtype(*r.out, *r.gate, "gate");
  a.check_same_dtype(*r.out, *r.up, "up");
  a.check_no_overlap(*r.out, *r.gate, "gate");
  a.check_no_overlap(*r.out, *r.up, "up");
  return r;
}

struct SwigluBwdArgs {
  const TensorArg *dgate, *dup, *gate, *up, *dy;
};
// swiglu_bwd(dgate, dup, gate, up, dy): both gradients in one pass; outputs contiguous, inputs any
// strides, one float dtype and shape.
inline SwigluBwdArgs parse_swiglu_bwd(const KernelArgs& a) {
  SwigluBwdArgs r{&a.tensor(0), &a.tensor(1), &a.tensor(2), &a.tensor(3), &a.tensor(4)};
  const TensorArg* all[5] = {r.dgate, r.dup, r.gate, r.up, r.dy};
  const char* names[5] = {"dgate", "dup", "gate", "up", "dy"};
  a.check_float(*r.gate, "gate");
  for (int k = 1; k < 5; k++) {
    checks::same_shape(a, *r.dgate, *all[k], names[k]);
    a.check_same_dtype(*r.dgate, *all[k], names[k]);
  }
  a.check_contiguous(*r.dgate, "dgate");
  a.check_contiguous(*r.dup, "dup");
  for (int o = 0; o < 2; o++)
    for (int k = o + 1; k < 5; k++) a.check_no_overlap(*all[o], *all[k], names[k]);
  return r;
}

struct BinaryArgs {
  const TensorArg *out, *x, *y;
  BinaryOp op;
  bool cmp;  // a comparison: out is bool
};
// binary(out, a, b, op): a and b of one dtype; comparisons write bool; no arithmetic on bool.
inline BinaryArgs parse_binary(const KernelArgs& a) {
  BinaryArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1), r.y = &a.tensor(2);
  const std::string& s = a.str(3);
  int op = lookup_binary(s);
  if (op < 0) a.fail("unknown binary op '" + s + "'");
  r.op = BinaryOp(op);
  r.cmp = is_compare(r.op);
  const TensorArg &out = *r.out, &x = *r.x, &y = *r.y;
  checks::same_shape(a, out, x, "first input");
  checks::same_shape(a, out, y, "second input");
  a.check_same_dtype(x, y, "inputs");
  if (r.cmp)
    a.check_dtype(out, DType::BOOL, "comparison output");
  else
    a.check_same_dtype(out, x, "output");
  if (!is_float(x.dtype) && (r.op == BinaryOp::Div || r.op == BinaryOp::Pow))
    a.fail("integer inputs must be promoted to a float dtype first");
  if (!r.cmp && x.dtype == DType::BOOL) a.fail("arithmetic on bool tensors is not supported");
  return r;
}

struct WhereArgs {
  const TensorArg *out, *cond, *x, *y;
};
// where(out, cond, x, y): cond bool, x and y of out's dtype.
inline WhereArgs parse_where(const KernelArgs& a) {
  WhereArgs r{&a.tensor(0), &a.tensor(1), &a.tensor(2), &a.tensor(3)};
  a.check_dtype(*r.cond, DType::BOOL, "condition");
  checks::same_shape(a, *r.out, *r.cond, "condition");
  checks::same_shape(a, *r.out, *r.x, "first input");
  checks::same_shape(a, *r.out, *r.y, "second input");
  a.check_same_dtype(*r.out, *r.x, "first input");
  a.check_same_dtype(*r.out, *r.y, "second input");
  return r;
}

struct RandomArgs {
  const TensorArg* out;
  RandomKind kind;
  uint64_t seed, offset;
  double p;  // bernoulli probability (0.5 when absent)
};
// random(out, kind, seed, offset, p): out contiguous.
inline RandomArgs parse_random(const KernelArgs& a) {
  RandomArgs r;
  r.out = &a.tensor(0);
  a.check_contiguous(*r.out, "out");
  const std::string& kind = a.str(1);
  r.seed = (uint64_t)a.int_(2);
  r.offset = (uint64_t)a.int_(3);
  r.p = a.is_none(4) ? 0.5 : a.num(4);
  int k = lookup_random(kind);
  if (k < 0) a.fail("unknown distribution '" + kind + "'");
  r.kind = RandomKind(k);
  return r;
}

// ------------------------------------------------------------------ index ops
// Index kernels see contiguous tensors as [outer, n, inner] around `dim`. The range check of the
// index values reads the index tensor, so each device passes its own: a callable
// range_check(a, idx, limit) that calls checks::index_range_fail for the first value outside
// [0, limit). It runs at the same point of every parse on both devices.
namespace checks {
inline int64_t norm_dim(const KernelArgs& a, int64_t dim, int ndim) {
  if (dim < 0) dim += ndim;
  if (dim < 0 || dim >= ndim) a.fail("dim out of range");
  return dim;
}
inline void split_dims(const TensorArg& t, int64_t dim, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int d = 0; d < dim; d++) outer *= t.shape[d];
  for (int d = (int)dim + 1; d < t.ndim; d++) inner *= t.shape[d];
}
// int64 or int32, contiguous.
inline void index_tensor(const KernelArgs& a, const TensorArg& idx) {
  if (idx.dtype != DType::I64 && idx.dtype != DType::I32) a.fail("index must be int64 or int32");
  a.check_contiguous(idx, "index");
}
[[noreturn]] inline void index_range_fail(const KernelArgs& a, int64_t v, int64_t limit) {
  a.fail("index " + std::to_string(v) + " out of range for dimension of size " + std::to_string(limit));
}
inline void gather_shapes(const KernelArgs& a, const TensorArg& x, const TensorArg& idx, int64_t dim) {
  if (idx.ndim != x.ndim) a.fail("index must have the input's rank");
  for (int d = 0; d < x.ndim; d++)
    if (d != dim && idx.shape[d] > x.shape[d]) a.fail("index is larger than the input outside dim");
}
}  // namespace checks

// index_select: out[o, j, i] = x[o, idx[j], i]; index_add: out[o, idx[j], i] += src[o, j, i].
struct IndexRowsArgs {
  const TensorArg *out, *src, *idx;  // src: x of index_select, src of index_add
  int64_t dim, outer, n, m, inner;   // n = extent of the indexed tensor at dim, m = idx.numel()
};

// index_select(out, x, idx, dim)
template <typename RangeCheck> inline IndexRowsArgs parse_index_select(const KernelArgs& a, RangeCheck&& range_check) {
  IndexRowsArgs r;
  r.out = &a.tensor(0), r.src = &a.tensor(1), r.idx = &a.tensor(2);
  const TensorArg &out = *r.out, &x = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), x.ndim);
  a.check_contiguous(x, "input");
  a.check_contiguous(out, "output");
  a.check_same_dtype(out, x, "output");
  if (idx.ndim != 1) a.fail("index must be 1-D");
  checks::index_tensor(a, idx);
  range_check(a, idx, x.shape[r.dim]);
  checks::split_dims(x, r.dim, r.outer, r.inner);
  r.n = x.shape[r.dim], r.m = idx.numel();
  a.check_numel(out, r.outer * r.m * r.inner, "output");
  a.check_no_overlap(out, x, "index_select");
  return r;
}

// index_add(out, idx, src, dim): float, out and src contiguous.
template <typename RangeCheck> inline IndexRowsArgs parse_index_add(const KernelArgs& a, RangeCheck&& range_check) {
  IndexRowsArgs r;
  r.out = &a.tensor(0), r.idx = &a.tensor(1), r.src = &a.tensor(2);
  const TensorArg &out = *r.out, &src = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), out.ndim);
  a.check_contiguous(out, "output");
  a.check_contiguous(src, "source");
  a.check_same_dtype(out, src, "source");
  a.check_float(out, "output");
  a.check_no_overlap(out, src, "index_add");
  if (idx.ndim != 1) a.fail("index must be 1-D");
  checks::index_tensor(a, idx);
  range_check(a, idx, out.shape[r.dim]);
  checks::split_dims(out, r.dim, r.outer, r.inner);
  r.n = out.shape[r.dim], r.m = idx.numel();
  a.check_numel(src, r.outer * r.m * r.inner, "source");
  a.check_no_overlap(out, idx, "index_add");
  return r;
}

// gather: out[...j...] = x[...idx[...j...]...]; scatter_add: out[...idx[...j...]...] += src[...j...].
// All contiguous; idx has the rank of the indexed tensor and the shape of out (gather) / src (scatter).
struct GatherArgs {
  const TensorArg *out, *src, *idx;  // src: x of gather, src of scatter_add
  int64_t dim;
};

// gather(out, x, idx, dim)
template <typename RangeCheck> inline GatherArgs parse_gather(const KernelArgs& a, RangeCheck&& range_check) {
  GatherArgs r;
  r.out = &a.tensor(0), r.src = &a.tensor(1), r.idx = &a.tensor(2);
  const TensorArg &out = *r.out, &x = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), x.ndim);
  for (const TensorArg* t : {&out, &x, &idx}) a.check_contiguous(*t, "operand");
  a.check_same_dtype(out, x, "output");
  checks::gather_shapes(a, x, idx, r.dim);
  a.check_numel(out, idx.numel(), "output");
  checks::index_tensor(a, idx);
  range_check(a, idx, x.shape[r.dim]);
  a.check_no_overlap(out, x, "gather");
  a.check_no_overlap(out, idx, "gather");
  return r;
}

// scatter_add(out, idx, src, dim): float.
template <typename RangeCheck> inline GatherArgs parse_scatter_add(const KernelArgs& a, RangeCheck&& range_check) {
  GatherArgs r;
  r.out = &a.tensor(0), r.idx = &a.tensor(1), r.src = &a.tensor(2);
  const TensorArg &out = *r.out, &src = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), out.ndim);
  for (const TensorArg* t : {&out, &idx, &src}) a.check_contiguous(*t, "operand");
  a.check_same_dtype(out, src, "source");
  a.check_float(out, "output");
  checks::gather_shapes(a, out, idx, r.dim);
  a.check_numel(src, idx.numel(), "source");
  checks::index_tensor(a, idx);
  range_check(a, idx, out.shape[r.dim]);
  a.check_no_overlap(out, src, "scatter_add");
  a.check_no_overlap(out, idx, "scatter_add");
  return r;
}

struct RopeArgs {
  const TensorArg *out, *x, *cos, *sin;
  int64_t B, H, T, D;
  bool per_batch;  // cos/sin are [B, T, D] with B > 1 (else one [1, T, D] table for every batch)
};
// rope(out, x[B,H,T,D], cos[B',T,D], sin[B',T,D]): x float, may be strided with unit last stride;
// out, cos and sin contiguous.
inline RopeArgs parse_rope(const KernelArgs& a) {
  RopeArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1), r.cos = &a.tensor(2), r.sin = &a.tensor(3);
  const TensorArg &out = *r.out, &x = *r.x, &cs = *r.cos, &sn = *r.sin;
  a.check_ndim(x, 4, "x");
  a.check_contiguous(out, "output");
  a.check_numel(out, x.numel(), "output");
  a.check_float(x, "x");
  a.check_same_dtype(out, x, "output");
  a.check_same_dtype(cs, x, "cos");
  a.check_same_dtype(sn, x, "sin");
  a.check_contiguous(cs, "cos");
  a.check_contiguous(sn, "sin");
  r.B = x.shape[0], r.H = x.shape[1], r.T = x.shape[2], r.D = x.shape[3];
  if (r.D % 2) a.fail("head dim must be even");
  if (x.strides[3] != 1) a.fail("x must have unit stride in its last dim");
  a.check_ndim(cs, 3, "cos");
  a.check_ndim(sn, 3, "sin");
  if ((cs.shape[0] != 1 && cs.shape[0] != r.B) || cs.shape[1] != r.T || cs.shape[2] != r.D)
    a.fail("cos must be [1 or B, T, D]");
  for (int d = 0; d < 3; d++)
    if (sn.shape[d] != cs.shape[d]) a.fail("sin and cos shapes differ");
  for (const TensorArg* in : {&x, &cs, &sn}) a.check_no_overlap(out, *in, "rope");
  r.per_batch = cs.shape[0] == r.B && r.B > 1;
  return r;
}

// ------------------------------------------------------------------ reduce
struct ReduceArgs {
  const TensorArg *out, *x;
  ReduceOp op;
  int64_t n;  // R, the reduced extent
  double correction;
  bool arg_op;
  // Only when n > 0 (n == 0 reduces nothing: out is filled with the identity, 1 for prod, else 0).
  int64_t outer, inner, outer_inner;
};

// reduce(out, x, op, R, correction?, inner?): x and out contiguous, x = [outer, R, inner].
inline ReduceArgs parse_reduce(const KernelArgs& a) {
  ReduceArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1);
  const TensorArg &out = *r.out, &x = *r.x;
  const std::string& s = a.str(2);
  int op = lookup_reduce(s);
  if (op < 0) a.fail("unknown reduction '" + s + "'");
  r.op = ReduceOp(op);
  const int64_t n = r.n = a.int_(3);
  r.correction = a.is_none(4) ? 1.0 : a.num(4);
  a.check_contiguous(x, "input");
  a.check_contiguous(out, "output");
  if (n <= 0 && r.op != ReduceOp::Sum && r.op != ReduceOp::Prod) a.fail("cannot reduce over an empty dimension");
  const int64_t xn = x.numel();
  if (n < 0 || (n > 0 && xn % n != 0)) a.fail("reduced size does not divide the input");
  r.arg_op = r.op == ReduceOp::Argmax || r.op == ReduceOp::Argmin;
  if (r.arg_op)
    a.check_dtype(out, DType::I64, "output");
  else
    a.check_same_dtype(out, x, "output");
  if (!is_float(x.dtype) && !r.arg_op && r.op != ReduceOp::Sum && r.op != ReduceOp::Max && r.op != ReduceOp::Min &&
      r.op != ReduceOp::Prod)
    a.fail("integer input needs a floating dtype for this reduction");
  r.outer_inner = out.numel();
  r.outer = r.inner = 0;
  if (n == 0) return r;
  // Compare by division (xn % n == 0 here): outer_inner * n can wrap (out [2^11] with R = 2^53
  // gives 2^64 == 0, which once let an empty input pass and the loop read far outside it).
  if (r.outer_inner != xn / n) a.fail("output size does not match input size / R");
  // inner is the trailing extent after the reduced dim: recover it from the output's last dims.
  // It is 0 only for an empty output (x [3, 0] reduced over dim 0).
  r.inner = a.is_none(5) ? 1 : a.int_(5);
  if (r.inner < 0 || (r.inner == 0 ? r.outer_inner != 0 : r.outer_inner % r.inner != 0)) a.fail("bad inner extent");
  r.outer = r.inner == 0 ? 0 : r.outer_inner / r.inner;
  if (x.dtype == DType::BOOL) a.fail("cannot reduce bool tensors (cast first)");
  a.check_no_overlap(out, x, "reduce");
  return r;
}

}  // namespace llava
