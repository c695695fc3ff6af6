// cpu_norm.cc — LayerNorm and RMSNorm, forward and backward, over the last dim C of a contiguous x
// viewed as [N, C] (any leading shape is accepted: N = numel / C; mean/rstd have N elements).
// CUDA twin: cuda/norm.cu.
//
// Forward: two passes over the row while it sits in L1/L2 (sum -> mean, then the sum of squared
// deviations -> var), then a third that writes y. Two-pass is as cheap as Welford here and more
// accurate; 16-bit inputs are widened to f32 in registers on every pass (cheaper than a buffer).
// RMSNorm follows HF LlamaRMSNorm exactly: variance in f32 (f64 for f64), h = x * rstd rounded to
// the input dtype, y = w * h rounded again; LayerNorm rounds once, as torch does.
//
// Statistics (mean, rstd) are f32 as the kernel table says, or f64: either is accepted for any x
// dtype, so TypeScript can keep f64 stats for the f64 gradient check. dw/db are f32, or any float
// dtype (f64 for the gradient check); they are optional (null when the weight is frozen: no work is
// spent on them). They are reduced per thread into private f32 (f64) partial rows and summed in
// thread order at the end: deterministic for a given thread count, no atomics.
// Backward formulas (xh = normalised x, g = dy * w):
//   LayerNorm: dx = rstd * (g - mean(g) - xh * mean(g * xh)),  dw = sum dy * xh,  db = sum dy
//   RMSNorm:   dx = rstd * (g - xh * mean(g * xh)),            dw = sum dy * h  (h as rounded in fwd)
// For 16-bit RMSNorm, g = dy * w is rounded to the input dtype, as torch autograd of the HF module does.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "cpu_common.h"
#include "kernel_checks.h"

