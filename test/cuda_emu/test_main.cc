// test/cuda_emu/test_main.cc — parity tests of the CUDA kernels (run in the emulator) against the CPU
// kernels and float64 references. Prints one PASS/FAIL line per check and ends with "N passed, N failed".
#include "test_util.h"

// ------------------------------------------------------------------ matmul
static double act_fn(int act, double x) {
  if (act == 1) return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
  if (act == 2) return 0.5 * x * (1 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  return x;
}

static void test_matmul(DType dt, int64_t Bt, int64_t M, int64_t N, int64_t K, bool a_cm, bool b_cm, bool bias,
                        double beta, int act, bool b_bcast, int64_t a_off, int sms, bool vs_cpu = true) {
  gpu::emu_sms = sms;
  // a: [Bt, M, K], column-major per batch when a_cm; optional element offset for misalignment.
  const int64_t a_bs = M * K;
  Tensor a = make_tensor(dt, {Bt, M, K}, a_cm ? std::vector<int64_t>{a_bs, 1, M} : std::vector<int64_t>{a_bs, K, 1},
                         a_off, Bt * a_bs + a_off, Device::CUDA);
  const int64_t b_bs = b_bcast ? 0 : K * N;
  Tensor b = make_tensor(dt, {Bt, K, N}, b_cm ? std::vector<int64_t>{b_bs, 1, K} : std::vector<int64_t>{b_bs, N, 1}, 0,
                         std::max<int64_t>(1, (b_bcast ? 1 : Bt) * K * N), Device::CUDA);
  fill_random(a);
  fill_random(b);
  Tensor bi = dense(dt, {N}, Device::CUDA);
  fill_random(bi);
  Tensor out = dense(dt, {Bt, M, N}, Device::CUDA);
  fill_random(out);
  const std::vector<double> old = read_all(out);
  std::vector<KernelArg> args = {out.t, a.t, b.t, bias ? KernelArg(bi.t) : KernelArg(std::monostate{})};
  args.push_back(beta != 0 ? KernelArg(beta) : KernelArg(std::monostate{}));
  const char* acts[] = {"none", "gelu", "gelu_tanh"};
  args.push_back(KernelArg(std::string(acts[act])));
  const int l0 = ::emu::launches;
  run("matmul", Device::CUDA, args);
  // reference in double
  double max_err = 0, max_ref = 0;
  bool ok = true;
  const double rtol = dt == DType::BF16 ? 1.2e-2 : dt == DType::F16 ? 2e-3 : dt == DType::F32 ? 1e-5 : 1e-12;
  const double atol = (dt == DType::F64 ? 1e-12 : dt == DType::F32 ? 1e-6 : 1e-4) * std::sqrt((double)K + 1);
  for (int64_t z = 0; z < Bt; z++)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++) s += at(a, {z, i, k}) * at(b, {z, k, j});
        if (bias) s += bi.vals[j];
        s = act_fn(act, s);
        const int64_t o = (z * M + i) * N + j;
        if (beta != 0) s += beta * old[o];
        const double g = to_double(dt, out.buf->p, o);
        const double e = std::fabs(g - s);
        max_err = std::max(max_err, e);
        max_ref = std::max(max_ref, std::fabs(s));
        if (!(e <= atol + rtol * std::fabs(s))) {
          if (ok) std::printf("  first bad at [%ld,%ld,%ld]: got %g want %g\n", (long)z, (long)i, (long)j, g, s);
          ok = false;
        }
      }
  ok = ok && out.buf->guards_ok();
  char what[256];
  std::snprintf(what, sizeof what,
                "matmul%s%s %s Bt=%ld M=%ld N=%ld K=%ld a_%s b_%s bias=%d beta=%g act=%s bbcast=%d aoff=%ld sms=%d "
                "(max err %.3g, max |ref| %.3g, %d launches)",
                cuda_gemm_tile() ? " tile=" : "", cuda_gemm_tile() ? kCudaGemmTiles[cuda_gemm_tile()] : "",
                dtype_name(dt), (long)Bt, (long)M, (long)N, (long)K, a_cm ? "cm" : "rm", b_cm ? "cm" : "rm", bias, beta,
                acts[act], b_bcast, (long)a_off, sms, max_err, max_ref, ::emu::launches - l0);
  report(ok, what);
  if (vs_cpu && act == 0) {  // the CPU kernel on the same inputs must agree within twice the tolerance
    Tensor ac = clone_as(a, dt, Device::CPU), bc = clone_as(b, dt, Device::CPU), bic = clone_as(bi, dt, Device::CPU);
    Tensor oc = dense(dt, {Bt, M, N}, Device::CPU);
    for (int64_t i = 0; i < oc.nelem; i++) from_double(dt, oc.buf->p, i, old[i]);
    std::vector<KernelArg> cargs = {oc.t, ac.t, bc.t, bias ? KernelArg(bic.t) : KernelArg(std::monostate{}),
                                    beta != 0 ? KernelArg(beta) : KernelArg(std::monostate{})};
    run("matmul", Device::CPU, cargs);
    double md = 0;
    bool ok2 = true;
    for (int64_t i = 0; i < oc.nelem; i++) {
      const double c = to_double(dt, oc.buf->p, i), g = to_double(dt, out.buf->p, i);
      md = std::max(md, std::fabs(c - g));
      if (!(std::fabs(c - g) <= 2 * (atol + rtol * std::fabs(c)))) ok2 = false;
    }
    std::snprintf(what, sizeof what, "  vs CPU kernel: max diff %.3g", md);
    report(ok2, what);
  }
}

