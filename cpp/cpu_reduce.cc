// cpu_reduce.cc — reductions, softmax and fused softmax cross-entropy on the CPU (CUDA twin:
// cuda/reduce.cu).
//
// reduce: x is contiguous and seen as [outer, R, inner]; one output per (outer, inner). TypeScript
// permutes several reduced dims together first. Sums accumulate in f64 for f64 and f32 otherwise,
// with a pairwise-ish blocked order (8 partial sums) so long f32 rows keep their precision.
// softmax / cross-entropy work on rows of a contiguous [N, C]; cross-entropy never writes the
// probabilities: forward keeps only the row's logsumexp, backward recomputes exp(x - lse).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "cpu_common.h"
#include "kernel_checks.h"
#include "kernel_checks_tensor.h"

namespace llava {
namespace {

using R = ReduceOp;  // op names and numbering: kernel_ops.h

// Reduces n values at p[0], p[stride], ... with op; `arg` receives the index for argmax/argmin.
template <typename T, typename F>
F reduce_line(R op, const T* p, int64_t n, int64_t stride, double correction, int64_t* arg) {
  if (op == R::Sum || op == R::Mean || op == R::Var) {
    F s = 0;
    if constexpr (std::is_floating_point_v<F>) {
      // 8 partial sums in the compute type over blocks of 128 elements (vectorisable), blocks added
      // in double: a long float32 row keeps its precision (2^28 ones sum to 2^28).
      double total = 0;
      for (int64_t b0 = 0; b0 < n; b0 += 128) {
        int64_t b1 = std::min<int64_t>(n, b0 + 128);
        F acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i = b0;
        for (; i + 8 <= b1; i += 8)
          for (int k = 0; k < 8; k++) acc[k] += load(p + (i + k) * stride);
        for (; i < b1; i++) acc[0] += load(p + i * stride);
        total += double(((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
      }
      s = F(total);
    } else {
      for (int64_t i = 0; i < n; i++) s += load(p + i * stride);  // integers: exact
    }
    if (op == R::Sum) return s;
    F mean = s / F(n);
    if (op == R::Mean) return mean;
    double ss = 0;
    for (int64_t j = 0; j < n; j++) {
      double d = double(load(p + j * stride)) - double(mean);
      ss += d * d;
    }
    return F(ss / (double(n) - correction));
  }
  if (op == R::Prod) {
    F acc = 1;
    for (int64_t i = 0; i < n; i++) acc *= load(p + i * stride);
    return acc;
  }
  if (op == R::Lse) {
    F m = -std::numeric_limits<F>::infinity();
    for (int64_t i = 0; i < n; i++) m = std::max(m, F(load(p + i * stride)));
    if (std::isinf(m)) return m;
    F s = 0;
    for (int64_t i = 0; i < n; i++) s += std::exp(F(load(p + i * stride)) - m);
    return m + std::log(s);
  }
  // max / min / argmax / argmin: NaN wins, first index on ties (as PyTorch)
  bool want_max = op == R::Max || op == R::Argmax;
  F best = load(p);
  int64_t bi = 0;
  for (int64_t i = 1; i < n && best == best; i++) {
    F v = load(p + i * stride);
    if (v != v || (want_max ? v > best : v < best)) {
      best = v;
      bi = i;
    }
  }
  *arg = bi;
  return best;
}

// reduce(out, x, op, R, correction?, inner?)
void reduce_kernel(const KernelArgs& a) {
  const ReduceArgs A = parse_reduce(a);
  const TensorArg &out = *A.out, &x = *A.x;
  const R op = A.op;
  const int64_t n = A.n, outer_inner = A.outer_inner;
  const double correction = A.correction;
  const bool arg_op = A.arg_op;
  if (n == 0) {
    LLAVA_DISPATCH_ALL(a, out.dtype, T, {
      T* po = out.data<T>();
      for (int64_t i = 0; i < outer_inner; i++) store(po + i, op == R::Prod ? 1.0 : 0.0);
    });
    return;
  }
  if (outer_inner == 0) return;  // e.g. x [0, 5] reduced over its last dim: nothing to write
  const int64_t inner = A.inner;
  LLAVA_DISPATCH_ALL(a, x.dtype, T, {
    if constexpr (!std::is_same_v<T, bool>) {
      using F = acc_t<T>;
      const T* px = x.data<T>();
      parallel_for(outer_inner, std::max<int64_t>(1, 4096 / n), [&](int64_t b, int64_t e) {
        for (int64_t oi = b; oi < e; oi++) {
          int64_t o = oi / inner, i = oi % inner;
          int64_t arg = 0;
          F r = reduce_line<T, F>(op, px + o * n * inner + i, n, inner, correction, &arg);
          if (arg_op)
            out.data<int64_t>()[oi] = arg;
          else
            store(out.data<T>() + oi, r);
        }
      });
    }  // bool: refused by parse_reduce
  });
}

// float32 (and for cross-entropy bf16) rows take the vectorised exp (cpu_common.h); other dtypes fall
// back to the scalar loops.
template <typename T, typename F> inline bool softmax_row_fast(const T*, T*, int64_t, F) { return false; }
inline bool softmax_row_fast(const float* px, float* py, int64_t C, float m) {
  if (std::isinf(m) && m < 0) {  // every entry -inf: a NaN row, as PyTorch
    for (int64_t i = 0; i < C; i++) py[i] = std::numeric_limits<float>::quiet_NaN();
    return true;
  }
  float inv = float(1.0 / exp_shift_sum(px, m, py, C));
  for (int64_t i = 0; i < C; i++) py[i] *= inv;
  return true;
}
template <typename T, typename F> inline bool exp_sum_fast(const T*, F, int64_t, F&) { return false; }
inline bool exp_sum_fast(const float* px, float m, int64_t n, float& s) {
  s = float(exp_shift_sum(px, m, nullptr, n));
  return true;
}
inline bool exp_sum_fast(const bf16* px, float m, int64_t n, float& s) {
  s = float(exp_shift_sum(px, m, nullptr, n));
  return true;
}
template <typename T, typename F> inline bool ce_grad_row_fast(const T*, T*, int64_t, int64_t, F, F) { return false; }

// Row helpers: generic loops, with AVX2 overloads for f32 and bf16 below (overloads, not `if
// constexpr`, because the callers are lambdas inside the dtype dispatch).
template <typename T, typename F> inline F row_max_of(const T* px, int64_t C, F) {
  F m = -std::numeric_limits<F>::infinity();
  for (int64_t i = 0; i < C; i++) m = std::max(m, F(load(px + i)));
  return m;
}
template <typename T, typename F> inline bool log_softmax_row_fast(const T*, T*, int64_t, F) { return false; }
template <typename T> inline bool softmax_bwd_row_fast(const T*, const T*, T*, int64_t, bool) { return false; }

#if LLAVA_AVX2
// AVX2 rows for f32 and bf16 (the AVX2 copy of this file): bf16 is widened in registers and rounded
// once on store, with f32 accumulation; no extra pass through memory but one f32 scratch row for
// the exponentials of a bf16 softmax.
template <typename T> inline float row_max(const T* p, int64_t n) {
  __m256 m0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(vload(p + i), m0);  // a NaN element is skipped, as std::max skips it
    m1 = _mm256_max_ps(vload(p + i + 8), m1);
  }
  for (; i + 8 <= n; i += 8) m0 = _mm256_max_ps(vload(p + i), m0);
  float m = hmax(_mm256_max_ps(m0, m1));
  for (; i < n; i++) m = std::max(m, float(load(p + i)));
  return m;
}
inline float row_max_of(const float* p, int64_t n, float) { return row_max(p, n); }
inline float row_max_of(const bf16* p, int64_t n, float) { return row_max(p, n); }
inline bool log_softmax_row_fast(const float* px, float* py, int64_t C, float m) {
  if (std::isinf(m) && m < 0) return false;
  const float lse = m + float(std::log(exp_shift_sum(px, m, nullptr, C)));
  for (int64_t i = 0; i < C; i++) py[i] = px[i] - lse;
  return true;
}
thread_local std::vector<float> tl_row;

inline bool softmax_row_fast(const bf16* px, bf16* py, int64_t C, float m) {
  if (std::isinf(m) && m < 0) {
    for (int64_t i = 0; i < C; i++) store(py + i, std::numeric_limits<float>::quiet_NaN());
    return true;
  }
  if (int64_t(tl_row.size()) < C) tl_row.resize(C);
  float* buf = tl_row.data();
  int64_t i = 0;
  for (; i + 8 <= C; i += 8) _mm256_storeu_ps(buf + i, vload(px + i));
  for (; i < C; i++) buf[i] = load(px + i);
  const __m256 inv = _mm256_set1_ps(float(1.0 / exp_shift_sum(buf, m, buf, C)));
  for (i = 0; i + 8 <= C; i += 8) vstore(py + i, _mm256_mul_ps(_mm256_loadu_ps(buf + i), inv));
  for (; i < C; i++) store(py + i, buf[i] * inv[0]);
  return true;
}

// softmax backward of one row: dx = y (dy - sum(dy y)), or for log-softmax dx = dy - exp(y) sum(dy).
template <typename T> inline void softmax_bwd_row(const T* py, const T* pd, T* po, int64_t C, bool logsm) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  int64_t i = 0;
  for (; i + 16 <= C; i += 16) {
    __m256 d0 = vload(pd + i), d1 = vload(pd + i + 8);
    a0 = logsm ? _mm256_add_ps(a0, d0) : _mm256_fmadd_ps(d0, vload(py + i), a0);
    a1 = logsm ? _mm256_add_ps(a1, d1) : _mm256_fmadd_ps(d1, vload(py + i + 8), a1);
  }
  for (; i + 8 <= C; i += 8)
    a0 = logsm ? _mm256_add_ps(a0, vload(pd + i)) : _mm256_fmadd_ps(vload(pd + i), vload(py + i), a0);
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; i < C; i++) s += logsm ? float(load(pd + i)) : float(load(pd + i)) * float(load(py + i));
  const __m256 sv = _mm256_set1_ps(s);
  for (i = 0; i + 8 <= C; i += 8) {
    __m256 y = vload(py + i), d = vload(pd + i);
    vstore(po + i, logsm ? _mm256_fnmadd_ps(exp256_ps(y), sv, d) : _mm256_mul_ps(y, _mm256_sub_ps(d, sv)));
  }
  for (; i < C; i++) {
    float y = load(py + i), d = load(pd + i);
    store(po + i, logsm ? d - std::exp(y) * s : y * (d - s));
  }
}
// One row of the cross-entropy gradient: dx = (exp(x - lse) - [i == t]) * g, one rounding per element.
template <typename T> inline void ce_grad_row(const T* px, T* po, int64_t V, int64_t t, float l, float g) {
  const __m256 vl = _mm256_set1_ps(l), vg = _mm256_set1_ps(g);
  int64_t i = 0;
  for (; i + 8 <= V; i += 8) vstore(po + i, _mm256_mul_ps(exp256_ps(_mm256_sub_ps(vload(px + i), vl)), vg));
  for (; i < V; i++) store(po + i, std::exp(float(load(px + i)) - l) * g);
  store(po + t, (std::exp(float(load(px + t)) - l) - 1.f) * g);
}
inline bool ce_grad_row_fast(const float* px, float* po, int64_t V, int64_t t, float l, float g) {
  ce_grad_row(px, po, V, t, l, g);
  return true;
}
inline bool ce_grad_row_fast(const bf16* px, bf16* po, int64_t V, int64_t t, float l, float g) {
  ce_grad_row(px, po, V, t, l, g);
  return true;
}
inline bool softmax_bwd_row_fast(const float* py, const float* pd, float* po, int64_t C, bool logsm) {
  softmax_bwd_row(py, pd, po, C, logsm);
  return true;
}
inline bool softmax_bwd_row_fast(const bf16* py, const bf16* pd, bf16* po, int64_t C, bool logsm) {
  softmax_bwd_row(py, pd, po, C, logsm);
  return true;
}
#endif

// softmax_fwd(y, x, log)
void softmax_fwd_kernel(const KernelArgs& a) {
  const SoftmaxFwdArgs A = parse_softmax_fwd(a);
  const TensorArg &y = *A.y, &x = *A.x;
  const bool logsm = A.log;
  const int64_t C = A.C, N = A.N;
  if (N * C == 0) return;  // no element to write: no row to visit
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T, {
    using F = acc_t<T>;
    parallel_for(N, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; r++) {
        const T* px = x.data<T>() + r * C;
        T* py = y.data<T>() + r * C;
        const F m = row_max_of(px, C, F());
        if (!logsm && softmax_row_fast(px, py, C, m)) continue;
        if (logsm && log_softmax_row_fast(px, py, C, m)) continue;
        F s = 0;
        for (int64_t i = 0; i < C; i++) s += std::exp(F(load(px + i)) - m);
        if (logsm) {
          F lse = m + std::log(s);
          for (int64_t i = 0; i < C; i++) store(py + i, F(load(px + i)) - lse);
        } else {
          F inv = F(1) / s;
          for (int64_t i = 0; i < C; i++) store(py + i, std::exp(F(load(px + i)) - m) * inv);
        }
      }
    });
  });
}

