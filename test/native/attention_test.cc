// attention_test.cc — kernel lab for `attention_fwd` / `attention_bwd` on the CPU (llm.c style).
//
// Every case is checked against a naive double-precision attention over the same (already rounded)
// inputs that materialises the T x S softmax: out and lse forward; dq, dk, dv backward (naive
// backward: dP = dO V^T, dS = P (dP - rowsum(P dP)), dQ = scale dS K, dK = scale dS^T Q, dV = P^T dO).
// Shapes: T = 1 decode, T not a tile multiple, S != T (both ways: T > S causal leaves early rows with
// no visible key), causal and not, random / head-broadcast (stride 0) / key-padding masks, GQA
// (H=4, Hkv=2 and Hkv=1), D = 3, 12, 64, 80, 128; q/k/v/out/dout as contiguous, permuted [B,T,H,D]
// and padded-row views. f64 cases also get a central finite-difference check of the backward.
//
// Tolerances (|got - ref| <= atol + rtol |ref|):
//   f32: atol 2e-5, rtol 2e-4 — outputs are O(1) convex combinations; f32 accumulation over D and S
//        plus the ~1-ulp polynomial exp leave errors near 1e-6, a wrong mask or tile is off by O(0.1).
//   f64: 1e-10 against the naive reference; finite differences (h = 1e-5) within 1e-7 + 1e-6 |g|.
//   bf16/f16: the flash-attention rule — the kernel's max error against the f64 reference must be at
//        most 2x that of the naive composite evaluated in the same low precision (S, P and out rounded
//        as a chain of bf16 torch ops would), plus 1e-6. Gradients: max error <= 2^-6 max|ref| (bf16;
//        2^-9 for f16), a few roundings of the inputs' precision relative to the gradient's scale.
// Then invalid calls must throw KernelError (never crash). Prints "N passed, N failed"; exit 1 on failure.
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "native_util.h"

using namespace llava_native;