// ------------------------------------------------------------------ attention
struct AttnCase {
  DType dt;
  int64_t B, H, Hkv, T, S, D;
  bool causal;
  int mask;        // 0 none, 1 random [B,1->H,T,S] broadcast over heads, 2 key padding [B,1,1,S]
  bool q_strided;  // q/k/v/dout as [B,T,H,D] memory viewed as [B,H,T,D]
  int64_t q_off;   // element offset on q (misalignment -> SIMT fallback)
  bool lse64;
  int sms;
};

static Tensor make_bhtd(DType dt, int64_t B, int64_t H, int64_t T, int64_t D, bool strided, int64_t off, Device dev) {
  if (!strided) return make_tensor(dt, {B, H, T, D}, contig({B, H, T, D}), off, B * H * T * D + off, dev);
  return make_tensor(dt, {B, H, T, D}, {T * H * D, D, H * D, 1}, off, B * H * T * D + off, dev);
}

static std::string case_name(const AttnCase& c) {
  char s[256];
  std::snprintf(s, sizeof s, "%s B%ld H%ld/%ld T%ld S%ld D%ld causal=%d mask=%d strided=%d qoff=%ld lse64=%d sms=%d",
                dtype_name(c.dt), (long)c.B, (long)c.H, (long)c.Hkv, (long)c.T, (long)c.S, (long)c.D, c.causal, c.mask,
                c.q_strided, (long)c.q_off, c.lse64, c.sms);
  return s;
}

struct Cmp {
  double max_err = 0, max_ref = 0;
  bool nan = false;
};
static Cmp compare(const std::vector<double>& got, const std::vector<double>& ref) {
  Cmp c;
  for (size_t i = 0; i < got.size(); i++) {
    if (std::isinf(ref[i]) && got[i] == ref[i]) continue;
    if (std::isnan(got[i]) || std::isinf(got[i]) != std::isinf(ref[i])) c.nan = true;
    c.max_err = std::max(c.max_err, std::fabs(got[i] - ref[i]));
    if (!std::isinf(ref[i])) c.max_ref = std::max(c.max_ref, std::fabs(ref[i]));
  }
  return c;
}
// Values of a [B,H,T,D] (possibly strided) tensor in logical order.
static std::vector<double> logical(const Tensor& x) {
  std::vector<double> r;
  const int64_t* s = x.t.shape;
  for (int64_t a = 0; a < s[0]; a++)
    for (int64_t b = 0; b < s[1]; b++)
      for (int64_t c = 0; c < (x.t.ndim > 2 ? s[2] : 1); c++)
        for (int64_t d = 0; d < (x.t.ndim > 3 ? s[3] : 1); d++) {
          std::vector<int64_t> idx = {a, b};
          if (x.t.ndim > 2) idx.push_back(c);
          if (x.t.ndim > 3) idx.push_back(d);
          r.push_back(at(x, idx));
        }
  return r;
}