namespace llava {
namespace {

// ------------------------------------------------------------------ SIMD: 8 x f32 or 4 x f64 lanes
// Rounding through the storage type (identity for f32/f64): HF RMSNorm rounds h before * w.
template <typename T> inline acc_t<T> sround(acc_t<T> v) {
  if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) {
    T t;
    store(&t, v);
    return load(&t);
  } else {
    return v;
  }
}

#if LLAVA_AVX2
template <typename T> inline __m256 vround(__m256 v) {
  if constexpr (std::is_same_v<T, bf16>)
    return _mm256_castsi256_ps(_mm256_slli_epi32(bf16_bits(v), 16));
  else if constexpr (std::is_same_v<T, f16>)
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  else
    return v;
}
template <typename T> inline __m256d vround(__m256d v) { return v; }

inline __m256 vset(float x) { return _mm256_set1_ps(x); }
inline __m256d vset(double x) { return _mm256_set1_pd(x); }
inline __m256 vzero(float) { return _mm256_setzero_ps(); }
inline __m256d vzero(double) { return _mm256_setzero_pd(); }
inline __m256 vadd(__m256 a, __m256 b) { return _mm256_add_ps(a, b); }
inline __m256d vadd(__m256d a, __m256d b) { return _mm256_add_pd(a, b); }
inline __m256 vsub(__m256 a, __m256 b) { return _mm256_sub_ps(a, b); }
inline __m256d vsub(__m256d a, __m256d b) { return _mm256_sub_pd(a, b); }
inline __m256 vmul(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
inline __m256d vmul(__m256d a, __m256d b) { return _mm256_mul_pd(a, b); }
inline __m256 vfma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }
inline __m256d vfma(__m256d a, __m256d b, __m256d c) { return _mm256_fmadd_pd(a, b, c); }
inline __m256 vfnma(__m256 a, __m256 b, __m256 c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a*b
inline __m256d vfnma(__m256d a, __m256d b, __m256d c) { return _mm256_fnmadd_pd(a, b, c); }

template <typename A> struct Lanes { static constexpr int64_t W = 32 / sizeof(A); };
template <typename A> struct Reg;
template <> struct Reg<float> { using type = __m256; };
template <> struct Reg<double> { using type = __m256d; };
template <typename A> using reg_t = typename Reg<A>::type;
#else
// Portable: the same operations on a plain array of lanes, loops the compiler vectorises.
template <typename A> struct Lanes { static constexpr int64_t W = 32 / sizeof(A); };
template <typename A> struct PVec { A v[Lanes<A>::W]; };
template <typename A> using reg_t = PVec<A>;
template <typename A, typename F> inline PVec<A> vmap(F&& f) {
  PVec<A> r;
  for (int64_t i = 0; i < Lanes<A>::W; i++) r.v[i] = f(i);
  return r;
}
template <typename A> inline PVec<A> vset(A x) {
  return vmap<A>([&](int64_t) { return x; });
}
template <typename A> inline PVec<A> vzero(A) { return vset<A>(A(0)); }
template <typename A> inline PVec<A> vadd(const PVec<A>& a, const PVec<A>& b) {
  return vmap<A>([&](int64_t i) { return a.v[i] + b.v[i]; });
}
template <typename A> inline PVec<A> vsub(const PVec<A>& a, const PVec<A>& b) {
  return vmap<A>([&](int64_t i) { return a.v[i] - b.v[i]; });
}
template <typename A> inline PVec<A> vmul(const PVec<A>& a, const PVec<A>& b) {
  return vmap<A>([&](int64_t i) { return a.v[i] * b.v[i]; });
}
template <typename A> inline PVec<A> vfma(const PVec<A>& a, const PVec<A>& b, const PVec<A>& c) {
  return vmap<A>([&](int64_t i) { return a.v[i] * b.v[i] + c.v[i]; });
}
template <typename A> inline PVec<A> vfnma(const PVec<A>& a, const PVec<A>& b, const PVec<A>& c) {  // c - a*b
  return vmap<A>([&](int64_t i) { return c.v[i] - a.v[i] * b.v[i]; });
}
template <typename T> inline PVec<acc_t<T> > vload(const T* p) {
  return vmap<acc_t<T> >([&](int64_t i) { return load(p + i); });
}
template <typename T> inline void vstore(T* p, const PVec<acc_t<T> >& r) {
  for (int64_t i = 0; i < Lanes<acc_t<T> >::W; i++) store(p + i, r.v[i]);
}
template <typename T> inline PVec<acc_t<T> > vround(const PVec<acc_t<T> >& r) {
  return vmap<acc_t<T> >([&](int64_t i) { return sround<T>(r.v[i]); });
}
template <typename A> inline A hsum(const PVec<A>& r) {
  A s = 0;
  for (int64_t i = 0; i < Lanes<A>::W; i++) s += r.v[i];
  return s;
}
#endif

// ------------------------------------------------------------------ row statistics
// sum(x) and sum((x - c)^2) over one row, two independent accumulators each to hide FMA latency.
template <typename T> inline acc_t<T> row_sum(const T* x, int64_t C) {
  using A = acc_t<T>;
  constexpr int64_t W = Lanes<A>::W;
  reg_t<A> s0 = vzero(A()), s1 = vzero(A());
  int64_t i = 0;
  for (; i + 2 * W <= C; i += 2 * W) {
    s0 = vadd(s0, vload(x + i));
    s1 = vadd(s1, vload(x + i + W));
  }
  for (; i + W <= C; i += W) s0 = vadd(s0, vload(x + i));
  A s = hsum(vadd(s0, s1));
  for (; i < C; i++) s += load(x + i);
  return s;
}
template <typename T> inline acc_t<T> row_sqdev(const T* x, int64_t C, acc_t<T> c) {
  using A = acc_t<T>;
  constexpr int64_t W = Lanes<A>::W;
  reg_t<A> s0 = vzero(A()), s1 = vzero(A()), cv = vset(c);
  int64_t i = 0;
  for (; i + 2 * W <= C; i += 2 * W) {
    reg_t<A> d0 = vsub(vload(x + i), cv), d1 = vsub(vload(x + i + W), cv);
    s0 = vfma(d0, d0, s0);
    s1 = vfma(d1, d1, s1);
  }
  for (; i + W <= C; i += W) {
    reg_t<A> d0 = vsub(vload(x + i), cv);
    s0 = vfma(d0, d0, s0);
  }
  A s = hsum(vadd(s0, s1));
  for (; i < C; i++) {
    A d = load(x + i) - c;
    s += d * d;
  }
  return s;
}

// ------------------------------------------------------------------ validation: parse_*_norm_* in kernel_checks.h

inline double stat_at(const TensorArg& t, int64_t i) {
  return t.dtype == DType::F64 ? t.data<double>()[i] : double(t.data<float>()[i]);
}
inline void stat_set(const TensorArg& t, int64_t i, double v) {
  if (t.dtype == DType::F64)
    t.data<double>()[i] = v;
  else
    t.data<float>()[i] = float(v);
}

// Rows per parallel chunk: about 16K elements, so small problems stay on one thread.
inline int64_t row_grain(int64_t C) { return std::max<int64_t>(1, (1 << 14) / std::max<int64_t>(C, 1)); }

// Splits rows into `parts` fixed ranges (part p owns rows [N*p/parts, N*(p+1)/parts)) and gives each
// part its own index, so per-part partial buffers need no synchronisation.
template <typename F> void for_parts(int64_t N, int64_t parts, F&& f) {
  parallel_for(parts, 1, [&](int64_t pb, int64_t pe) {
    for (int64_t p = pb; p < pe; p++) f(p, N * p / parts, N * (p + 1) / parts);
  });
}
inline int64_t num_parts(int64_t N, int64_t C) {
  return std::max<int64_t>(1, std::min<int64_t>(num_threads(), N / row_grain(C)));
}

// Writes the per-part partial sums (parts x C) into a [C] gradient of any float dtype.
template <typename A>
void reduce_parts(const KernelArgs& a, const std::vector<A>& part, int64_t parts, int64_t C, const TensorArg& out) {
  LLAVA_DISPATCH_FLOAT(a, out.dtype, TO, {
    TO* o = out.data<TO>();
    for (int64_t c = 0; c < C; c++) {
      A s = 0;
      for (int64_t p = 0; p < parts; p++) s += part[p * C + c];
      store(o + c, s);
    }
  });
}

// ------------------------------------------------------------------ LayerNorm
template <typename T, bool HasW, bool HasB> void ln_fwd_rows(T* y, const TensorArg& mean, const TensorArg& rstd,
                                                             const T* x, const T* w, const T* b, double eps, int64_t r0,
                                                             int64_t r1, int64_t C) {
  using A = acc_t<T>;
  constexpr int64_t W = Lanes<A>::W;
  for (int64_t r = r0; r < r1; r++) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    A mu = row_sum(xr, C) / A(C);
    A var = row_sqdev(xr, C, mu) / A(C);
    A rs = A(1) / std::sqrt(var + A(eps));
    stat_set(mean, r, mu);
    stat_set(rstd, r, rs);
    reg_t<A> muv = vset(mu), rsv = vset(rs);
    int64_t i = 0;
    for (; i + W <= C; i += W) {
      reg_t<A> v = vmul(vsub(vload(xr + i), muv), rsv);
      if constexpr (HasW) v = vmul(v, vload(w + i));
      if constexpr (HasB) v = vadd(v, vload(b + i));
      vstore(yr + i, v);
    }
    for (; i < C; i++) {
      A v = (load(xr + i) - mu) * rs;
      if constexpr (HasW) v *= load(w + i);
      if constexpr (HasB) v += load(b + i);
      store(yr + i, v);
    }
  }
}

// layer_norm_fwd(y, mean, rstd, x, w?, b?, eps)
void layer_norm_fwd_kernel(const KernelArgs& a) {
  const NormFwdArgs rw = parse_layer_norm_fwd(a);
  const TensorArg &y = *rw.y, &mean = *rw.mean, &rstd = *rw.rstd, &x = *rw.x;
  const TensorArg *w = rw.w, *b = rw.b;
  const double eps = rw.eps;
  const int64_t N = rw.N, C = rw.C;
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T, {
    T* yp = y.data<T>();
    const T* xp = x.data<T>();
    const T* wp = w ? w->data<T>() : nullptr;
    const T* bp = b ? b->data<T>() : nullptr;
    parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
      if (wp && bp)
        ln_fwd_rows<T, true, true>(yp, mean, rstd, xp, wp, bp, eps, r0, r1, C);
      else if (wp)
        ln_fwd_rows<T, true, false>(yp, mean, rstd, xp, wp, bp, eps, r0, r1, C);
      else if (bp)
        ln_fwd_rows<T, false, true>(yp, mean, rstd, xp, wp, bp, eps, r0, r1, C);
      else
        ln_fwd_rows<T, false, false>(yp, mean, rstd, xp, wp, bp, eps, r0, r1, C);
    });
  });
}

