// matmul_test.cc — kernel lab for `matmul` on the CPU (llm.c style): every case is checked against a
// naive double-precision loop over the same (already rounded) inputs, then a few invalid calls must
// throw KernelError. Exits non-zero on any failure; prints "N passed, N failed".
//
// Shapes cover the edges of the blocked kernel: 1x1x1, sizes that are not multiples of any tile
// (7x13x5, 37x129x70), row and column vectors (GEMV path), K spanning several KC blocks, M past
// MC, N past NC, batches with stride-0 broadcast, and operands that are row-major, transposed
// (swapped strides) or generally strided with an offset. Every case runs on each micro-kernel the
// CPU has: portable, avx2, avx512 (set_cpu_isa_cap, see cpp/cpu_isa.h).
//
// Tolerance: |out - ref| <= u_acc * (2*sqrt(K) + 8) * S + 2 * u_out * |ref|, with S = sum_k |a*b| +
// |bias| + |beta*old| (the scale rounding errors are proportional to), u_acc the unit roundoff of
// the accumulation type (f32 for f32/bf16/f16, f64 for f64) and u_out that of the output dtype (one
// final rounding). sqrt(K) is the usual growth of a blocked sum's error; a wrong element or a missed
// K block is off by O(S), orders of magnitude above this.
//
// Epilogues ('gelu', 'gelu_tanh'; optional 6th argument): the reference is act(sum + bias) +
// beta*old in double. GELU's slope is at most ~1.13, so the pre-activation bound is scaled by 1.25,
// and the activation's own rounding (a few ulps of the accumulation type times |pre|) is covered by
// the existing u_acc * 8 * S term (S >= |pre|). Applying beta before act, skipping the bias or using
// the other GELU form is off by far more on these shapes.
#include <cmath>
#include <cstdio>

#include "cpu_isa.h"
#include "native_util.h"

using namespace llava_native;