static void test_attention(const AttnCase& c, bool do_bwd = true) {
  gpu::emu_sms = c.sms;
  const DType dt = c.dt;
  Tensor q = make_bhtd(dt, c.B, c.H, c.T, c.D, c.q_strided, c.q_off, Device::CUDA);
  Tensor k = make_bhtd(dt, c.B, c.Hkv, c.S, c.D, c.q_strided, 0, Device::CUDA);
  Tensor v = make_bhtd(dt, c.B, c.Hkv, c.S, c.D, c.q_strided, 0, Device::CUDA);
  fill_random(q);
  fill_random(k);
  fill_random(v);
  Tensor mask;
  bool has_mask = c.mask != 0;
  if (c.mask == 1) {
    mask = make_tensor(DType::BOOL, {c.B, c.H, c.T, c.S}, {c.T * c.S, 0, c.S, 1}, 0,
                       std::max<int64_t>(1, c.B * c.T * c.S), Device::CUDA);
    std::bernoulli_distribution bd(0.7);
    for (int64_t i = 0; i < mask.nelem; i++) {
      uint8_t bit = bd(rng);
      reinterpret_cast<uint8_t*>(mask.buf->p)[i] = bit;
      mask.vals[i] = bit;
    }
    // one fully masked row to test the no-visible-key rule
    if (c.T > 1)
      for (int64_t j = 0; j < c.S; j++)
        reinterpret_cast<uint8_t*>(mask.buf->p)[1 * c.S + j] = 0, mask.vals[1 * c.S + j] = 0;
  } else if (c.mask == 2) {
    mask = make_tensor(DType::BOOL, {c.B, c.H, c.T, c.S}, {c.S, 0, 0, 1}, 0, std::max<int64_t>(1, c.B * c.S),
                       Device::CUDA);
    for (int64_t b = 0; b < c.B; b++)
      for (int64_t j = 0; j < c.S; j++) {
        uint8_t bit = j < c.S - 3 * b;  // batch b pads its last 3b keys
        reinterpret_cast<uint8_t*>(mask.buf->p)[b * c.S + j] = bit;
        mask.vals[b * c.S + j] = bit;
      }
  }
  const double scale = 1.0 / std::sqrt((double)c.D);
  const DType lse_dt = c.lse64 ? DType::F64 : DType::F32;
  auto opt_mask = [&](Device dev, Tensor& holder) -> KernelArg {
    if (!has_mask) return std::monostate{};
    holder = clone_as(mask, DType::BOOL, dev);
    return holder.t;
  };

  // GPU forward
  Tensor out = dense(dt, {c.B, c.H, c.T, c.D}, Device::CUDA), lse = dense(lse_dt, {c.B, c.H, c.T}, Device::CUDA);
  fill_value(out, 777.0);
  fill_value(lse, 777.0);
  Tensor mg;
  const int l0 = ::emu::launches;
  run("attention_fwd", Device::CUDA, {out.t, lse.t, q.t, k.t, v.t, opt_mask(Device::CUDA, mg), c.causal, scale});
  const int nl = ::emu::launches - l0;
  // CPU forward in the same dtype and in f64
  auto cpu_fwd = [&](DType cdt, Tensor& o, Tensor& l) {
    Tensor qc = clone_as(q, cdt, Device::CPU), kc = clone_as(k, cdt, Device::CPU), vc = clone_as(v, cdt, Device::CPU),
           mc;
    o = dense(cdt, {c.B, c.H, c.T, c.D}, Device::CPU);
    l = dense(cdt == DType::F64 ? DType::F64 : lse_dt, {c.B, c.H, c.T}, Device::CPU);
    run("attention_fwd", Device::CPU, {o.t, l.t, qc.t, kc.t, vc.t, opt_mask(Device::CPU, mc), c.causal, scale});
  };
  Tensor o_cpu, l_cpu, o_ref, l_ref;
  cpu_fwd(dt, o_cpu, l_cpu);
  cpu_fwd(DType::F64, o_ref, l_ref);
  const Cmp eg = compare(read_all(out), read_all(o_ref)), ec = compare(read_all(o_cpu), read_all(o_ref));
  const Cmp lg = compare(read_all(lse), read_all(l_ref));
  const bool low = dt == DType::BF16 || dt == DType::F16;
  const double atol = low ? 2e-3 : dt == DType::F32 ? 2e-5 : 1e-12;
  bool ok = !eg.nan && !lg.nan && eg.max_err <= 3 * ec.max_err + atol &&
            lg.max_err <= (dt == DType::F64 && c.lse64 ? 1e-10 : 2e-4) && out.buf->guards_ok() && lse.buf->guards_ok();
  char what[512];
  std::snprintf(what, sizeof what, "attention_fwd %s: out err %.3g (cpu same dtype %.3g), lse err %.3g, %d launches",
                case_name(c).c_str(), eg.max_err, ec.max_err, lg.max_err, nl);
  report(ok, what);
  if (!do_bwd) return;

  // Backward: GPU and CPU-same-dtype both get the CPU forward's out/lse; truth = f64 everything.
  Tensor dout = make_bhtd(dt, c.B, c.H, c.T, c.D, c.q_strided, 0, Device::CUDA);
  fill_random(dout);
  Tensor o_in = clone_as(o_cpu, dt, Device::CUDA), l_in = clone_as(l_cpu, lse_dt, Device::CUDA);
  Tensor dq = dense(dt, {c.B, c.H, c.T, c.D}, Device::CUDA), dk = dense(dt, {c.B, c.Hkv, c.S, c.D}, Device::CUDA),
         dv = dense(dt, {c.B, c.Hkv, c.S, c.D}, Device::CUDA);
  fill_value(dq, 777);
  fill_value(dk, 777);
  fill_value(dv, 777);
  Tensor mg2;
  const int l1 = ::emu::launches;
  run("attention_bwd", Device::CUDA,
      {dq.t, dk.t, dv.t, q.t, k.t, v.t, o_in.t, dout.t, l_in.t, opt_mask(Device::CUDA, mg2), c.causal, scale});
  const int nl2 = ::emu::launches - l1;
  auto cpu_bwd = [&](DType cdt, const Tensor& o, const Tensor& l, Tensor& gq, Tensor& gk, Tensor& gv) {
    Tensor qc = clone_as(q, cdt, Device::CPU), kc = clone_as(k, cdt, Device::CPU), vc = clone_as(v, cdt, Device::CPU),
           oc = clone_as(o, cdt, Device::CPU), dc = clone_as(dout, cdt, Device::CPU),
           lc = clone_as(l, l.dt, Device::CPU), mc;
    gq = dense(cdt, {c.B, c.H, c.T, c.D}, Device::CPU);
    gk = dense(cdt, {c.B, c.Hkv, c.S, c.D}, Device::CPU);
    gv = dense(cdt, {c.B, c.Hkv, c.S, c.D}, Device::CPU);
    run("attention_bwd", Device::CPU,
        {gq.t, gk.t, gv.t, qc.t, kc.t, vc.t, oc.t, dc.t, lc.t, opt_mask(Device::CPU, mc), c.causal, scale});
  };
  Tensor cq, ck, cv, rq, rk, rv;
  cpu_bwd(dt, o_cpu, l_cpu, cq, ck, cv);
  cpu_bwd(DType::F64, o_ref, l_ref, rq, rk, rv);
  const char* names[] = {"dq", "dk", "dv"};
  Tensor* g[] = {&dq, &dk, &dv};
  Tensor* cc[] = {&cq, &ck, &cv};
  Tensor* rr[] = {&rq, &rk, &rv};
  std::string detail;
  bool okb = true;
  for (int i = 0; i < 3; i++) {
    const Cmp e1 = compare(read_all(*g[i]), read_all(*rr[i])), e2 = compare(read_all(*cc[i]), read_all(*rr[i]));
    const double tol = 3 * e2.max_err + (low ? 4e-3 : dt == DType::F32 ? 5e-5 : 1e-11) * std::max(1.0, e1.max_ref);
    const bool oki = !e1.nan && e1.max_err <= tol && g[i]->buf->guards_ok();
    okb = okb && oki;
    char s[160];
    std::snprintf(s, sizeof s, " %s err %.3g (cpu %.3g, |ref| %.3g)%s", names[i], e1.max_err, e2.max_err, e1.max_ref,
                  oki ? "" : "<-");
    detail += s;
  }
  std::snprintf(what, sizeof what, "attention_bwd %s:%s, %d launches", case_name(c).c_str(), detail.c_str(), nl2);
  report(okb, what);
}