// One row of the LayerNorm backward; dwp/dbp are this part's partial rows (null when not needed).
template <typename T, bool HasW, bool DW, bool DB> inline void ln_bwd_row(T* dx, acc_t<T>* dwp, acc_t<T>* dbp,
                                                                          const T* dy, const T* x, const T* w,
                                                                          acc_t<T> mu, acc_t<T> rs, int64_t C) {
  using A = acc_t<T>;
  constexpr int64_t W = Lanes<A>::W;
  const reg_t<A> muv = vset(mu), rsv = vset(rs);
  // pass 1: sum(g) and sum(g * xh)
  reg_t<A> sg = vzero(A()), sgx = vzero(A());
  int64_t i = 0;
  for (; i + W <= C; i += W) {
    reg_t<A> xh = vmul(vsub(vload(x + i), muv), rsv);
    reg_t<A> g = vload(dy + i);
    if constexpr (HasW) g = vmul(g, vload(w + i));
    sg = vadd(sg, g);
    sgx = vfma(g, xh, sgx);
  }
  A s_g = hsum(sg), s_gx = hsum(sgx);
  for (int64_t j = i; j < C; j++) {
    A xh = (load(x + j) - mu) * rs;
    A g = load(dy + j);
    if constexpr (HasW) g *= load(w + j);
    s_g += g;
    s_gx += g * xh;
  }
  const A ma = s_g / A(C), mb = s_gx / A(C);
  // pass 2: dx, and the dw/db partials
  const reg_t<A> mav = vset(ma), mbv = vset(mb);
  for (i = 0; i + W <= C; i += W) {
    reg_t<A> xh = vmul(vsub(vload(x + i), muv), rsv);
    reg_t<A> d = vload(dy + i);
    reg_t<A> g = d;
    if constexpr (HasW) g = vmul(g, vload(w + i));
    // rs * (g - ma - xh * mb)
    vstore(dx + i, vmul(rsv, vfnma(xh, mbv, vsub(g, mav))));
    if constexpr (DW) vstore(dwp + i, vfma(d, xh, vload(dwp + i)));
    if constexpr (DB) vstore(dbp + i, vadd(vload(dbp + i), d));
  }
  for (; i < C; i++) {
    A xh = (load(x + i) - mu) * rs;
    A d = load(dy + i);
    A g = d;
    if constexpr (HasW) g *= load(w + i);
    store(dx + i, rs * (g - ma - xh * mb));
    if constexpr (DW) dwp[i] += d * xh;
    if constexpr (DB) dbp[i] += d;
  }
}