namespace {

// How an operand [Bt, R, C] is laid out in memory.
enum class Layout { Row, Col, Strided, BcastRow, BcastCol };
const char* layout_name(Layout l) {
  switch (l) {
    case Layout::Row:
      return "row";
    case Layout::Col:
      return "col";
    case Layout::Strided:
      return "strided";
    case Layout::BcastRow:
      return "bcast-row";
    case Layout::BcastCol:
      return "bcast-col";
  }
  return "?";
}

// Builds a view [Bt, R, C] with the given layout, filled with random values (rounded to dt).
HostTensor make_operand(DType dt, int64_t Bt, int64_t R, int64_t C, Layout l, Rng& rng) {
  std::vector<int64_t> st(3);
  int64_t off = 0, nb = Bt;
  switch (l) {
    case Layout::Row:
      st = {R * C, C, 1};
      break;
    case Layout::Col:
      st = {R * C, 1, R};
      break;
    case Layout::Strided:
      st = {0, 2 * C + 1, 2};
      st[0] = R * st[1] + 5;
      off = 3;
      break;
    case Layout::BcastRow:
      st = {0, C, 1};
      nb = 1;
      break;
    case Layout::BcastCol:
      st = {0, 1, R};
      nb = 1;
      break;
  }
  int64_t span = off + 1;
  span += (nb - 1) * st[0] + (R - 1) * st[1] + (C - 1) * st[2];
  if (R == 0 || C == 0 || Bt == 0) span = off + 1;
  HostTensor t = make_view(make_storage(size_t(span) * dtype_size(dt)), dt, {Bt, R, C}, st, off);
  for (int64_t b = 0; b < nb; b++)
    for (int64_t r = 0; r < R; r++)
      for (int64_t c = 0; c < C; c++) put(t.view, b * st[0] + r * st[1] + c * st[2], rng.uniform());
  return t;
}

double unit_roundoff(DType d) {
  switch (d) {
    case DType::F64:
      return std::ldexp(1.0, -53);
    case DType::F32:
      return std::ldexp(1.0, -24);
    case DType::BF16:
      return std::ldexp(1.0, -8);
    case DType::F16:
      return std::ldexp(1.0, -11);
    default:
      return 0;
  }
}

struct Case {
  int64_t Bt, M, K, N;
  Layout la = Layout::Row, lb = Layout::Row;
  DType dt = DType::F32;
  bool bias = false;
  bool has_beta = false;
  double beta = 0;
  int act = -1;  // epilogue argument: -1 absent, 0 'none', 1 'gelu', 2 'gelu_tanh'
};

const char* act_name(int act) { return act == 1 ? "gelu" : act == 2 ? "gelu_tanh" : "none"; }

double act_ref(int act, double x) {
  if (act == 1) return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  if (act == 2) return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  return x;
}

std::string describe(const Case& c, const char* isa) {
  char buf[320];
  std::snprintf(buf, sizeof buf, "%s Bt=%lld M=%lld K=%lld N=%lld a=%s b=%s%s beta=%s%s%s [%s]", dtype_name(c.dt),
                (long long)c.Bt, (long long)c.M, (long long)c.K, (long long)c.N, layout_name(c.la), layout_name(c.lb),
                c.bias ? " bias" : "", c.has_beta ? std::to_string(c.beta).c_str() : "none",
                c.act >= 0 ? " epilogue=" : "", c.act >= 0 ? act_name(c.act) : "", isa);
  return buf;
}

void run_case(const Case& c, const char* isa, uint64_t seed) {
  Rng rng(seed);
  HostTensor a = make_operand(c.dt, c.Bt, c.M, c.K, c.la, rng);
  HostTensor b = make_operand(c.dt, c.Bt, c.K, c.N, c.lb, rng);
  HostTensor out = make_contiguous(c.dt, {c.Bt, c.M, c.N});
  HostTensor bias = make_contiguous(c.dt, {c.N});
  for (int64_t j = 0; j < c.N; j++) put(bias.view, j, rng.uniform());
  // Without beta (or beta == 0) out starts as NaN: the kernel must not read it.
  const bool reads_old = c.has_beta && c.beta != 0;
  const int64_t total = c.Bt * c.M * c.N;
  std::vector<double> old(total);
  for (int64_t i = 0; i < total; i++) {
    old[i] = reads_old ? rng.uniform() : NAN;
    put(out.view, i, old[i]);
    old[i] = get(out.view, i);
  }
  std::vector<KernelArg> args{out.view, a.view, b.view};
  args.push_back(c.bias ? KernelArg(bias.view) : KernelArg(std::monostate{}));
  args.push_back(c.has_beta ? KernelArg(c.beta) : KernelArg(std::monostate{}));
  if (c.act >= 0) args.push_back(KernelArg(std::string(act_name(c.act))));
  try {
    call("matmul", args);
  } catch (const std::exception& e) {
    std::printf("FAIL %s: threw %s\n", describe(c, isa).c_str(), e.what());
    g_fail++;
    return;
  }
  const double u_acc = c.dt == DType::F64 ? unit_roundoff(DType::F64) : unit_roundoff(DType::F32);
  const double u_out = unit_roundoff(c.dt);
  double max_err = 0, se = 0, sr = 0;
  int64_t bad = 0, first_bad = -1;
  for (int64_t bt = 0; bt < c.Bt; bt++)
    for (int64_t m = 0; m < c.M; m++)
      for (int64_t n = 0; n < c.N; n++) {
        double ref = 0, scale = 0;
        for (int64_t k = 0; k < c.K; k++) {
          double x = get(a.view, bt * a.view.strides[0] + m * a.view.strides[1] + k * a.view.strides[2]);
          double y = get(b.view, bt * b.view.strides[0] + k * b.view.strides[1] + n * b.view.strides[2]);
          ref += x * y;
          scale += std::fabs(x * y);
        }
        if (c.bias) {
          double v = get(bias.view, n);
          ref += v;
          scale += std::fabs(v);
        }
        if (c.act > 0) ref = act_ref(c.act, ref);
        int64_t i = (bt * c.M + m) * c.N + n;
        if (reads_old) {
          ref += c.beta * old[i];
          scale += std::fabs(c.beta * old[i]);
        }
        double got = get(out.view, i);
        double err = std::fabs(got - ref);
        double tol =
            (c.act > 0 ? 1.25 : 1.0) * u_acc * (2 * std::sqrt(double(c.K)) + 8) * scale + 2 * u_out * std::fabs(ref);
        se += (got - ref) * (got - ref);
        sr += ref * ref;
        if (!(err <= tol)) {  // also catches NaN
          if (first_bad < 0) first_bad = i;
          bad++;
        }
        if (err > max_err || std::isnan(err)) max_err = err;
      }
  if (bad) {
    std::printf("FAIL %s: %lld/%lld elements out of tolerance, max err %.3g, nmse %.3g, first at flat index %lld\n",
                describe(c, isa).c_str(), (long long)bad, (long long)total, max_err, sr > 0 ? se / sr : se,
                (long long)first_bad);
    g_fail++;
  } else {
    g_pass++;
  }
}

// Invalid calls: each must throw KernelError (not crash, not succeed).
void expect_throw(const char* what, std::vector<KernelArg> args) {
  try {
    call("matmul", std::move(args));
  } catch (const KernelError& e) {
    g_pass++;
    return;
  } catch (const std::exception& e) {
    std::printf("FAIL invalid call '%s' threw a non-KernelError: %s\n", what, e.what());
    g_fail++;
    return;
  }
  std::printf("FAIL invalid call '%s' did not throw\n", what);
  g_fail++;
}

void invalid_calls() {
  using L = Layout;
  Rng rng(7);
  auto a = make_operand(DType::F32, 2, 4, 5, L::Row, rng);
  auto b = make_operand(DType::F32, 2, 5, 3, L::Row, rng);
  auto out = make_contiguous(DType::F32, {2, 4, 3});
  auto none = KernelArg(std::monostate{});
  auto a2d = make_view(a.storage, DType::F32, {4, 5}, {5, 1});
  expect_throw("rank-2 a", {out.view, a2d.view, b.view, none, none});
  auto bk = make_operand(DType::F32, 2, 6, 3, L::Row, rng);
  expect_throw("inner dims differ", {out.view, a.view, bk.view, none, none});
  auto bb = make_operand(DType::F32, 3, 5, 3, L::Row, rng);
  expect_throw("batch differs", {out.view, a.view, bb.view, none, none});
  auto b64 = make_operand(DType::F64, 2, 5, 3, L::Row, rng);
  expect_throw("dtypes differ", {out.view, a.view, b64.view, none, none});
  auto out_bad = make_contiguous(DType::F32, {2, 4, 4});
  expect_throw("out shape", {out_bad.view, a.view, b.view, none, none});
  auto out_nc = make_view(make_storage(2 * 4 * 3 * 4 * 2), DType::F32, {2, 4, 3}, {24, 6, 2});
  expect_throw("out not contiguous", {out_nc.view, a.view, b.view, none, none});
  auto alias = make_view(a.storage, DType::F32, {2, 4, 3}, {12, 3, 1});
  expect_throw("out overlaps a", {alias.view, a.view, b.view, none, none});
  auto bias_bad = make_contiguous(DType::F32, {4});
  expect_throw("bias shape", {out.view, a.view, b.view, bias_bad.view, none});
  auto bias_dt = make_contiguous(DType::F64, {3});
  expect_throw("bias dtype", {out.view, a.view, b.view, bias_dt.view, none});
  auto ai = make_contiguous(DType::I32, {2, 4, 5});
  auto bi = make_contiguous(DType::I32, {2, 5, 3});
  auto oi = make_contiguous(DType::I32, {2, 4, 3});
  expect_throw("integer dtype", {oi.view, ai.view, bi.view, none, none});
  expect_throw("beta not a number", {out.view, a.view, b.view, none, KernelArg(std::string("x"))});
  expect_throw("missing b", {out.view, a.view});
  expect_throw("unknown epilogue", {out.view, a.view, b.view, none, none, KernelArg(std::string("relu"))});
  expect_throw("epilogue not a string", {out.view, a.view, b.view, none, none, KernelArg(1.0)});
}

}  // namespace

