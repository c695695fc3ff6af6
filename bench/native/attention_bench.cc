// attention_bench.cc — GFLOP/s of the CPU `attention_fwd` / `attention_bwd` kernels, with a naive
// materialised attention timed in the same process as the baseline (ratio = naive ms / kernel ms).
//
// Shapes: vit_l14_336 (B1 H16 T577 D64, full), llama7b_train (B1 H32 T2048 D128, causal),
// llama7b_decode (B1 H32 T1 S2048 D128) and a GQA decode (H32 Hkv8). FLOPs: forward 4*B*H*D per
// visible (query, key) pair (the two matmuls): T*S, or for causal the exact bottom-right count
// (T(T+1)/2 when T = S, i.e. halved; all S keys for T = 1 decode); backward 2.5x the forward (five
// matmuls instead of two), so fwd+bwd = 3.5x. The baseline materialises the T x S scores per head (f32, loops the compiler
// vectorises, parallel over heads) like the composite fallback: scores, mask, softmax, P V; and for
// the backward dP, dS, dQ, dK, dV from the stored P. One JSON line per case; median of the repeats.
//
//   attention_bench [--quick]      (--quick: fewer repeats, no naive run for the largest shape)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "native_util.h"

using namespace llava_native;

namespace {

struct Case {
  const char* scenario;
  int64_t B, H, Hkv, T, S, D;
  bool causal;
  DType dt;
  bool bwd;    // also time forward + backward
  bool naive;  // also time the naive baseline
};

HostTensor filled(DType dt, std::vector<int64_t> shape, Rng& rng) {
  HostTensor t = make_contiguous(dt, shape);
  for (int64_t i = 0; i < t.view.numel(); i++) put(t.view, i, rng.uniform());
  return t;
}

template <typename F> double median_ms(F&& f, double budget_s, int min_reps) {
  std::vector<double> ms;
  double start = now_s();
  while ((int)ms.size() < min_reps || (now_s() - start < budget_s && ms.size() < 50)) {
    double t0 = now_s();
    f();
    ms.push_back((now_s() - t0) * 1e3);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// ------------------------------------------------------------------ naive materialised baseline (f32, MHA)
struct Naive {
  int64_t B, H, T, S, D;
  bool causal;
  float scale;
  const float *q, *k, *v, *dout;
  float *out, *dq, *dk, *dv;

  // P (T x S, normalised) for one head; kt is D x S scratch.
  void probs(int64_t bh, float* P, float* kt) const {
    const float *Q = q + bh * T * D, *K = k + bh * S * D;
    for (int64_t j = 0; j < S; j++)
      for (int64_t d = 0; d < D; d++) kt[d * S + j] = K[j * D + d];
    for (int64_t i = 0; i < T; i++) {
      float* row = P + i * S;
      std::fill(row, row + S, 0.f);
      for (int64_t d = 0; d < D; d++) {
        float qv = Q[i * D + d] * scale;
        for (int64_t j = 0; j < S; j++) row[j] += qv * kt[d * S + j];
      }
      if (causal)
        for (int64_t j = std::max<int64_t>(0, i + S - T + 1); j < S; j++) row[j] = -INFINITY;
      float m = -INFINITY, l = 0;
      for (int64_t j = 0; j < S; j++) m = std::max(m, row[j]);
      for (int64_t j = 0; j < S; j++) l += (row[j] = std::exp(row[j] - m));
      for (int64_t j = 0; j < S; j++) row[j] /= l;
    }
  }
  void fwd() const {
    parallel_for(B * H, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> P(T * S), kt(D * S);
      for (int64_t bh = b0; bh < b1; bh++) {
        probs(bh, P.data(), kt.data());
        const float* V = v + bh * S * D;
        for (int64_t i = 0; i < T; i++) {
          float* o = out + (bh * T + i) * D;
          std::fill(o, o + D, 0.f);
          for (int64_t j = 0; j < S; j++) {
            float p = P[i * S + j];
            for (int64_t d = 0; d < D; d++) o[d] += p * V[j * D + d];
          }
        }
      }
    });
  }
  void bwd() const {
    parallel_for(B * H, 1, [&](int64_t b0, int64_t b1) {
      std::vector<float> P(T * S), dP(T * S), kt(D * S), vt(D * S);
      for (int64_t bh = b0; bh < b1; bh++) {
        probs(bh, P.data(), kt.data());
        const float *Q = q + bh * T * D, *K = k + bh * S * D, *V = v + bh * S * D, *dO = dout + bh * T * D;
        float *dQ = dq + bh * T * D, *dK = dk + bh * S * D, *dV = dv + bh * S * D;
        for (int64_t j = 0; j < S; j++)
          for (int64_t d = 0; d < D; d++) vt[d * S + j] = V[j * D + d];
        std::fill(dK, dK + S * D, 0.f);
        std::fill(dV, dV + S * D, 0.f);
        for (int64_t i = 0; i < T; i++) {
          float *dp = dP.data() + i * S, *p = P.data() + i * S;
          std::fill(dp, dp + S, 0.f);
          for (int64_t d = 0; d < D; d++) {
            float g = dO[i * D + d];
            for (int64_t j = 0; j < S; j++) dp[j] += g * vt[d * S + j];
          }
          float delta = 0;
          for (int64_t j = 0; j < S; j++) delta += p[j] * dp[j];
          for (int64_t j = 0; j < S; j++) dp[j] = p[j] * (dp[j] - delta) * scale;
          float* dqi = dQ + i * D;
          std::fill(dqi, dqi + D, 0.f);
          for (int64_t j = 0; j < S; j++) {
            float ds = dp[j], pj = p[j];
            for (int64_t d = 0; d < D; d++) {
              dqi[d] += ds * K[j * D + d];
              dK[j * D + d] += ds * Q[i * D + d];
              dV[j * D + d] += pj * dO[i * D + d];
            }
          }
        }
      }
    });
  }
};

void bench(const Case& c, bool quick) {
  Rng rng(7);
  const double scale = 1.0 / std::sqrt(double(c.D));
  HostTensor q = filled(c.dt, {c.B, c.H, c.T, c.D}, rng), k = filled(c.dt, {c.B, c.Hkv, c.S, c.D}, rng),
             v = filled(c.dt, {c.B, c.Hkv, c.S, c.D}, rng), dout = filled(c.dt, {c.B, c.H, c.T, c.D}, rng);
  HostTensor out = make_contiguous(c.dt, {c.B, c.H, c.T, c.D}), lse = make_contiguous(DType::F32, {c.B, c.H, c.T});
  HostTensor dq = make_contiguous(c.dt, {c.B, c.H, c.T, c.D}), dk = make_contiguous(c.dt, {c.B, c.Hkv, c.S, c.D}),
             dv = make_contiguous(c.dt, {c.B, c.Hkv, c.S, c.D});
  const KernelArg none = std::monostate{};
  auto fwd = [&] { call("attention_fwd", {out.view, lse.view, q.view, k.view, v.view, none, c.causal, scale}); };
  auto bwd = [&] {
    call("attention_bwd",
         {dq.view, dk.view, dv.view, q.view, k.view, v.view, out.view, dout.view, lse.view, none, c.causal, scale});
  };
  const double budget = quick ? 0.3 : 1.5;
  const int reps = quick ? 1 : 3;
  double pairs = 0;
  for (int64_t i = 0; i < c.T; i++)
    pairs += c.causal ? double(std::clamp<int64_t>(i + c.S - c.T + 1, 0, c.S)) : double(c.S);
  double flops = 4.0 * c.B * c.H * pairs * c.D;
  fwd();  // warm up (pool, page faults)
  double fwd_ms = median_ms(fwd, budget, reps);
  double fb_ms = 0;
  if (c.bwd) {
    bwd();
    fb_ms = median_ms(
        [&] {
          fwd();
          bwd();
        },
        budget, reps);
  }
  double naive_fwd_ms = 0, naive_fb_ms = 0;
  const bool run_naive = c.naive && c.dt == DType::F32 && c.H == c.Hkv && !(quick && c.T * c.S > 1000000);
  if (run_naive) {
    HostTensor nout = make_contiguous(c.dt, {c.B, c.H, c.T, c.D});
    HostTensor ndq = make_contiguous(c.dt, {c.B, c.H, c.T, c.D}), ndk = make_contiguous(c.dt, {c.B, c.H, c.S, c.D}),
               ndv = make_contiguous(c.dt, {c.B, c.H, c.S, c.D});
    Naive n{c.B,
            c.H,
            c.T,
            c.S,
            c.D,
            c.causal,
            float(scale),
            q.view.data<float>(),
            k.view.data<float>(),
            v.view.data<float>(),
            dout.view.data<float>(),
            nout.view.data<float>(),
            ndq.view.data<float>(),
            ndk.view.data<float>(),
            ndv.view.data<float>()};
    const int nreps = c.T * c.S > 1000000 ? 1 : reps;
    naive_fwd_ms = median_ms([&] { n.fwd(); }, budget, nreps);
    if (c.bwd)
      naive_fb_ms = median_ms(
          [&] {
            n.fwd();
            n.bwd();
          },
          budget, nreps);
    // sanity: the kernel and the baseline agree
    double err = 0;
    for (int64_t i = 0; i < out.view.numel(); i++) err = std::max(err, std::fabs(get(out.view, i) - get(nout.view, i)));
    if (err > 1e-4) std::fprintf(stderr, "warning: kernel and naive outputs differ by %g\n", err);
  }
  auto line = [&](const char* op, double ms, double fl, double base_ms) {
    std::printf(
        "{\"op\":\"%s\",\"scenario\":\"%s\",\"shape\":\"B%lld H%lld Hkv%lld T%lld S%lld D%lld%s\",\"dtype\":\"%s\","
        "\"device\":\"cpu\",\"threads\":%d,\"median_ms\":%.3f,\"gflops\":%.2f",
        op, c.scenario, (long long)c.B, (long long)c.H, (long long)c.Hkv, (long long)c.T, (long long)c.S,
        (long long)c.D, c.causal ? " causal" : "", dtype_name(c.dt), num_threads(), ms, fl / ms * 1e-6);
    if (base_ms > 0)
      std::printf(",\"baseline\":\"naive materialised\",\"baseline_ms\":%.3f,\"ratio\":%.2f", base_ms, base_ms / ms);
    std::printf("}\n");
    std::fflush(stdout);
  };
  line("attention_fwd", fwd_ms, flops, naive_fwd_ms);
  if (c.bwd) line("attention_fwd+bwd", fb_ms, 3.5 * flops, naive_fb_ms);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const Case cases[] = {
      {"vit_l14_336", 1, 16, 16, 577, 577, 64, false, DType::F32, true, true},
      {"vit_l14_336", 1, 16, 16, 577, 577, 64, false, DType::BF16, true, false},
      {"llama7b_train", 1, 32, 32, 2048, 2048, 128, true, DType::F32, true, true},
      {"llama7b_decode", 1, 32, 32, 1, 2048, 128, true, DType::F32, false, true},
      {"llama7b_decode", 1, 32, 32, 1, 2048, 128, true, DType::BF16, false, false},
      {"gqa_decode", 1, 32, 8, 1, 4096, 128, true, DType::F32, false, false},
  };
  for (const Case& c : cases) bench(c, quick);
  return 0;
}