// softmax_bwd(dx, y, dy, log): softmax: dx = y * (dy - sum(dy*y)); log: dx = dy - exp(y) * sum(dy)
void softmax_bwd_kernel(const KernelArgs& a) {
  const SoftmaxBwdArgs A = parse_softmax_bwd(a);
  const TensorArg &dx = *A.dx, &y = *A.y, &dy = *A.dy;
  const bool logsm = A.log;
  const int64_t C = A.C, N = A.N;
  if (N * C == 0) return;  // no element to write: no row to visit
  LLAVA_DISPATCH_FLOAT(a, y.dtype, T, {
    using F = acc_t<T>;
    parallel_for(N, std::max<int64_t>(1, 8192 / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; r++) {
        const T* py = y.data<T>() + r * C;
        const T* pd = dy.data<T>() + r * C;
        T* po = dx.data<T>() + r * C;
        if (softmax_bwd_row_fast(py, pd, po, C, logsm)) continue;
        F s = 0;
        if (logsm) {
          for (int64_t i = 0; i < C; i++) s += load(pd + i);
          for (int64_t i = 0; i < C; i++) store(po + i, F(load(pd + i)) - std::exp(F(load(py + i))) * s);
        } else {
          for (int64_t i = 0; i < C; i++) s += F(load(pd + i)) * F(load(py + i));
          for (int64_t i = 0; i < C; i++) store(po + i, F(load(py + i)) * (F(load(pd + i)) - s));
        }
      }
    });
  });
}