int main() {
  using L = Layout;
  std::vector<Case> cases;
  // (Bt, M, K, N) shapes: tiny, ragged, vectors, several K blocks, M > MC, N > NC.
  const int64_t shapes[][4] = {{1, 1, 1, 1},     {1, 7, 13, 5},    {1, 1, 300, 77},   {1, 77, 300, 1},
                               {1, 1, 64, 1},    {1, 2, 3, 2},     {1, 6, 256, 16},   {1, 12, 256, 32},
                               {1, 13, 257, 33}, {1, 37, 129, 70}, {1, 100, 300, 50}, {1, 300, 40, 45},
                               {1, 8, 40, 3100}, {1, 64, 600, 96}, {3, 20, 30, 40},   {5, 1, 50, 33},
                               {5, 33, 50, 1},   {4, 9, 17, 65},   {1, 130, 520, 70}};
  const L layouts[] = {L::Row, L::Col, L::Strided};
  for (auto& s : shapes)
    for (L la : layouts)
      for (L lb : layouts) cases.push_back({s[0], s[1], s[2], s[3], la, lb});
  // Broadcast batches (stride 0), both operands and both orientations.
  for (L la : {L::BcastRow, L::BcastCol, L::Row})
    for (L lb : {L::BcastRow, L::BcastCol, L::Col}) {
      cases.push_back({3, 20, 30, 40, la, lb});
      cases.push_back({4, 1, 30, 40, la, lb});
      cases.push_back({4, 20, 30, 1, la, lb});
    }
  // Bias and beta (beta == 0 must not read the NaN-filled out), on GEMM and GEMV paths.
  for (auto& s : std::vector<std::vector<int64_t>>{
           {1, 37, 129, 70}, {2, 13, 300, 33}, {1, 1, 100, 40}, {2, 30, 60, 1}, {1, 4, 0, 5}})
    for (L la : {L::Row, L::Col})
      for (int mode = 0; mode < 4; mode++) {
        Case c{s[0], s[1], s[2], s[3], la, L::Col};
        c.bias = mode == 1 || mode == 3;
        c.has_beta = mode >= 2;
        c.beta = mode == 2 ? 0.0 : 0.75;
        cases.push_back(c);
      }
  // Low precision and f64 on a subset of shapes and layouts.
  for (DType dt : {DType::BF16, DType::F16, DType::F64})
    for (auto& s : std::vector<std::vector<int64_t>>{{1, 1, 1, 1},
                                                     {1, 7, 13, 5},
                                                     {1, 37, 129, 70},
                                                     {2, 100, 300, 50},
                                                     {1, 1, 300, 77},
                                                     {1, 77, 300, 1},
                                                     {1, 8, 40, 3100},
                                                     {3, 20, 30, 40}})
      for (auto lab : std::vector<std::pair<L, L>>{
               {L::Row, L::Row}, {L::Col, L::Col}, {L::Row, L::Col}, {L::Strided, L::BcastCol}})
        for (int mode = 0; mode < 2; mode++) {
          Case c{s[0], s[1], s[2], s[3], lab.first, lab.second, dt};
          c.bias = mode == 1;
          c.has_beta = mode == 1;
          c.beta = -0.5;
          cases.push_back(c);
        }
  // Epilogues (gelu, gelu_tanh; 'none' spelled out too) on every path: GEMM with edge tiles, several
  // K blocks, M past MC, N past NC, GEMV both ways (dot and axpy), K == 0, broadcast batches; with and
  // without bias and beta (beta 0: out is NaN and must not be read).
  {
    const std::vector<std::vector<int64_t>> ep_shapes = {
        {1, 1, 1, 1},     {1, 7, 13, 5},     {1, 37, 129, 70}, {2, 13, 300, 33}, {1, 1, 300, 77},
        {1, 77, 300, 1},  {5, 1, 50, 33},    {5, 33, 50, 1},   {1, 4, 0, 5},     {2, 1, 0, 7},
        {1, 8, 40, 3100}, {1, 130, 520, 70}, {1, 300, 40, 45}};
    const std::vector<std::pair<L, L>> ep_layouts = {
        {L::Row, L::Row}, {L::Col, L::Col}, {L::Row, L::Col}, {L::Strided, L::BcastCol}};
    int li = 0;
    for (DType dt : {DType::F32, DType::F64, DType::BF16, DType::F16})
      for (auto& s : ep_shapes)
        for (int act : {1, 2})
          for (int mode = 0; mode < 4; mode++) {
            if (dt == DType::F16 && mode % 2) continue;  // f16: a lighter subset
            auto lab = ep_layouts[li++ % ep_layouts.size()];
            Case c{s[0], s[1], s[2], s[3], lab.first, lab.second, dt};
            c.bias = mode == 1 || mode == 3;
            c.has_beta = mode >= 2;
            c.beta = mode == 2 ? 0.0 : -0.75;
            c.act = act;
            cases.push_back(c);
          }
    Case none_spelled{1, 37, 129, 70, L::Row, L::Col, DType::F32, true, true, 0.5};
    none_spelled.act = 0;
    cases.push_back(none_spelled);
    none_spelled.dt = DType::BF16;
    cases.push_back(none_spelled);
    Case big{2, 261, 515, 263, L::Row, L::Col, DType::F32, true, true, 1.0};
    big.act = 1;
    cases.push_back(big);
    big.dt = DType::BF16;
    big.act = 2;
    cases.push_back(big);
  }
  // Larger: several K blocks, many tiles, both threads, ragged everywhere.
  cases.push_back({1, 517, 700, 390, L::Row, L::Row});
  cases.push_back({1, 517, 700, 390, L::Col, L::Col, DType::F32, true, true, 0.25});
  cases.push_back({2, 261, 515, 263, L::Row, L::Col, DType::BF16, true, true, 1.0});
  cases.push_back({1, 200, 520, 150, L::Strided, L::Row, DType::F16});

  // Every instruction set this CPU runs, lowest first (cpu_isa.h): portable, avx2 (6x16 f32 tile),
  // avx512 (12x32 f32 tile; the AVX512-BF16 kernel for bf16 where the CPU has it).
  std::vector<llava::CpuIsa> isas = {llava::CpuIsa::Portable};
  for (llava::CpuIsa i : {llava::CpuIsa::Avx2, llava::CpuIsa::Avx512})
    if (llava::cpu_isa_detected() >= i) isas.push_back(i);
  for (llava::CpuIsa i : isas) {
    llava::set_cpu_isa_cap(i);
    const char* isa = llava::cpu_isa_name(i);
    int before = g_fail;
    uint64_t seed = 1;
    for (const Case& c : cases) run_case(c, isa, seed++);
    std::printf("[%s] %zu cases, %d failed\n", isa, cases.size(), g_fail - before);
  }
  llava::set_cpu_isa_cap(llava::CpuIsa::Avx512);
  invalid_calls();
  std::printf("%d threads; %d passed, %d failed\n", num_threads(), g_pass, g_fail);
  return g_fail ? 1 : 0;
}