template <typename T, bool HasW, bool DW, bool DB>
void ln_bwd_rows(T* dx, acc_t<T>* dwp, acc_t<T>* dbp, const T* dy, const T* x, const T* w, const TensorArg& mean,
                 const TensorArg& rstd, int64_t r0, int64_t r1, int64_t C) {
  using A = acc_t<T>;
  for (int64_t r = r0; r < r1; r++)
    ln_bwd_row<T, HasW, DW, DB>(dx + r * C, dwp, dbp, dy + r * C, x + r * C, w, A(stat_at(mean, r)),
                                A(stat_at(rstd, r)), C);
}

template <typename T> void ln_bwd_impl(const KernelArgs& a, const TensorArg& dx, const TensorArg* dw,
                                       const TensorArg* db, const TensorArg& dy, const TensorArg& x, const TensorArg* w,
                                       const TensorArg& mean, const TensorArg& rstd, int64_t N, int64_t C) {
  using A = acc_t<T>;
  T* dxp = dx.data<T>();
  const T *dyp = dy.data<T>(), *xp = x.data<T>(), *wp = w ? w->data<T>() : nullptr;
  const int64_t parts = (dw || db) ? num_parts(N, C) : 1;
  std::vector<A> dwpart(dw ? parts * C : 0, A(0)), dbpart(db ? parts * C : 0, A(0));
  auto body = [&](int64_t p, int64_t r0, int64_t r1) {
    A* dwr = dw ? dwpart.data() + p * C : nullptr;
    A* dbr = db ? dbpart.data() + p * C : nullptr;
    auto run = [&](auto hw, auto dw_, auto db_) {
      ln_bwd_rows<T, decltype(hw)::value, decltype(dw_)::value, decltype(db_)::value>(dxp, dwr, dbr, dyp, xp, wp, mean,
                                                                                      rstd, r0, r1, C);
    };
    using Y = std::true_type;
    using F = std::false_type;
    if (wp) {
      if (dwr && dbr)
        run(Y(), Y(), Y());
      else if (dwr)
        run(Y(), Y(), F());
      else if (dbr)
        run(Y(), F(), Y());
      else
        run(Y(), F(), F());
    } else {
      if (dbr)
        run(F(), F(), Y());
      else
        run(F(), F(), F());
    }
  };
  if (dw || db)
    for_parts(N, parts, body);
  else
    parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) { body(0, r0, r1); });
  if (dw) reduce_parts(a, dwpart, parts, C, *dw);
  if (db) reduce_parts(a, dbpart, parts, C, *db);
}

