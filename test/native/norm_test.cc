// norm_test.cc — kernel lab for `layer_norm_fwd/bwd` and `rms_norm_fwd/bwd` on the CPU (llm.c style).
//
// Forward is checked against a double-precision reference over the same (rounded) inputs; backward
// against a naive double backward that multiplies dy by the explicit C x C Jacobian of each row (an
// independent derivation from the kernel's closed form), and in f64 against central finite
// differences of L = sum(y * dy). Shapes: C = 1 (var 0), C not a multiple of 8 (SIMD tails), 3-D x,
// N large enough that dw/db are reduced over several per-thread partials (600 x 64, 2001 x 17); with
// and without w / b, with dw/db absent (frozen), f32 and f64 statistics.
//
// Tolerances (|got - ref| <= atol + rtol |ref|):
//   f32: atol 1e-5, rtol 1e-5 for y/dx (f32 row sums of O(1) values: errors ~1e-6); dw/db (sums over N
//        rows) atol 1e-5 * sqrt(N).
//   f64: 1e-11 (1e-6 * max(1, rstd) for the backward when the statistics are f32); finite differences (h = 1e-5): 1e-7 + 1e-6 |g|.
//   bf16/f16 forward: rtol 2^-7 (bf16) / 2^-10 (f16) against the exact reference — one or two
//        roundings to the storage type (RMSNorm rounds h, then y, as HF does) — plus atol 1e-5.
//   bf16/f16 backward: max error <= 2^-6 (bf16) / 2^-9 (f16) of max|ref| (input-precision roundings,
//        and HF's rounding of dy * w in RMSNorm, against an exact reference).
// Then invalid calls must throw KernelError. Prints "N passed, N failed"; exit 1 on failure.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>

#include "native_util.h"

using namespace llava_native;