// ------------------------------------------------------------------ error paths
static void expect_fail(const char* what, const std::function<void()>& fn) {
  try {
    fn();
    report(false, std::string("expected failure: ") + what);
  } catch (const KernelError& e) { report(true, std::string("fails cleanly: ") + what + " -> " + e.what()); }
}

void test_attention_nan(DType dt, int64_t T, int64_t S, int64_t D, int sms);  // test_nan.cc

int main(int argc, char** argv) {
  const std::string only = argc > 1 ? argv[1] : "";
  const bool mm = only.empty() || only == "matmul", af = only.empty() || only == "attn";
  if (std::getenv("EMU_SEED")) rng.seed(std::atoll(std::getenv("EMU_SEED")));
  if (mm) {
    for (DType dt : {DType::BF16, DType::F16}) {
      for (int lay = 0; lay < 4; lay++) {
        const bool acm = lay & 1, bcm = lay & 2;
        test_matmul(dt, 1, 64, 64, 64, acm, bcm, false, 0, 0, false, 0, 1);       // one big-config tile... (128 tile)
        test_matmul(dt, 2, 136, 200, 72, acm, bcm, true, 0, 0, false, 0, 1);      // big tile, edges
        test_matmul(dt, 2, 136, 200, 72, acm, bcm, true, 0.5, 0, true, 0, 1000);  // small tile, b broadcast, beta
      }
      test_matmul(dt, 1, 1, 72, 96, false, true, true, 0, 0, false, 0, 1000);      // decode GEMV shape
      test_matmul(dt, 1, 37, 41, 29, false, false, true, 1.0, 0, false, 0, 1000);  // odd sizes -> unaligned path
      test_matmul(dt, 1, 70, 66, 40, false, false, false, 0, 0, false, 1, 1);      // misaligned a -> unaligned path
      test_matmul(dt, 1, 70, 66, 40, true, true, false, 0, 0, false, 1, 1000);     // misaligned a, cm
      test_matmul(dt, 1, 65, 130, 300, false, true, true, 0, 1, false, 0, 1);      // gelu, K loop > stages
      test_matmul(dt, 1, 65, 130, 48, false, true, true, 2.0, 2, false, 0, 1000);  // gelu_tanh + beta
      test_matmul(dt, 1, 8, 8, 0, false, false, true, 0.5, 0, false, 0, 1000);     // K = 0
    }
    // Every forced tile (cudaGemmTile, bf16; the wgmma ones run too: the emulated device is an sm_90): the
    // four layouts over edges and a K loop longer than the ring, a beta epilogue with a broadcast b; f16 and
    // the unaligned path fall back to the defaults.
    for (int tile = 1; tile < kNumCudaGemmTiles; tile++) {
      set_cuda_gemm_tile(tile);
      for (int lay = 0; lay < 4; lay++)
        test_matmul(DType::BF16, 1, 136, 264, 328, lay & 1, lay & 2, true, 0, 0, false, 0, 1);
      test_matmul(DType::BF16, 2, 70, 130, 200, false, true, true, 0.5, 0, true, 0, 1);
      if (std::string(kCudaGemmTiles[tile]).rfind("wgmma-", 0) == 0)  // 6 stages: 18 k tiles wrap the ring
        test_matmul(DType::BF16, 1, 72, 136, 1100, true, false, false, 0, 0, false, 0, 1);
      test_matmul(DType::F16, 1, 64, 64, 64, true, false, false, 0, 0, false, 0, 1);
      test_matmul(DType::BF16, 1, 37, 41, 150, false, false, true, 0, 1, false, 1, 1);  // unaligned, gelu
      set_cuda_gemm_tile(0);
    }
    for (DType dt : {DType::F32, DType::F64}) {
      test_matmul(dt, 2, 130, 70, 33, false, false, true, 0, 0, false, 0, 4);
      test_matmul(dt, 2, 130, 70, 33, true, true, true, 0.5, 1, true, 1, 4);
      test_matmul(dt, 1, 1, 5, 9, false, true, false, 0, 2, false, 0, 4);
    }
  }
  if (af) {
    // D in {64, 80, 128}: tensor-core paths; sms small -> 8-warp forward; large -> 4 warps / split-KV
    for (DType dt : {DType::BF16, DType::F16}) {
      for (int64_t D : {64, 80, 128}) {
        test_attention({dt, 1, 2, 2, 70, 70, D, false, 0, false, 0, false, 1});
        test_attention({dt, 1, 2, 1, 70, 100, D, true, 0, true, 0, false, 1000});
      }
    }
    test_attention({DType::BF16, 2, 4, 2, 130, 90, 64, true, 0, false, 0, false, 1});      // T > S causal: empty rows
    test_attention({DType::BF16, 2, 2, 2, 40, 150, 64, false, 1, false, 0, false, 1000});  // random mask + empty row
    test_attention({DType::BF16, 2, 2, 1, 33, 77, 128, true, 2, true, 0, true, 1000});     // key padding, lse f64
    test_attention({DType::BF16, 1, 2, 2, 1, 300, 128, true, 0, false, 0, false, 1000});   // decode, split-KV
    test_attention({DType::F16, 2, 4, 1, 3, 260, 64, false, 2, true, 0, false, 1000});     // small T, split, GQA 4
    test_attention({DType::BF16, 1, 2, 2, 50, 60, 64, true, 0, false, 3, false, 4});       // misaligned q -> SIMT
    test_attention({DType::BF16, 1, 2, 2, 50, 60, 32, true, 1, false, 0, false, 4});       // D 32 -> SIMT
    test_attention({DType::F32, 2, 4, 2, 37, 45, 24, true, 1, true, 0, false, 4});
    test_attention({DType::F64, 1, 2, 1, 20, 33, 16, false, 2, false, 0, true, 4});
    test_attention({DType::F64, 1, 2, 2, 40, 12, 8, true, 0, false, 0, false, 4});  // T > S
    test_attention({DType::F32, 1, 1, 1, 1, 1, 40, false, 0, false, 0, false, 4});
    test_attention({DType::BF16, 1, 2, 2, 5, 0, 64, false, 0, false, 0, false, 4});  // S = 0
    test_attention({DType::BF16, 1, 2, 2, 0, 7, 64, true, 0, false, 0, false, 4});   // T = 0
    test_attention({DType::F32, 1, 2, 2, 5, 0, 16, true, 0, false, 0, false, 4});
    test_attention({DType::F32, 1, 2, 1, 0, 9, 16, false, 0, false, 0, false, 4});
    test_attention_nan(DType::BF16, 70, 90, 64, 1);     // tensor cores
    test_attention_nan(DType::F16, 1, 300, 128, 1000);  // split-KV decode + combine
    test_attention_nan(DType::F32, 37, 45, 24, 4);      // SIMT
    // SIMT tiles (32 rows x 32 keys, D in chunks of 32/64 columns): T/S off the tile, D off the chunk,
    // several chunks (D 200), causal S > T and T > S, masks, GQA, strided views, f32/f64/16-bit.
    test_attention({DType::F32, 2, 4, 2, 45, 77, 40, true, 1, true, 0, false, 4});
    test_attention({DType::F64, 1, 3, 1, 33, 50, 72, false, 2, false, 0, true, 4});
    test_attention({DType::F32, 1, 2, 2, 70, 40, 96, true, 0, true, 0, false, 4});
    test_attention({DType::F32, 1, 2, 1, 37, 65, 200, true, 1, false, 0, false, 4});
    test_attention({DType::F64, 1, 2, 2, 20, 70, 200, true, 0, true, 0, true, 4});
    test_attention({DType::BF16, 1, 2, 1, 40, 90, 96, true, 2, true, 0, false, 4});
    test_attention({DType::F16, 1, 2, 2, 33, 33, 130, false, 0, false, 1, false, 4});
    test_attention_nan(DType::F64, 50, 70, 72, 4);
    test_attention_nan(DType::F32, 33, 40, 200, 4);
  }
  if (only == "vit" || only == "long") {  // the SIMT path at model sizes (f32; seconds on the emulator)
    if (only == "vit") test_attention({DType::F32, 1, 16, 16, 577, 577, 64, false, 0, false, 0, false, 4});
    for (int64_t D : {64, 128})
      if (only == "long") test_attention({DType::F32, 1, 1, 1, 2048, 2048, D, true, 0, false, 0, false, 4});
  }
  if (only == "big") {
    test_attention({DType::BF16, 1, 2, 1, 300, 300, 128, true, 0, true, 0, false, 1});
    test_attention({DType::BF16, 1, 2, 2, 257, 513, 64, true, 2, false, 0, false, 1000});
    test_matmul(DType::BF16, 1, 256, 384, 1024, false, true, true, 0, 0, false, 0, 1, true);
  }
  if (only == "fuzz") {
    const int n = argc > 2 ? std::atoi(argv[2]) : 20;
    std::uniform_int_distribution<int> u(0, 1 << 30);
    auto pick = [&](std::initializer_list<int64_t> v) { return *(v.begin() + u(rng) % v.size()); };
    for (int it = 0; it < n; it++) {
      const DType dts[] = {DType::BF16, DType::F16, DType::BF16, DType::F16, DType::F32, DType::F64};
      DType dt = dts[u(rng) % 6];
      test_matmul(dt, 1 + u(rng) % 3, 1 + u(rng) % 200, 1 + u(rng) % 200, u(rng) % 150, u(rng) % 2, u(rng) % 2,
                  u(rng) % 2, (u(rng) % 3) * 0.5, u(rng) % 3, u(rng) % 2, pick({0, 0, 0, 1, 8}), (int)pick({1, 1000}),
                  true);
      DType adt = dts[u(rng) % 4];
      int64_t D = pick({64, 80, 128, 64, 128, 32});
      int64_t Hkv = pick({1, 2}), H = Hkv * pick({1, 2, 3});
      int64_t T = pick({1, 2, 17, 64, 65, 100, 129}), S = pick({1, 5, 64, 65, 128, 200, 333});
      test_attention({adt, 1 + u(rng) % 2, H, Hkv, T, S, D, (bool)(u(rng) % 2), (int)(u(rng) % 3), (bool)(u(rng) % 2),
                      pick({0, 0, 0, 8, 2}), (bool)(u(rng) % 4 == 0), (int)pick({1, 1000})});
    }
  }
  // error paths
  expect_fail("matmul inner dims", [] {
    Tensor o = dense(DType::BF16, {1, 4, 4}, Device::CUDA), a = dense(DType::BF16, {1, 4, 3}, Device::CUDA),
           b = dense(DType::BF16, {1, 4, 4}, Device::CUDA);
    run("matmul", Device::CUDA, {o.t, a.t, b.t});
  });
  expect_fail("matmul epilogue name", [] {
    Tensor o = dense(DType::BF16, {1, 4, 4}, Device::CUDA), a = dense(DType::BF16, {1, 4, 4}, Device::CUDA),
           b = dense(DType::BF16, {1, 4, 4}, Device::CUDA);
    run("matmul", Device::CUDA, {o.t, a.t, b.t, std::monostate{}, std::monostate{}, std::string("relu")});
  });
  expect_fail("attention H % Hkv", [] {
    Tensor o = dense(DType::BF16, {1, 3, 4, 64}, Device::CUDA), l = dense(DType::F32, {1, 3, 4}, Device::CUDA),
           q = dense(DType::BF16, {1, 3, 4, 64}, Device::CUDA), k = dense(DType::BF16, {1, 2, 4, 64}, Device::CUDA);
    run("attention_fwd", Device::CUDA, {o.t, l.t, q.t, k.t, k.t, std::monostate{}, false, 1.0});
  });
  if (emu::racecheck) report(emu::hazards() == 0, "racecheck: " + std::to_string(emu::hazards()) + " hazard(s)");
  if (std::getenv("EMU_BANKS")) emu::print_bank_stats();
  std::printf("%d passed, %d failed\n", passes, failures);
  return failures ? 1 : 0;
}