// layer_norm_bwd(dx, dw?, db?, dy, x, w?, mean, rstd)
void layer_norm_bwd_kernel(const KernelArgs& a) {
  const NormBwdArgs rw = parse_layer_norm_bwd(a);
  const TensorArg &dx = *rw.dx, &dy = *rw.dy, &x = *rw.x, &mean = *rw.mean, &rstd = *rw.rstd;
  const TensorArg *dw = rw.dw, *db = rw.db, *w = rw.w;
  const int64_t N = rw.N, C = rw.C;
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T, ln_bwd_impl<T>(a, dx, dw, db, dy, x, w, mean, rstd, N, C));
}

// ------------------------------------------------------------------ RMSNorm
template <typename T, bool HasW>
void rms_fwd_rows(T* y, const TensorArg& rstd, const T* x, const T* w, double eps, int64_t r0, int64_t r1, int64_t C) {
  using A = acc_t<T>;
  constexpr int64_t W = Lanes<A>::W;
  for (int64_t r = r0; r < r1; r++) {
    const T* xr = x + r * C;
    T* yr = y + r * C;
    A rs = A(1) / std::sqrt(row_sqdev(xr, C, A(0)) / A(C) + A(eps));
    stat_set(rstd, r, rs);
    reg_t<A> rsv = vset(rs);
    int64_t i = 0;
    for (; i + W <= C; i += W) {
      reg_t<A> h = vround<T>(vmul(vload(xr + i), rsv));
      if constexpr (HasW) h = vmul(h, vload(w + i));
      vstore(yr + i, h);
    }
    for (; i < C; i++) {
      A h = sround<T>(load(xr + i) * rs);
      if constexpr (HasW) h *= load(w + i);
      store(yr + i, h);
    }
  }
}

// rms_norm_fwd(y, rstd, x, w?, eps)
void rms_norm_fwd_kernel(const KernelArgs& a) {
  const NormFwdArgs rw = parse_rms_norm_fwd(a);
  const TensorArg &y = *rw.y, &rstd = *rw.rstd, &x = *rw.x;
  const TensorArg* w = rw.w;
  const double eps = rw.eps;
  const int64_t N = rw.N, C = rw.C;
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T, {
    T* yp = y.data<T>();
    const T *xp = x.data<T>(), *wp = w ? w->data<T>() : nullptr;
    parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) {
      if (wp)
        rms_fwd_rows<T, true>(yp, rstd, xp, wp, eps, r0, r1, C);
      else
        rms_fwd_rows<T, false>(yp, rstd, xp, wp, eps, r0, r1, C);
    });
  });
}

