// kernel_checks.h — the argument validation of kernels that exist on both devices, written once.
//
// Plain C++ (no CUDA, no napi): included by the CPU kernels in cpp/ and by the CUDA kernels in cuda/,
// so that a CPU and a CUDA kernel of the same name accept exactly the same inputs and fail with the
// same message (docs/design.md, "One definition per op"). Each parse_* reads the positional arguments of one
// kernel (see KERNELS.md), checks them, and returns the parsed arguments. Device-only limits (CUDA
// grid sizes, 32-bit indices) stay in the device file, after the call. Data-dependent checks (index
// ranges) read device memory and stay in the device file too, with the same message.
// This file holds the model-level kernels (AdamW, layer/RMS norm, softmax, cross-entropy, matmul,
// attention); kernel_checks_tensor.h holds the tensor-level ones (maps, random, index ops, rope, reduce).
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

}  // namespace llava