inline int64_t target_at(const TensorArg& t, int64_t i) {
  return t.dtype == DType::I64 ? t.data<int64_t>()[i] : int64_t(t.data<int32_t>()[i]);
}

template <typename S> inline double sload(const TensorArg& t, int64_t i) { return double(t.data<S>()[i]); }
inline double stat_at(const TensorArg& t, int64_t i) {
  return t.dtype == DType::F64 ? sload<double>(t, i) : sload<float>(t, i);
}
inline void stat_set(const TensorArg& t, int64_t i, double v) {
  if (t.dtype == DType::F64)
    t.data<double>()[i] = v;
  else
    t.data<float>()[i] = float(v);
}

// cross_entropy_fwd(loss[N], lse[N], logits[N,V], target[N], ignore_index)
void cross_entropy_fwd_kernel(const KernelArgs& a) {
  const CrossEntropyFwdArgs A = parse_cross_entropy_fwd(a);
  const TensorArg &loss = *A.loss, &lse = *A.lse, &logits = *A.logits, &target = *A.target;
  const int64_t ignore = A.ignore;
  const int64_t N = A.N, V = A.V;
  for (int64_t i = 0; i < N; i++) {
    int64_t t = target_at(target, i);
    if (t != ignore && (t < 0 || t >= V)) a.fail(ce_target_range_message(t, V));
  }
  LLAVA_DISPATCH_FLOAT(a, logits.dtype, T, {
    using F = acc_t<T>;
    parallel_for(N, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; r++) {
        const T* px = logits.data<T>() + r * V;
        const F m = row_max_of(px, V, F());
        F s = 0;
        if (!exp_sum_fast(px, m, V, s))
          for (int64_t i = 0; i < V; i++) s += std::exp(F(load(px + i)) - m);
        F l = m + std::log(s);
        int64_t t = target_at(target, r);
        stat_set(lse, r, l);
        stat_set(loss, r, t == ignore ? 0.0 : double(l - F(load(px + t))));
      }
    });
  });
}