namespace {

HostTensor filled(DType dt, std::vector<int64_t> shape, Rng& rng, double amp, double shift = 0) {
  HostTensor t = make_contiguous(dt, shape);
  for (int64_t i = 0; i < t.view.numel(); i++) put(t.view, i, shift + amp * rng.uniform());
  return t;
}

struct Cmp {
  double max_err = 0, max_ref = 0;
  bool ok = true;
};
Cmp compare(const std::vector<double>& got, const std::vector<double>& ref, double atol, double rtol) {
  Cmp c;
  if (got.size() != ref.size()) c.ok = false;
  for (size_t i = 0; i < got.size() && i < ref.size(); i++) {
    if (!std::isfinite(got[i])) {
      c.ok = false;
      continue;
    }
    double e = std::fabs(got[i] - ref[i]);
    c.max_err = std::max(c.max_err, e);
    c.max_ref = std::max(c.max_ref, std::fabs(ref[i]));
    if (e > atol + rtol * std::fabs(ref[i])) c.ok = false;
  }
  return c;
}
void expect_close(const std::string& name, const std::vector<double>& got, const std::vector<double>& ref, double atol,
                  double rtol) {
  Cmp c = compare(got, ref, atol, rtol);
  char buf[120];
  std::snprintf(buf, sizeof buf, "max_err %.3g max|ref| %.3g", c.max_err, c.max_ref);
  report(c.ok, name, buf);
}
void expect_rel(const std::string& name, const std::vector<double>& got, const std::vector<double>& ref, double rel) {
  Cmp c = compare(got, ref, std::numeric_limits<double>::infinity(), 0);
  char buf[120];
  std::snprintf(buf, sizeof buf, "max_err %.3g max|ref| %.3g", c.max_err, c.max_ref);
  report(c.ok && c.max_err <= rel * c.max_ref + 1e-6, name, buf);
}

// ------------------------------------------------------------------ references (double)
struct Ref {
  std::vector<double> y, mean, rstd, dx, dw, db;
};

// kind 0 = LayerNorm, 1 = RMSNorm. w/b empty when absent.
Ref reference(int kind, const std::vector<double>& x, const std::vector<double>& w, const std::vector<double>& b,
              const std::vector<double>& dy, int64_t N, int64_t C, double eps) {
  Ref r;
  r.y.resize(N * C);
  r.dx.assign(N * C, 0);
  r.dw.assign(C, 0);
  r.db.assign(C, 0);
  r.mean.resize(N);
  r.rstd.resize(N);
  std::vector<double> xh(C);
  for (int64_t n = 0; n < N; n++) {
    const double* xr = &x[n * C];
    double mu = 0, var = 0;
    if (kind == 0) {
      for (int64_t c = 0; c < C; c++) mu += xr[c];
      mu /= C;
    }
    for (int64_t c = 0; c < C; c++) var += (xr[c] - mu) * (xr[c] - mu);
    var /= C;
    double rs = 1 / std::sqrt(var + eps);
    r.mean[n] = mu;
    r.rstd[n] = rs;
    for (int64_t c = 0; c < C; c++) {
      xh[c] = (xr[c] - mu) * rs;
      r.y[n * C + c] = xh[c] * (w.empty() ? 1 : w[c]) + (b.empty() ? 0 : b[c]);
      r.dw[c] += dy[n * C + c] * xh[c];
      r.db[c] += dy[n * C + c];
    }
    // dx_k = sum_i g_i d(xh_i)/d(x_k), with the Jacobian written out:
    //   LayerNorm d xh_i / d x_k = rs (delta_ik - 1/C - xh_i xh_k / C);  RMSNorm: rs (delta_ik - xh_i xh_k / C)
    for (int64_t k = 0; k < C; k++) {
      double s = 0;
      for (int64_t i = 0; i < C; i++) {
        double g = dy[n * C + i] * (w.empty() ? 1 : w[i]);
        double J = rs * ((i == k) - (kind == 0 ? 1.0 / C : 0.0) - xh[i] * xh[k] / C);
        s += g * J;
      }
      r.dx[n * C + k] = s;
    }
  }
  return r;
}

// ------------------------------------------------------------------ one configuration
struct Config {
  int kind;  // 0 LayerNorm, 1 RMSNorm
  std::vector<int64_t> shape;
  bool has_w, has_b, want_dw, want_db;
  DType stats;
};
std::string describe(const Config& c, DType dt) {
  std::string s = c.kind == 0 ? "layer_norm" : "rms_norm";
  s += std::string(" ") + dtype_name(dt) + " [";
  for (size_t i = 0; i < c.shape.size(); i++) s += (i ? "," : "") + std::to_string(c.shape[i]);
  s += "]";
  if (c.has_w) s += " w";
  if (c.has_b) s += " b";
  if (c.want_dw) s += " dw";
  if (c.want_db) s += " db";
  s += std::string(" stats=") + dtype_name(c.stats);
  return s;
}

struct Run {
  HostTensor x, w, b, dy, y, mean, rstd, dx, dw, db;
  int64_t N, C;
};

KernelArg opt(bool present, const HostTensor& t) { return present ? KernelArg(t.view) : KernelArg(std::monostate{}); }

Run run_case(const Config& c, DType dt, uint64_t seed, double eps, DType grad_dt = DType::F32) {
  Rng rng(seed);
  Run r;
  r.C = c.shape.back();
  r.N = 1;
  for (size_t i = 0; i + 1 < c.shape.size(); i++) r.N *= c.shape[i];
  r.x = filled(dt, c.shape, rng, 2.0, 0.5);  // an offset, so the mean matters
  r.w = filled(dt, {r.C}, rng, 1.0, 1.0);
  r.b = filled(dt, {r.C}, rng, 1.0);
  r.dy = filled(dt, c.shape, rng, 1.0);
  r.y = make_contiguous(dt, c.shape);
  r.mean = make_contiguous(c.stats, {r.N});
  r.rstd = make_contiguous(c.stats, {r.N});
  r.dx = make_contiguous(dt, c.shape);
  r.dw = make_contiguous(grad_dt, {r.C});
  r.db = make_contiguous(grad_dt, {r.C});
  if (c.kind == 0) {
    call("layer_norm_fwd", {r.y.view, r.mean.view, r.rstd.view, r.x.view, opt(c.has_w, r.w), opt(c.has_b, r.b), eps});
    call("layer_norm_bwd", {r.dx.view, opt(c.want_dw, r.dw), opt(c.want_db, r.db), r.dy.view, r.x.view,
                            opt(c.has_w, r.w), r.mean.view, r.rstd.view});
  } else {
    call("rms_norm_fwd", {r.y.view, r.rstd.view, r.x.view, opt(c.has_w, r.w), eps});
    call("rms_norm_bwd", {r.dx.view, opt(c.want_dw, r.dw), r.dy.view, r.x.view, opt(c.has_w, r.w), r.rstd.view});
  }
  return r;
}

std::vector<Config> configs() {
  std::vector<Config> cs;
  const std::vector<std::vector<int64_t>> shapes = {{1, 1},    {3, 7},    {17, 64},  {2, 3, 33}, {5, 1000},
                                                    {300, 24}, {1, 4096}, {600, 64}, {2001, 17}};
  for (int kind = 0; kind < 2; kind++)
    for (const auto& s : shapes) {
      cs.push_back({kind, s, true, kind == 0, true, kind == 0, DType::F32});
      cs.push_back({kind, s, false, false, false, false, DType::F64});
    }
  cs.push_back({0, {9, 40}, true, false, true, false, DType::F32});   // w, no b
  cs.push_back({0, {9, 40}, false, true, false, true, DType::F32});   // b, no w
  cs.push_back({0, {9, 40}, true, true, false, true, DType::F64});    // frozen w, trained b
  cs.push_back({0, {9, 40}, true, true, false, false, DType::F32});   // both frozen
  cs.push_back({1, {9, 40}, true, false, false, false, DType::F32});  // frozen RMS weight
  return cs;
}

void check_against_reference(DType dt) {
  const double eps = 1e-5;
  uint64_t seed = 1;
  for (const Config& c : configs()) {
    Run r = run_case(c, dt, seed++, eps, dt == DType::F64 ? DType::F64 : DType::F32);
    auto x = values(r.x.view), dy = values(r.dy.view);
    std::vector<double> w = c.has_w ? values(r.w.view) : std::vector<double>();
    std::vector<double> b = c.has_b ? values(r.b.view) : std::vector<double>();
    Ref ref = reference(c.kind, x, w, b, dy, r.N, r.C, eps);
    std::string n = describe(c, dt);
    const bool lowp = dt == DType::BF16 || dt == DType::F16;
    const double u = dt == DType::BF16 ? 1.0 / 128 : 1.0 / 1024;  // forward rtol for 16-bit
    const double g = dt == DType::BF16 ? 1.0 / 64 : 1.0 / 512;    // backward, relative to max|ref|
    // f64 inputs with f32 statistics: the backward sees mean and rstd rounded to f32 (~6e-8 relative),
    // and a mean error becomes an xh error times rstd (316 for a C = 1 row: var 0, eps 1e-5).
    double max_rstd = *std::max_element(ref.rstd.begin(), ref.rstd.end());
    double tol = dt == DType::F64 ? (c.stats == DType::F64 ? 1e-11 : 1e-6 * std::max(1.0, max_rstd)) : 1e-5;
    double stat_tol = c.stats == DType::F32 || dt != DType::F64 ? 1e-5 : 1e-11;
    if (lowp)
      expect_close("fwd y " + n, values(r.y.view), ref.y, 1e-5, u);
    else
      expect_close("fwd y " + n, values(r.y.view), ref.y, tol, tol);
    if (c.kind == 0) expect_close("fwd mean " + n, values(r.mean.view), ref.mean, stat_tol, stat_tol);
    expect_close("fwd rstd " + n, values(r.rstd.view), ref.rstd, stat_tol, stat_tol);
    if (lowp)
      expect_rel("bwd dx " + n, values(r.dx.view), ref.dx, g);
    else
      expect_close("bwd dx " + n, values(r.dx.view), ref.dx, tol, tol);
    const double red = tol * std::sqrt(double(r.N));
    if (c.want_dw) {
      if (lowp)
        expect_rel("bwd dw " + n, values(r.dw.view), ref.dw, g);
      else
        expect_close("bwd dw " + n, values(r.dw.view), ref.dw, red, tol);
    }
    if (c.want_db) {
      if (lowp)
        expect_rel("bwd db " + n, values(r.db.view), ref.db, g);
      else
        expect_close("bwd db " + n, values(r.db.view), ref.db, red, tol);
    }
    // absent gradients must stay untouched (zero-initialised buffers)
    if (!c.want_dw) report(values(r.dw.view) == std::vector<double>(r.C, 0.0), "dw untouched when absent " + n);
  }
}

// HF LlamaRMSNorm in bf16 rounds h = x * rstd to bf16 before * w: check that exact chain.
void check_rms_hf_rounding() {
  Config c{1, {8, 40}, true, false, false, false, DType::F32};
  Run r = run_case(c, DType::BF16, 42, 1e-6);
  auto x = values(r.x.view), w = values(r.w.view), rs = values(r.rstd.view), y = values(r.y.view);
  bool ok = true;
  for (int64_t n = 0; n < r.N; n++)
    for (int64_t i = 0; i < r.C; i++) {
      bf16 h, out;
      store(&h, float(float(x[n * r.C + i]) * float(rs[n])));
      store(&out, load(&h) * float(w[i]));
      if (double(load(&out)) != y[n * r.C + i]) ok = false;
    }
  report(ok, "rms_norm bf16 matches HF rounding chain bit-for-bit");
}

// Central finite differences in f64 of L = sum(y * dy) with respect to x, w, b.
void check_finite_differences() {
  const double h = 1e-5, eps = 1e-3;
  const std::vector<Config> cs = {
      {0, {3, 5}, true, true, true, true, DType::F64},
      {0, {2, 11}, false, false, false, false, DType::F64},
      {1, {3, 9}, true, false, true, false, DType::F64},
      {1, {2, 1}, false, false, false, false, DType::F64},
  };
  uint64_t seed = 100;
  for (const Config& c : cs) {
    Run r = run_case(c, DType::F64, seed++, eps, DType::F64);
    auto loss = [&]() {
      HostTensor y = make_contiguous(DType::F64, c.shape), m = make_contiguous(DType::F64, {r.N}),
                 s = make_contiguous(DType::F64, {r.N});
      if (c.kind == 0)
        call("layer_norm_fwd", {y.view, m.view, s.view, r.x.view, opt(c.has_w, r.w), opt(c.has_b, r.b), eps});
      else
        call("rms_norm_fwd", {y.view, s.view, r.x.view, opt(c.has_w, r.w), eps});
      auto yv = values(y.view), g = values(r.dy.view);
      double L = 0;
      for (size_t i = 0; i < yv.size(); i++) L += yv[i] * g[i];
      return L;
    };
    auto fd = [&](HostTensor& t) {
      std::vector<double> num(t.view.numel());
      for (int64_t i = 0; i < t.view.numel(); i++) {
        double x0 = get(t.view, i);
        put(t.view, i, x0 + h);
        double lp = loss();
        put(t.view, i, x0 - h);
        double lm = loss();
        put(t.view, i, x0);
        num[i] = (lp - lm) / (2 * h);
      }
      return num;
    };
    std::string n = describe(c, DType::F64);
    expect_close("finite-diff dx " + n, values(r.dx.view), fd(r.x), 1e-7, 1e-6);
    if (c.want_dw) expect_close("finite-diff dw " + n, values(r.dw.view), fd(r.w), 1e-7, 1e-6);
    if (c.want_db) expect_close("finite-diff db " + n, values(r.db.view), fd(r.b), 1e-7, 1e-6);
  }
}

// ------------------------------------------------------------------ invalid calls

void check_invalid() {
  const DType F = DType::F32;
  auto x = make_contiguous(F, {4, 8}), y = make_contiguous(F, {4, 8}), w = make_contiguous(F, {8}),
       b = make_contiguous(F, {8});
  auto mean = make_contiguous(F, {4}), rstd = make_contiguous(F, {4}), dy = make_contiguous(F, {4, 8});
  auto dx = make_contiguous(F, {4, 8}), dw = make_contiguous(F, {8}), db = make_contiguous(F, {8});
  const KernelArg none = std::monostate{};
  auto k = [](const char* name, std::vector<KernelArg> a) { return [name, a] { call(name, a); }; };
  try {
    call("layer_norm_fwd", {y.view, mean.view, rstd.view, x.view, w.view, b.view, 1e-5});
    call("layer_norm_bwd", {dx.view, dw.view, db.view, dy.view, x.view, w.view, mean.view, rstd.view});
    call("rms_norm_fwd", {y.view, rstd.view, x.view, w.view, 1e-5});
    call("rms_norm_bwd", {dx.view, dw.view, dy.view, x.view, w.view, rstd.view});
    report(true, "valid calls accepted");
  } catch (const std::exception& e) { report(false, "valid call rejected", e.what()); }
  expect_throw("ln fwd missing eps", k("layer_norm_fwd", {y.view, mean.view, rstd.view, x.view, w.view, b.view}));
  expect_throw("ln fwd no args", k("layer_norm_fwd", {}));
  expect_throw("rms bwd missing rstd", k("rms_norm_bwd", {dx.view, dw.view, dy.view, x.view, w.view}));
  expect_throw("rms bwd rstd null", k("rms_norm_bwd", {dx.view, dw.view, dy.view, x.view, w.view, none}));
  expect_throw("eps negative", k("rms_norm_fwd", {y.view, rstd.view, x.view, w.view, -1.0}));
  expect_throw("eps NaN", k("layer_norm_fwd", {y.view, mean.view, rstd.view, x.view, w.view, b.view, std::nan("")}));
  expect_throw("eps a string", k("rms_norm_fwd", {y.view, rstd.view, x.view, w.view, std::string("1e-5")}));
  auto xi = make_contiguous(DType::I32, {4, 8}), yi = make_contiguous(DType::I32, {4, 8});
  expect_throw("x int32", k("rms_norm_fwd", {yi.view, rstd.view, xi.view, none, 1e-5}));
  auto y64 = make_contiguous(DType::F64, {4, 8});
  expect_throw("y dtype differs", k("rms_norm_fwd", {y64.view, rstd.view, x.view, w.view, 1e-5}));
  auto y2 = make_contiguous(F, {4, 9});
  expect_throw("y shape differs", k("layer_norm_fwd", {y2.view, mean.view, rstd.view, x.view, w.view, b.view, 1e-5}));
  auto mb = make_contiguous(DType::BF16, {4});
  expect_throw("mean bf16", k("layer_norm_fwd", {y.view, mb.view, rstd.view, x.view, w.view, b.view, 1e-5}));
  auto m5 = make_contiguous(F, {5});
  expect_throw("rstd numel", k("rms_norm_fwd", {y.view, m5.view, x.view, w.view, 1e-5}));
  auto w9 = make_contiguous(F, {9});
  expect_throw("w shape", k("layer_norm_fwd", {y.view, mean.view, rstd.view, x.view, w9.view, b.view, 1e-5}));
  auto wb = make_contiguous(DType::BF16, {8});
  expect_throw("w dtype", k("rms_norm_fwd", {y.view, rstd.view, x.view, wb.view, 1e-5}));
  HostTensor xt = x;  // transposed view: not contiguous
  xt.view.strides[0] = 1, xt.view.strides[1] = 4, xt.view.shape[0] = 8, xt.view.shape[1] = 4;
  auto y84 = make_contiguous(F, {8, 4}), r8 = make_contiguous(F, {8}), w4 = make_contiguous(F, {4});
  expect_throw("x not contiguous", k("rms_norm_fwd", {y84.view, r8.view, xt.view, w4.view, 1e-5}));
  expect_throw("y aliases x", k("rms_norm_fwd", {x.view, rstd.view, x.view, w.view, 1e-5}));
  expect_throw("rstd aliases mean", k("layer_norm_fwd", {y.view, mean.view, mean.view, x.view, w.view, b.view, 1e-5}));
  expect_throw("dw without w", k("rms_norm_bwd", {dx.view, dw.view, dy.view, x.view, none, rstd.view}));
  expect_throw("ln dw without w",
               k("layer_norm_bwd", {dx.view, dw.view, db.view, dy.view, x.view, none, mean.view, rstd.view}));
  expect_throw("dw shape",
               k("layer_norm_bwd", {dx.view, w9.view, db.view, dy.view, x.view, w.view, mean.view, rstd.view}));
  auto dwi = make_contiguous(DType::I32, {8});
  expect_throw("db int32",
               k("layer_norm_bwd", {dx.view, dw.view, dwi.view, dy.view, x.view, w.view, mean.view, rstd.view}));
  expect_throw("dx aliases dy",
               k("layer_norm_bwd", {dy.view, dw.view, db.view, dy.view, x.view, w.view, mean.view, rstd.view}));
  expect_throw("dw aliases db",
               k("layer_norm_bwd", {dx.view, dw.view, dw.view, dy.view, x.view, w.view, mean.view, rstd.view}));
  auto dy2 = make_contiguous(F, {4, 9});
  expect_throw("dy shape", k("rms_norm_bwd", {dx.view, dw.view, dy2.view, x.view, w.view, rstd.view}));
  auto x0 = make_contiguous(F, {4, 0}), y0 = make_contiguous(F, {4, 0});
  expect_throw("C = 0", k("rms_norm_fwd", {y0.view, rstd.view, x0.view, none, 1e-5}));
  auto xs = make_contiguous(F, {}), ys = make_contiguous(F, {});
  expect_throw("0-d x", k("rms_norm_fwd", {ys.view, rstd.view, xs.view, none, 1e-5}));
}

}  // namespace

int main() {
  check_against_reference(DType::F32);
  check_against_reference(DType::F64);
  check_against_reference(DType::BF16);
  check_against_reference(DType::F16);
  check_rms_hf_rounding();
  check_finite_differences();
  {  // an empty batch is fine (nothing to do)
    auto x = make_contiguous(DType::F32, {0, 8}), y = make_contiguous(DType::F32, {0, 8}),
         s = make_contiguous(DType::F32, {0});
    try {
      call("rms_norm_fwd", {y.view, s.view, x.view, std::monostate{}, 1e-5});
      report(true, "empty batch");
    } catch (const std::exception& e) { report(false, "empty batch", e.what()); }
  }
  check_invalid();
  std::printf("norm_test: %d passed, %d failed\n", g_pass, g_fail);
  return g_fail ? 1 : 0;
}
