// matmul_bench.cc — GFLOP/s of the CPU `matmul` kernel on square f32 shapes (256^3 .. 2048^3), plus a
// few shapes the engine meets (x @ W^T with a transposed weight, bf16, decode GEMV, batched small).
// Prints one JSON line per case: median and best GFLOP/s over repeats (~0.6 s per case). The peer
// is bench/native/matmul_numpy.py (numpy/OpenBLAS, same shapes and fields); the machine is noisy,
// so compare only runs taken back to back, in alternating rounds.
//
//   matmul_bench [--isa avx2] [--quick]
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu_isa.h"
#include "native_util.h"

using namespace llava_native;

namespace {

struct Shape {
  const char* name;
  int64_t Bt, M, K, N;
  bool bt_col;  // b stored as [N, K] (a Linear weight) and passed transposed
  DType dt;
};

HostTensor filled(DType dt, std::vector<int64_t> shape, Rng& rng) {
  HostTensor t = make_contiguous(dt, shape);
  int64_t n = t.view.numel();
  for (int64_t i = 0; i < n; i++) put(t.view, i, rng.uniform());
  return t;
}

void bench(const Shape& s, double budget_s) {
  Rng rng(42);
  HostTensor a = filled(s.dt, {s.Bt, s.M, s.K}, rng);
  HostTensor b = s.bt_col ? filled(s.dt, {s.Bt, s.N, s.K}, rng) : filled(s.dt, {s.Bt, s.K, s.N}, rng);
  if (s.bt_col) {  // view [Bt, K, N] of the [Bt, N, K] buffer
    std::swap(b.view.shape[1], b.view.shape[2]);
    std::swap(b.view.strides[1], b.view.strides[2]);
  }
  HostTensor out = make_contiguous(s.dt, {s.Bt, s.M, s.N});
  std::vector<KernelArg> args{out.view, a.view, b.view, std::monostate{}, std::monostate{}};
  const double flop = 2.0 * s.Bt * s.M * s.N * s.K;
  call("matmul", args);  // warm up: pool, packing buffers, caches
  std::vector<double> t;
  double start = now_s();
  while ((now_s() - start < budget_s && t.size() < 1000) || t.size() < 3) {
    double t0 = now_s();
    call("matmul", args);
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  const char* isa = llava::cpu_isa_name(llava::cpu_isa());
  std::printf(
      "{\"op\":\"matmul\",\"shape\":\"%s\",\"Bt\":%lld,\"M\":%lld,\"K\":%lld,\"N\":%lld,\"b\":\"%s\",\"dtype\":\"%s\","
      "\"isa\":\"%s\",\"threads\":%d,\"median_ms\":%.4f,\"gflops\":%.1f,\"best_gflops\":%.1f,\"reps\":%zu}\n",
      s.name, (long long)s.Bt, (long long)s.M, (long long)s.K, (long long)s.N, s.bt_col ? "transposed" : "row",
      dtype_name(s.dt), isa, num_threads(), t[t.size() / 2] * 1e3, flop / t[t.size() / 2] / 1e9, flop / t[0] / 1e9,
      t.size());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; i++) {
    if (!std::strcmp(argv[i], "--quick"))
      quick = true;
    else if (!std::strcmp(argv[i], "--isa") && i + 1 < argc) {
      llava::CpuIsa cap;
      if (!llava::parse_cpu_isa(argv[++i], &cap)) {
        std::fprintf(stderr, "matmul_bench: unknown --isa %s (portable, avx2, avx512)\n", argv[i]);
        return 2;
      }
      llava::set_cpu_isa_cap(cap);
    } else {
      std::fprintf(stderr, "usage: matmul_bench [--isa portable|avx2|avx512] [--quick]\n");
      return 2;
    }
  }
  const DType F = DType::F32;
  std::vector<Shape> shapes = {
      {"square", 1, 256, 256, 256, false, F},
      {"square", 1, 512, 512, 512, false, F},
      {"square", 1, 1024, 1024, 1024, false, F},
      {"square", 1, 2048, 2048, 2048, false, F},
  };
  if (!quick) {
    std::vector<Shape> more = {
        {"x@W^T", 1, 512, 1024, 4096, true, F},  // Linear forward, weight [N, K]
        {"square_bf16", 1, 1024, 1024, 1024, false, DType::BF16},
        {"decode_gemv", 1, 1, 4096, 4096, true, F},   // T = 1, weight [N, K]
        {"batched_small", 64, 64, 64, 64, false, F},  // per-head attention-sized blocks
        {"square_f64", 1, 512, 512, 512, false, DType::F64},
    };
    shapes.insert(shapes.end(), more.begin(), more.end());
  }
  for (const Shape& s : shapes) bench(s, quick ? 0.3 : 0.6);
  return 0;
}