namespace {

const double kInf = std::numeric_limits<double>::infinity();

// ------------------------------------------------------------------ tensors
enum class Layout {
  Contig,
  Permuted,
  Padded
};  // [B,H,T,D] contiguous / a view of [B,T,H,D] / row stride D+5, offset 3

HostTensor make4(DType dt, int64_t B, int64_t H, int64_t T, int64_t D, Layout l) {
  switch (l) {
    case Layout::Contig:
      return make_contiguous(dt, {B, H, T, D});
    case Layout::Permuted: {
      auto s = make_storage(size_t(B * T * H * D) * dtype_size(dt));
      return make_view(s, dt, {B, H, T, D}, {T * H * D, D, H * D, 1});
    }
    case Layout::Padded: {
      int64_t rs = D + 5, off = 3;
      auto s = make_storage(size_t(off + B * H * T * rs + 8) * dtype_size(dt));
      return make_view(s, dt, {B, H, T, D}, {H * T * rs, T * rs, rs, 1}, off);
    }
  }
  return make_contiguous(dt, {B, H, T, D});
}
int64_t off4(const TensorArg& t, int64_t a, int64_t b, int64_t c, int64_t d) {
  return a * t.strides[0] + b * t.strides[1] + c * t.strides[2] + d * t.strides[3];
}
void fill(const TensorArg& t, Rng& rng, double amp = 1.0) {
  for (int64_t i = 0; i < t.numel(); i++) put(t, strided_offset(t, i), amp * rng.uniform());
}
// Values in logical (row-major) order, as double.

struct Cmp {
  double max_err = 0, max_ref = 0, nmse_num = 0, nmse_den = 0;
  bool ok = true, nonfinite = false;
};
Cmp compare(const std::vector<double>& got, const std::vector<double>& ref, double atol, double rtol) {
  Cmp c;
  for (size_t i = 0; i < got.size(); i++) {
    double g = got[i], r = ref[i];
    if (std::isinf(r) && g == r) continue;  // lse = -inf rows
    if (!std::isfinite(g)) {
      c.ok = false;
      c.nonfinite = true;
      continue;
    }
    double e = std::fabs(g - r);
    c.max_err = std::max(c.max_err, e);
    c.max_ref = std::max(c.max_ref, std::fabs(r));
    c.nmse_num += e * e;
    c.nmse_den += r * r;
    if (e > atol + rtol * std::fabs(r)) c.ok = false;
  }
  return c;
}
void expect_close(const std::string& name, const std::vector<double>& got, const std::vector<double>& ref, double atol,
                  double rtol) {
  Cmp c = compare(got, ref, atol, rtol);
  char buf[200];
  std::snprintf(buf, sizeof buf, "max_err %.3g nmse %.3g%s", c.max_err, c.nmse_den > 0 ? c.nmse_num / c.nmse_den : 0.0,
                c.nonfinite ? " (non-finite values)" : "");
  report(c.ok, name, buf);
}

// ------------------------------------------------------------------ the problem
enum class MaskKind { None, Random, HeadBcast, KeyPad, DeadRow };
struct Case {
  int64_t B, H, Hkv, T, S, D;
  bool causal;
  MaskKind mask;
  Layout layout;
  std::string name() const {
    char buf[160];
    static const char* mk[] = {"none", "random", "head-bcast", "keypad", "deadrow"};
    static const char* lk[] = {"contig", "permuted", "padded"};
    std::snprintf(buf, sizeof buf, "B%lld H%lld Hkv%lld T%lld S%lld D%lld %s mask=%s %s", (long long)B, (long long)H,
                  (long long)Hkv, (long long)T, (long long)S, (long long)D, causal ? "causal" : "full", mk[int(mask)],
                  lk[int(layout)]);
    return buf;
  }
};

struct Problem {
  Case c;
  DType dt;
  double scale;
  HostTensor q, k, v, dout, mask;
  bool has_mask = false;
  // logical visibility including mask and causality
  bool visible(int64_t b, int64_t h, int64_t t, int64_t j) const {
    if (c.causal && j > t + c.S - c.T) return false;
    if (has_mask) {
      const TensorArg& m = mask.view;
      const uint8_t* p = reinterpret_cast<const uint8_t*>(m.storage->ptr) + m.offset;
      return p[off4(m, b, h, t, j)] != 0;
    }
    return true;
  }
};

Problem make_problem(const Case& c, DType dt, uint64_t seed) {
  Rng rng(seed);
  Problem p{c, dt, 1.0 / std::sqrt(double(c.D)), {}, {}, {}, {}, {}};
  p.q = make4(dt, c.B, c.H, c.T, c.D, c.layout);
  p.k = make4(dt, c.B, c.Hkv, c.S, c.D, c.layout);
  p.v = make4(dt, c.B, c.Hkv, c.S, c.D, c.layout);
  p.dout = make4(dt, c.B, c.H, c.T, c.D, c.layout);
  fill(p.q.view, rng, 2.0);  // amplitude 2: peaky enough softmax to exercise the running max
  fill(p.k.view, rng, 2.0);
  fill(p.v.view, rng);
  fill(p.dout.view, rng);
  if (c.mask != MaskKind::None) {
    p.has_mask = true;
    int64_t B = c.B, H = c.H, T = c.T, S = c.S;
    std::vector<int64_t> st;
    int64_t n;
    switch (c.mask) {
      case MaskKind::HeadBcast:
        st = {T * S, 0, S, 1}, n = B * T * S;
        break;
      case MaskKind::KeyPad:
        st = {S, 0, 0, 1}, n = B * S;
        break;
      default:
        st = {H * T * S, T * S, S, 1}, n = B * H * T * S;
        break;
    }
    auto s = make_storage(size_t(n));
    p.mask = make_view(s, DType::BOOL, {B, H, T, S}, st);
    uint8_t* m = static_cast<uint8_t*>(s->ptr);
    for (int64_t i = 0; i < n; i++) m[i] = rng.uniform() > -0.6;  // ~80% attend
    if (c.mask == MaskKind::KeyPad)
      for (int64_t b = 0; b < B; b++)
        for (int64_t j = S - S / 3; j < S; j++) m[b * S + j] = 0;  // padded tail
    if (c.mask == MaskKind::DeadRow)                               // some rows attend to nothing
      for (int64_t i = 0; i < B * H * T; i += 3)
        for (int64_t j = 0; j < S; j++) m[i * S + j] = 0;
  }
  return p;
}

struct Ref {
  std::vector<double> out, lse, dq, dk, dv;
};

// Naive double attention, materialised softmax, over the problem's (rounded) values.
Ref reference(const Problem& p) {
  const Case& c = p.c;
  const int64_t G = c.H / c.Hkv;
  auto Q = values(p.q.view), K = values(p.k.view), V = values(p.v.view), dO = values(p.dout.view);
  Ref r;
  r.out.assign(c.B * c.H * c.T * c.D, 0);
  r.lse.assign(c.B * c.H * c.T, -kInf);
  r.dq.assign(Q.size(), 0);
  r.dk.assign(K.size(), 0);
  r.dv.assign(V.size(), 0);
  std::vector<double> P(c.S), dP(c.S);
  for (int64_t b = 0; b < c.B; b++)
    for (int64_t h = 0; h < c.H; h++) {
      int64_t kvh = h / G;
      for (int64_t t = 0; t < c.T; t++) {
        const double* q = &Q[((b * c.H + h) * c.T + t) * c.D];
        double m = -kInf;
        for (int64_t j = 0; j < c.S; j++) {
          P[j] = -kInf;
          if (!p.visible(b, h, t, j)) continue;
          const double* k = &K[((b * c.Hkv + kvh) * c.S + j) * c.D];
          double s = 0;
          for (int64_t d = 0; d < c.D; d++) s += q[d] * k[d];
          P[j] = s * p.scale;
          m = std::max(m, P[j]);
        }
        if (m == -kInf) continue;  // no visible key: out 0, lse -inf, no gradient
        double l = 0;
        for (int64_t j = 0; j < c.S; j++) l += (P[j] = P[j] == -kInf ? 0 : std::exp(P[j] - m));
        int64_t row = (b * c.H + h) * c.T + t;
        r.lse[row] = m + std::log(l);
        for (int64_t j = 0; j < c.S; j++) P[j] /= l;
        double* o = &r.out[row * c.D];
        const double* go = &dO[row * c.D];
        double pdp = 0;
        for (int64_t j = 0; j < c.S; j++) {
          const double* v = &V[((b * c.Hkv + kvh) * c.S + j) * c.D];
          double s = 0;
          for (int64_t d = 0; d < c.D; d++) {
            o[d] += P[j] * v[d];
            s += go[d] * v[d];
          }
          dP[j] = s;
          pdp += P[j] * s;
        }
        for (int64_t j = 0; j < c.S; j++) {
          if (P[j] == 0) continue;
          double ds = P[j] * (dP[j] - pdp) * p.scale;
          int64_t kr = ((b * c.Hkv + kvh) * c.S + j) * c.D;
          for (int64_t d = 0; d < c.D; d++) {
            r.dq[row * c.D + d] += ds * K[kr + d];
            r.dk[kr + d] += ds * q[d];
            r.dv[kr + d] += P[j] * go[d];
          }
        }
      }
    }
  return r;
}

// The naive composite as a chain of low-precision torch ops would compute it: S = Q K^T rounded,
// * scale rounded, softmax (f32 inside) rounded, P V rounded. Its error is the flash-attention yardstick.
std::vector<double> naive_lowp_out(const Problem& p) {
  const Case& c = p.c;
  const int64_t G = c.H / c.Hkv;
  auto rnd = [&](double x) -> double {
    if (p.dt == DType::BF16) {
      bf16 t;
      store(&t, x);
      return load(&t);
    }
    f16 t;
    store(&t, x);
    return load(&t);
  };
  auto Q = values(p.q.view), K = values(p.k.view), V = values(p.v.view);
  std::vector<double> out(c.B * c.H * c.T * c.D, 0), P(c.S);
  for (int64_t b = 0; b < c.B; b++)
    for (int64_t h = 0; h < c.H; h++)
      for (int64_t t = 0; t < c.T; t++) {
        int64_t row = (b * c.H + h) * c.T + t, kvh = h / G;
        float m = -INFINITY;
        for (int64_t j = 0; j < c.S; j++) {
          P[j] = -kInf;
          if (!p.visible(b, h, t, j)) continue;
          float s = 0;
          for (int64_t d = 0; d < c.D; d++) s += float(Q[row * c.D + d] * K[((b * c.Hkv + kvh) * c.S + j) * c.D + d]);
          P[j] = rnd(rnd(s) * rnd(p.scale));
          m = std::max(m, float(P[j]));
        }
        if (m == -INFINITY) continue;
        float l = 0;
        for (int64_t j = 0; j < c.S; j++) l += float(P[j] = P[j] == -kInf ? 0 : std::exp(float(P[j]) - m));
        for (int64_t j = 0; j < c.S; j++) P[j] = rnd(float(P[j]) / l);
        for (int64_t d = 0; d < c.D; d++) {
          float o = 0;
          for (int64_t j = 0; j < c.S; j++) o += float(P[j] * V[((b * c.Hkv + kvh) * c.S + j) * c.D + d]);
          out[row * c.D + d] = rnd(o);
        }
      }
  return out;
}

KernelArg mask_arg(const Problem& p) { return p.has_mask ? KernelArg(p.mask.view) : KernelArg(std::monostate{}); }

struct Outs {
  HostTensor out, lse, dq, dk, dv;
};
Outs run_fwd(const Problem& p, DType lse_dt = DType::F32) {
  const Case& c = p.c;
  Outs o;
  o.out = make_contiguous(p.dt, {c.B, c.H, c.T, c.D});
  o.lse = make_contiguous(lse_dt, {c.B, c.H, c.T});
  call("attention_fwd", {o.out.view, o.lse.view, p.q.view, p.k.view, p.v.view, mask_arg(p), c.causal, p.scale});
  return o;
}
// The backward reads `out` through the same layout as q (a strided view when the case is strided).
void run_bwd(const Problem& p, Outs& o) {
  const Case& c = p.c;
  HostTensor out_view = make4(p.dt, c.B, c.H, c.T, c.D, c.layout);
  for (int64_t i = 0; i < o.out.view.numel(); i++)
    put(out_view.view, strided_offset(out_view.view, i), get(o.out.view, i));
  o.dq = make_contiguous(p.dt, {c.B, c.H, c.T, c.D});
  o.dk = make_contiguous(p.dt, {c.B, c.Hkv, c.S, c.D});
  o.dv = make_contiguous(p.dt, {c.B, c.Hkv, c.S, c.D});
  call("attention_bwd", {o.dq.view, o.dk.view, o.dv.view, p.q.view, p.k.view, p.v.view, out_view.view, p.dout.view,
                         o.lse.view, mask_arg(p), c.causal, p.scale});
}

const std::vector<Case>& cases() {
  static const std::vector<Case> cs = {
      {1, 1, 1, 1, 1, 12, false, MaskKind::None, Layout::Contig},
      {2, 4, 4, 1, 300, 64, false, MaskKind::None, Layout::Contig},     // decode
      {1, 4, 2, 1, 257, 64, true, MaskKind::None, Layout::Permuted},    // decode, GQA
      {1, 4, 1, 1, 130, 128, false, MaskKind::KeyPad, Layout::Padded},  // decode, MQA, padding mask
      {2, 4, 2, 77, 77, 12, true, MaskKind::None, Layout::Contig},
      {1, 4, 1, 61, 130, 80, false, MaskKind::Random, Layout::Contig},  // MQA, S != T
      {2, 2, 2, 130, 70, 64, true, MaskKind::None, Layout::Contig},     // T > S: early rows see nothing
      {1, 3, 3, 65, 65, 80, true, MaskKind::HeadBcast, Layout::Permuted},
      {1, 4, 2, 128, 128, 128, false, MaskKind::KeyPad, Layout::Padded},
      {1, 2, 1, 200, 333, 16, true, MaskKind::Random, Layout::Contig},
      {1, 2, 2, 5, 9, 3, false, MaskKind::DeadRow, Layout::Padded},  // D = 3, rows with no key
      {1, 4, 2, 64, 64, 8, true, MaskKind::DeadRow, Layout::Permuted},
      {3, 8, 2, 19, 150, 64, true, MaskKind::None, Layout::Contig},     // G = 4, rows span heads
      {1, 1, 1, 129, 1, 64, false, MaskKind::None, Layout::Contig},     // S = 1
      {2, 8, 4, 100, 150, 24, true, MaskKind::Random, Layout::Padded},  // B*Hkv = 8: unsplit backward on 2 threads
  };
  return cs;
}

// ------------------------------------------------------------------ f32 / f64 against the reference
void test_against_reference(DType dt, double atol, double rtol) {
  uint64_t seed = 1;
  for (const Case& c : cases()) {
    Problem p = make_problem(c, dt, seed++);
    Ref r = reference(p);
    Outs o = run_fwd(p, dt == DType::F64 ? DType::F64 : DType::F32);
    std::string n = std::string(dtype_name(dt)) + " " + c.name();
    expect_close("fwd out " + n, values(o.out.view), r.out, atol, rtol);
    expect_close("fwd lse " + n, values(o.lse.view), r.lse, atol, rtol);
    run_bwd(p, o);
    expect_close("bwd dq " + n, values(o.dq.view), r.dq, atol, rtol);
    expect_close("bwd dk " + n, values(o.dk.view), r.dk, atol, rtol);
    expect_close("bwd dv " + n, values(o.dv.view), r.dv, atol, rtol);
  }
}

// A row with no visible key: out 0, lse -inf, gradients 0, nothing NaN (f32, causal T > S and a dead mask).
void test_dead_rows() {
  Case c{1, 2, 1, 40, 10, 16, true, MaskKind::DeadRow, Layout::Contig};
  Problem p = make_problem(c, DType::F32, 99);
  Outs o = run_fwd(p);
  run_bwd(p, o);
  bool ok = true;
  for (int64_t h = 0; h < c.H; h++)
    for (int64_t t = 0; t < c.T; t++) {
      bool any = false;
      for (int64_t j = 0; j < c.S; j++) any = any || p.visible(0, h, t, j);
      int64_t row = h * c.T + t;
      double l = get(o.lse.view, row);
      if (!any && !(l == -kInf)) ok = false;
      for (int64_t d = 0; d < c.D; d++) {
        double ov = get(o.out.view, row * c.D + d), g = get(o.dq.view, row * c.D + d);
        if (!std::isfinite(ov) || !std::isfinite(g) || (!any && (ov != 0 || g != 0))) ok = false;
      }
    }
  for (auto* t : {&o.dk, &o.dv})
    for (int64_t i = 0; i < t->view.numel(); i++)
      if (!std::isfinite(get(t->view, i))) ok = false;
  report(ok, "dead rows give 0 / -inf / finite gradients");
}

// Central finite differences of L = sum(out * dout) in f64 against the backward kernel.
void test_finite_differences() {
  const std::vector<Case> fd_cases = {
      {1, 2, 1, 5, 7, 3, true, MaskKind::None, Layout::Contig},
      {1, 4, 2, 6, 6, 5, false, MaskKind::Random, Layout::Permuted},
      {2, 2, 2, 1, 9, 4, false, MaskKind::KeyPad, Layout::Padded},
      {1, 2, 1, 7, 4, 3, true, MaskKind::DeadRow, Layout::Contig},
  };
  uint64_t seed = 500;
  for (const Case& c : fd_cases) {
    Problem p = make_problem(c, DType::F64, seed++);
    Outs o = run_fwd(p, DType::F64);
    run_bwd(p, o);
    auto loss = [&]() {
      Outs f = run_fwd(p, DType::F64);
      auto out = values(f.out.view), g = values(p.dout.view);
      double s = 0;
      for (size_t i = 0; i < out.size(); i++) s += out[i] * g[i];
      return s;
    };
    const double h = 1e-5;
    struct Pair {
      const char* name;
      HostTensor* x;
      HostTensor* grad;
    } pairs[] = {{"dq", &p.q, &o.dq}, {"dk", &p.k, &o.dk}, {"dv", &p.v, &o.dv}};
    for (auto& pr : pairs) {
      const TensorArg& x = pr.x->view;
      std::vector<double> num(x.numel()), ana = values(pr.grad->view);
      for (int64_t i = 0; i < x.numel(); i++) {
        int64_t off = strided_offset(x, i);
        double x0 = get(x, off);
        put(x, off, x0 + h);
        double lp = loss();
        put(x, off, x0 - h);
        double lm = loss();
        put(x, off, x0);
        num[i] = (lp - lm) / (2 * h);
      }
      expect_close(std::string("finite-diff ") + pr.name + " " + c.name(), ana, num, 1e-7, 1e-6);
    }
  }
}

// bf16 / f16: flash-attention tolerance rule for out, a relative bound for lse and gradients.
void test_low_precision(DType dt) {
  const double grad_rel = dt == DType::BF16 ? 1.0 / 64 : 1.0 / 512;
  uint64_t seed = 1000;
  for (const Case& c : cases()) {
    Problem p = make_problem(c, dt, seed++);
    Ref r = reference(p);
    Outs o = run_fwd(p);
    std::string n = std::string(dtype_name(dt)) + " " + c.name();
    Cmp ck = compare(values(o.out.view), r.out, kInf, 0);
    Cmp cn = compare(naive_lowp_out(p), r.out, kInf, 0);
    char buf[160];
    std::snprintf(buf, sizeof buf, "kernel max_err %.3g vs naive %s max_err %.3g", ck.max_err, dtype_name(dt),
                  cn.max_err);
    report(ck.ok && ck.max_err <= 2 * cn.max_err + 1e-6, "fwd out (flash-attention rule) " + n, buf);
    expect_close("fwd lse " + n, values(o.lse.view), r.lse, 1e-4, 1e-5);  // lse is f32 from f32 math
    run_bwd(p, o);
    auto rel_check = [&](const char* what, const HostTensor& got, const std::vector<double>& ref) {
      Cmp cc = compare(values(got.view), ref, kInf, 0);
      char b2[160];
      std::snprintf(b2, sizeof b2, "max_err %.3g max|ref| %.3g", cc.max_err, cc.max_ref);
      report(cc.ok && cc.max_err <= grad_rel * cc.max_ref + 1e-6, std::string("bwd ") + what + " " + n, b2);
    };
    rel_check("dq", o.dq, r.dq);
    rel_check("dk", o.dk, r.dk);
    rel_check("dv", o.dv, r.dv);
  }
}

// The same call twice gives bit-identical results (no order-dependent reductions).
void test_deterministic() {
  Case c{1, 4, 1, 100, 100, 64, true, MaskKind::None, Layout::Contig};
  Problem p = make_problem(c, DType::F32, 7);
  Outs a = run_fwd(p), b = run_fwd(p);
  run_bwd(p, a);
  run_bwd(p, b);
  bool same = values(a.out.view) == values(b.out.view) && values(a.dq.view) == values(b.dq.view) &&
              values(a.dk.view) == values(b.dk.view) && values(a.dv.view) == values(b.dv.view);
  report(same, "deterministic fwd/bwd");
}

// ------------------------------------------------------------------ invalid calls

void test_invalid() {
  const DType F = DType::F32;
  auto q = make_contiguous(F, {1, 4, 8, 16}), k = make_contiguous(F, {1, 2, 10, 16}),
       v = make_contiguous(F, {1, 2, 10, 16});
  auto out = make_contiguous(F, {1, 4, 8, 16}), lse = make_contiguous(F, {1, 4, 8});
  auto dq = make_contiguous(F, {1, 4, 8, 16}), dk = make_contiguous(F, {1, 2, 10, 16}),
       dv = make_contiguous(F, {1, 2, 10, 16});
  auto dout = make_contiguous(F, {1, 4, 8, 16});
  const KernelArg none = std::monostate{};
  auto fwd = [&](std::vector<KernelArg> a) { return [a] { call("attention_fwd", a); }; };
  auto bwd = [&](std::vector<KernelArg> a) { return [a] { call("attention_bwd", a); }; };
  // A well-formed call first, so the failures below are about what they change.
  try {
    call("attention_fwd", {out.view, lse.view, q.view, k.view, v.view, none, true, 0.25});
    call("attention_bwd",
         {dq.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view, lse.view, none, true, 0.25});
    report(true, "valid call accepted");
  } catch (const std::exception& e) { report(false, "valid call rejected", e.what()); }
  expect_throw("fwd missing args", fwd({out.view, lse.view, q.view, k.view, v.view}));
  expect_throw("fwd no args", fwd({}));
  expect_throw("bwd missing lse", bwd({dq.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view}));
  expect_throw("bwd lse null",
               bwd({dq.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view, none, none, true, 0.25}));
  expect_throw("number for a tensor", fwd({out.view, lse.view, 1.0, k.view, v.view, none, true, 0.25}));
  expect_throw("causal not a bool", fwd({out.view, lse.view, q.view, k.view, v.view, none, 1.0, 0.25}));
  expect_throw("scale NaN", fwd({out.view, lse.view, q.view, k.view, v.view, none, true, std::nan("")}));
  auto q3 = make_contiguous(F, {4, 8, 16});
  expect_throw("q 3-D", fwd({out.view, lse.view, q3.view, k.view, v.view, none, true, 0.25}));
  auto k64 = make_contiguous(DType::F64, {1, 2, 10, 16});
  expect_throw("k dtype differs", fwd({out.view, lse.view, q.view, k64.view, v.view, none, true, 0.25}));
  auto qi = make_contiguous(DType::I32, {1, 4, 8, 16}), oi = make_contiguous(DType::I32, {1, 4, 8, 16});
  auto ki = make_contiguous(DType::I32, {1, 2, 10, 16});
  expect_throw("integer dtype", fwd({oi.view, lse.view, qi.view, ki.view, ki.view, none, true, 0.25}));
  auto k3 = make_contiguous(F, {1, 3, 10, 16}), v3 = make_contiguous(F, {1, 3, 10, 16});
  expect_throw("H % Hkv != 0", fwd({out.view, lse.view, q.view, k3.view, v3.view, none, true, 0.25}));
  auto k0 = make_contiguous(F, {1, 0, 10, 16});
  expect_throw("Hkv = 0", fwd({out.view, lse.view, q.view, k0.view, k0.view, none, true, 0.25}));
  auto kd = make_contiguous(F, {1, 2, 10, 8});
  expect_throw("k head dim differs", fwd({out.view, lse.view, q.view, kd.view, v.view, none, true, 0.25}));
  auto vs = make_contiguous(F, {1, 2, 11, 16});
  expect_throw("v length differs", fwd({out.view, lse.view, q.view, k.view, vs.view, none, true, 0.25}));
  auto kb = make_contiguous(F, {2, 2, 10, 16});
  expect_throw("k batch differs", fwd({out.view, lse.view, q.view, kb.view, kb.view, none, true, 0.25}));
  auto ow = make_contiguous(F, {1, 4, 9, 16});
  expect_throw("out shape", fwd({ow.view, lse.view, q.view, k.view, v.view, none, true, 0.25}));
  auto onc = make4(F, 1, 4, 8, 16, Layout::Permuted);
  expect_throw("out not contiguous", fwd({onc.view, lse.view, q.view, k.view, v.view, none, true, 0.25}));
  auto lb = make_contiguous(DType::BF16, {1, 4, 8});
  expect_throw("lse bf16", fwd({out.view, lb.view, q.view, k.view, v.view, none, true, 0.25}));
  auto ls = make_contiguous(F, {1, 4, 9});
  expect_throw("lse shape", fwd({out.view, ls.view, q.view, k.view, v.view, none, true, 0.25}));
  auto mu8 = make_contiguous(DType::U8, {1, 4, 8, 10});
  expect_throw("mask u8", fwd({out.view, lse.view, q.view, k.view, v.view, mu8.view, true, 0.25}));
  auto mbad = make_contiguous(DType::BOOL, {1, 4, 8, 9});
  expect_throw("mask shape", fwd({out.view, lse.view, q.view, k.view, v.view, mbad.view, true, 0.25}));
  auto m3 = make_contiguous(DType::BOOL, {4, 8, 10});
  expect_throw("mask 3-D", fwd({out.view, lse.view, q.view, k.view, v.view, m3.view, true, 0.25}));
  HostTensor qt = q;  // last stride 2
  qt.view.strides[3] = 2;
  qt.view.shape[3] = 8;
  auto o8 = make_contiguous(F, {1, 4, 8, 8}), k8 = make_contiguous(F, {1, 2, 10, 8});
  expect_throw("q last stride != 1", fwd({o8.view, lse.view, qt.view, k8.view, k8.view, none, true, 0.25}));
  auto qd0 = make_contiguous(F, {1, 4, 8, 0}), kd0 = make_contiguous(F, {1, 2, 10, 0});
  expect_throw("D = 0", fwd({qd0.view, lse.view, qd0.view, kd0.view, kd0.view, none, true, 0.25}));
  expect_throw("out aliases q", fwd({q.view, lse.view, q.view, k.view, v.view, none, true, 0.25}));
  HostTensor lse_in_out = out;  // lse overlapping out's storage
  lse_in_out.view.ndim = 3;
  lse_in_out.view.shape[0] = 1, lse_in_out.view.shape[1] = 4, lse_in_out.view.shape[2] = 8;
  lse_in_out.view.strides[0] = 32, lse_in_out.view.strides[1] = 8, lse_in_out.view.strides[2] = 1;
  expect_throw("lse aliases out", fwd({out.view, lse_in_out.view, q.view, k.view, v.view, none, true, 0.25}));
  // backward
  expect_throw("bwd dk shape", bwd({dq.view, dq.view, dv.view, q.view, k.view, v.view, out.view, dout.view, lse.view,
                                    none, true, 0.25}));
  auto dqnc = make4(F, 1, 4, 8, 16, Layout::Permuted);
  expect_throw("bwd dq not contiguous", bwd({dqnc.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view,
                                             lse.view, none, true, 0.25}));
  auto dout64 = make_contiguous(DType::F64, {1, 4, 8, 16});
  expect_throw("bwd dout dtype", bwd({dq.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout64.view,
                                      lse.view, none, true, 0.25}));
  auto dv16 = make_contiguous(DType::F16, {1, 2, 10, 16});
  expect_throw("bwd dv dtype", bwd({dq.view, dk.view, dv16.view, q.view, k.view, v.view, out.view, dout.view, lse.view,
                                    none, true, 0.25}));
  expect_throw("bwd dq aliases dout", bwd({dout.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view,
                                           lse.view, none, true, 0.25}));
  expect_throw("bwd dk aliases dv", bwd({dq.view, dk.view, dk.view, q.view, k.view, v.view, out.view, dout.view,
                                         lse.view, none, true, 0.25}));
  expect_throw("bwd H % Hkv", bwd({dq.view, k3.view, v3.view, q.view, k3.view, v3.view, out.view, dout.view, lse.view,
                                   none, true, 0.25}));
  expect_throw("bwd lse shape", bwd({dq.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view, ls.view,
                                     none, true, 0.25}));
  expect_throw("bwd out shape", bwd({dq.view, dk.view, dv.view, q.view, k.view, v.view, ow.view, dout.view, lse.view,
                                     none, true, 0.25}));
  expect_throw("bwd mask shape", bwd({dq.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view, lse.view,
                                      mbad.view, true, 0.25}));
}

}  // namespace

int main() {
  test_against_reference(DType::F32, 2e-5, 2e-4);
  test_against_reference(DType::F64, 1e-10, 1e-10);
  {  // f32 inputs with an f64 lse (accepted so either stat dtype works)
    Problem p = make_problem(cases()[4], DType::F32, 77);
    Ref r = reference(p);
    Outs o = run_fwd(p, DType::F64);
    expect_close("f64 lse with f32 inputs", values(o.lse.view), r.lse, 2e-5, 2e-4);
    run_bwd(p, o);
    expect_close("bwd dq with f64 lse", values(o.dq.view), r.dq, 2e-5, 2e-4);
  }
  test_dead_rows();
  test_finite_differences();
  test_low_precision(DType::BF16);
  test_low_precision(DType::F16);
  test_deterministic();
  test_invalid();
  std::printf("attention_test: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