// cross_entropy_bwd(dlogits[N,V], logits, target, lse, dloss[N], ignore_index)
void cross_entropy_bwd_kernel(const KernelArgs& a) {
  const CrossEntropyBwdArgs A = parse_cross_entropy_bwd(a);
  const TensorArg &dl = *A.dlogits, &logits = *A.logits, &target = *A.target, &lse = *A.lse, &dloss = *A.dloss;
  const int64_t ignore = A.ignore;
  const int64_t N = A.N, V = A.V;
  LLAVA_DISPATCH_FLOAT(a, logits.dtype, T, {
    using F = acc_t<T>;
    parallel_for(N, 1, [&](int64_t b, int64_t e) {
      for (int64_t r = b; r < e; r++) {
        const T* px = logits.data<T>() + r * V;
        T* po = dl.data<T>() + r * V;
        int64_t t = target_at(target, r);
        if (t == ignore) {
          for (int64_t i = 0; i < V; i++) store(po + i, 0.0);
          continue;
        }
        if (t < 0 || t >= V) a.fail("target out of range");
        F l = F(stat_at(lse, r)), g = F(stat_at(dloss, r));
        if (!ce_grad_row_fast(px, po, V, t, l, g))
          for (int64_t i = 0; i < V; i++) store(po + i, (std::exp(F(load(px + i)) - l) - F(i == t)) * g);
      }
    });
  });
}

}  // namespace

LLAVA_CPU_KERNEL("reduce", reduce_kernel, cpu_reduce);
LLAVA_CPU_KERNEL("softmax_fwd", softmax_fwd_kernel, cpu_softmax_fwd);
LLAVA_CPU_KERNEL("softmax_bwd", softmax_bwd_kernel, cpu_softmax_bwd);
LLAVA_CPU_KERNEL("cross_entropy_fwd", cross_entropy_fwd_kernel, cpu_cross_entropy_fwd);
LLAVA_CPU_KERNEL("cross_entropy_bwd", cross_entropy_bwd_kernel, cpu_cross_entropy_bwd);

}  // namespace llava