template <typename T, bool HasW, bool DW>
inline void rms_bwd_row(T* dx, acc_t<T>* dwp, const T* dy, const T* x, const T* w, acc_t<T> rs, int64_t C) {
  using A = acc_t<T>;
  constexpr int64_t W = Lanes<A>::W;
  const reg_t<A> rsv = vset(rs);
  reg_t<A> sgx = vzero(A());
  int64_t i = 0;
  for (; i + W <= C; i += W) {
    reg_t<A> g = vload(dy + i);
    if constexpr (HasW) g = vround<T>(vmul(g, vload(w + i)));
    sgx = vfma(g, vmul(vload(x + i), rsv), sgx);
  }
  A s_gx = hsum(sgx);
  for (int64_t j = i; j < C; j++) {
    A g = load(dy + j);
    if constexpr (HasW) g = sround<T>(g * load(w + j));
    s_gx += g * load(x + j) * rs;
  }
  const A mb = s_gx / A(C);
  const reg_t<A> mbv = vset(mb);
  for (i = 0; i + W <= C; i += W) {
    reg_t<A> d = vload(dy + i), xv = vload(x + i);
    reg_t<A> xh = vmul(xv, rsv);
    reg_t<A> g = d;
    if constexpr (HasW) g = vround<T>(vmul(g, vload(w + i)));
    vstore(dx + i, vmul(rsv, vfnma(xh, mbv, g)));
    if constexpr (DW) vstore(dwp + i, vfma(d, vround<T>(xh), vload(dwp + i)));
  }
  for (; i < C; i++) {
    A d = load(dy + i), xh = load(x + i) * rs;
    A g = d;
    if constexpr (HasW) g = sround<T>(g * load(w + i));
    store(dx + i, rs * (g - xh * mb));
    if constexpr (DW) dwp[i] += d * sround<T>(xh);
  }
}

// rms_norm_bwd(dx, dw?, dy, x, w?, rstd)
void rms_norm_bwd_kernel(const KernelArgs& a) {
  const NormBwdArgs rw = parse_rms_norm_bwd(a);
  const TensorArg &dx = *rw.dx, &dy = *rw.dy, &x = *rw.x, &rstd = *rw.rstd;
  const TensorArg *dw = rw.dw, *w = rw.w;
  const int64_t N = rw.N, C = rw.C;
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T, {
    using A = acc_t<T>;
    T* dxp = dx.data<T>();
    const T *dyp = dy.data<T>(), *xp = x.data<T>(), *wp = w ? w->data<T>() : nullptr;
    const int64_t parts = dw ? num_parts(N, C) : 1;
    std::vector<A> dwpart(dw ? parts * C : 0, A(0));
    auto body = [&](int64_t p, int64_t r0, int64_t r1) {
      A* dwr = dw ? dwpart.data() + p * C : nullptr;
      for (int64_t r = r0; r < r1; r++) {
        A rs = A(stat_at(rstd, r));
        if (dwr)
          rms_bwd_row<T, true, true>(dxp + r * C, dwr, dyp + r * C, xp + r * C, wp, rs, C);
        else if (wp)
          rms_bwd_row<T, true, false>(dxp + r * C, dwr, dyp + r * C, xp + r * C, wp, rs, C);
        else
          rms_bwd_row<T, false, false>(dxp + r * C, dwr, dyp + r * C, xp + r * C, wp, rs, C);
      }
    };
    if (dw)
      for_parts(N, parts, body);
    else
      parallel_for(N, row_grain(C), [&](int64_t r0, int64_t r1) { body(0, r0, r1); });
    if (dw) reduce_parts(a, dwpart, parts, C, *dw);
  });
}

}  // namespace

LLAVA_CPU_KERNEL("layer_norm_fwd", layer_norm_fwd_kernel, cpu_layer_norm_fwd);
LLAVA_CPU_KERNEL("layer_norm_bwd", layer_norm_bwd_kernel, cpu_layer_norm_bwd);
LLAVA_CPU_KERNEL("rms_norm_fwd", rms_norm_fwd_kernel, cpu_rms_norm_fwd);
LLAVA_CPU_KERNEL("rms_norm_bwd", rms_norm_bwd_kernel, cpu_rms_norm_bwd);

}  // namespace llava
