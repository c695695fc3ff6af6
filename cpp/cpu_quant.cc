// cpu_quant.cc — weight-only quantization on the CPU (CUDA twin: cuda/quant.cu): `quantize` (float
// weight -> int8 per-row or NF4 per-block codes), `dequantize` (codes -> float weight) and
// `quant_matmul` (out[M,N] = x[M,K] @ dequant(W)[N,K]^T without materialising W). Formats and the NF4
// codebook: quant_checks.h.
//
// quant_matmul is the decode path (small M): each task takes a range of weight rows, expands one row
// at a time into an f32 buffer on its stack of L1 (K floats; the codes are read once, a quarter or half
// of the bytes of a bf16 row), then dots it with every row of x (converted to f32 once per call). For
// large M the op layer (lib/ops/quant.ts) instead dequantizes the whole weight and runs the blocked
// GEMM, whose packing amortises far better than M dot products per row. f64 inputs (gradient checks)
// accumulate in f64; everything else in f32 with one rounding on store.
//
// Built twice (cpu_isa.h): the portable copy uses plain loops, the AVX2 copy (LLAVA_AVX2) the table
// lookups and FMA dot products below; LLAVA_CPU_KERNEL picks one per call.
#include <array>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_common.h"
#include "quant_checks.h"

namespace llava {
namespace {

// 16 NF4 codes (8 bytes, even element e first) -> 16 floats per iteration, while [e, stop) holds 16: each
// nibble indexes the block's scaled 16-entry table with two in-register permutes (entries 0-7, 8-15) and a
// blend on the index's bit 3 (shifted into the sign bit); high and low nibbles are then interleaved back
// into element order. Returns the first element not done; advances d. (Portable build: does nothing.)
#if LLAVA_AVX2
inline int64_t nf4_bytes_avx2(const uint8_t* q, int64_t e, int64_t stop, const float* lut, float*& d) {
  const __m256 t0 = _mm256_loadu_ps(lut), t1 = _mm256_loadu_ps(lut + 8);
  const __m256i m15 = _mm256_set1_epi32(15);
  auto look = [&](__m256i idx) {
    const __m256 a = _mm256_permutevar8x32_ps(t0, idx), b = _mm256_permutevar8x32_ps(t1, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
  };
  for (; e + 16 <= stop; e += 16) {
    int64_t bytes;
    std::memcpy(&bytes, q + (e >> 1), 8);
    const __m256i v = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes));
    const __m256 hi = look(_mm256_srli_epi32(v, 4)), lo = look(_mm256_and_si256(v, m15));
    const __m256 a = _mm256_unpacklo_ps(hi, lo), b = _mm256_unpackhi_ps(hi, lo);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(a, b, 0x20));
    _mm256_storeu_ps(d + 8, _mm256_permute2f128_ps(a, b, 0x31));
    d += 16;
  }
  return e;
}
#else
inline int64_t nf4_bytes_avx2(const uint8_t*, int64_t e, int64_t, const float*, float*&) { return e; }
#endif

// Row n of the weight (K values) into dst as acc type F.
template <typename F> void dequant_row(const QuantArgs& A, const uint8_t* q, const float* sc, int64_t n, F* dst) {
  const int64_t K = A.K;
  if (A.format == QuantFormat::INT8) {
    const int8_t* row = reinterpret_cast<const int8_t*>(q) + n * K;
    const float s = sc[n];
    for (int64_t k = 0; k < K; k++) dst[k] = F(row[k]) * F(s);
    return;
  }
  // NF4: walk the row block by block (block starts are even, so only the row's first element can sit in
  // a low nibble); each block's 16 levels are scaled once, then every byte gives two table lookups.
  const int64_t e0 = n * K, end = e0 + K;
  int64_t e = e0;
  F* d = dst;
  while (e < end) {
    const int64_t blk = e / A.block, stop = std::min(end, (blk + 1) * A.block);
    static const auto levels = [] {
      std::array<float, 16> v{};
      for (int c = 0; c < 16; c++) v[c] = nf4_level(c);
      return v;
    }();
    F lut[16];
    for (int c = 0; c < 16; c++) lut[c] = F(levels[c]) * F(sc[blk]);
    if (e & 1) *d++ = lut[q[e++ >> 1] & 15];
    if constexpr (std::is_same_v<F, float>) e = nf4_bytes_avx2(q, e, stop, lut, d);
    for (; e + 1 < stop; e += 2) {
      const uint8_t b = q[e >> 1];
      d[0] = lut[b >> 4];
      d[1] = lut[b & 15];
      d += 2;
    }
    if (e < stop) *d++ = lut[q[e++ >> 1] >> 4];
  }
}

inline float dot_f32(const float* a, const float* b, int64_t K) {
  int64_t k = 0;
#if LLAVA_AVX2
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (; k + 16 <= K; k += 16) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
  }
  for (; k + 8 <= K; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
  s0 = _mm256_add_ps(s0, s1);
  alignas(32) float t[8];
  _mm256_store_ps(t, s0);
#else
  // Eight running sums in the same lanes as the AVX2 copy; plain code the compiler vectorises.
  float t[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (; k + 8 <= K; k += 8)
    for (int l = 0; l < 8; l++) t[l] += a[k + l] * b[k + l];
#endif
  float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; k < K; k++) s += a[k] * b[k];
  return s;
}
inline double dot_any(const double* a, const double* b, int64_t K) {
  double s = 0;
  for (int64_t k = 0; k < K; k++) s += a[k] * b[k];
  return s;
}
inline float dot_any(const float* a, const float* b, int64_t K) { return dot_f32(a, b, K); }

// quantize(q, scales, w[N,K], format, N, K, block)
void quantize_kernel(const KernelArgs& a) {
  const TensorArg* w = nullptr;
  const QuantArgs A = parse_quantize(a, w);
  const int64_t N = A.N, K = A.K, n = N * K;
  uint8_t* q = A.q->data<uint8_t>();
  float* sc = A.scales->data<float>();
  if (n == 0) return;
  LLAVA_DISPATCH_FLOAT(a, w->dtype, T_, {
    const T_* src = w->data<T_>();
    if (A.format == QuantFormat::INT8) {
      parallel_for(N, 8, [&](int64_t b, int64_t e) {
        for (int64_t r = b; r < e; r++) {
          double amax = 0;
          for (int64_t k = 0; k < K; k++) amax = std::max(amax, std::fabs(double(load(src + r * K + k))));
          const float s = float(amax / 127.0);
          sc[r] = s;
          for (int64_t k = 0; k < K; k++) {
            const float v = s > 0 ? std::nearbyint(float(load(src + r * K + k)) / s) : 0.f;
            q[r * K + k] = uint8_t(int8_t(std::max(-127.f, std::min(127.f, v))));
          }
        }
      });
    } else {
      const int64_t bs = A.block, nb = (n + bs - 1) / bs;
      parallel_for(nb, 16, [&](int64_t b, int64_t e) {
        for (int64_t blk = b; blk < e; blk++) {
          const int64_t lo = blk * bs, hi = std::min(n, lo + bs);
          float amax = 0;
          for (int64_t i = lo; i < hi; i++) amax = std::max(amax, std::fabs(float(load(src + i))));
          sc[blk] = amax;
          // bs is even, so a block owns whole bytes (the last byte of an odd-sized weight keeps 0 low).
          for (int64_t i = lo; i < hi; i += 2) {
            const int c0 = nf4_code(amax > 0 ? float(load(src + i)) / amax : 0.f);
            const int c1 = i + 1 < hi ? nf4_code(amax > 0 ? float(load(src + i + 1)) / amax : 0.f) : 0;
            q[i >> 1] = uint8_t((c0 << 4) | c1);
          }
        }
      });
    }
  });
}

// dequantize(out[N,K], q, scales, format, N, K, block)
void dequantize_kernel(const KernelArgs& a) {
  const TensorArg* out = nullptr;
  const QuantArgs A = parse_dequantize(a, out);
  if (A.N * A.K == 0) return;
  const uint8_t* q = A.q->data<uint8_t>();
  const float* sc = A.scales->data<float>();
  LLAVA_DISPATCH_FLOAT(a, out->dtype, T_, {
    using F = acc_t<T_>;
    T_* o = out->data<T_>();
    parallel_for(A.N, 16, [&](int64_t b, int64_t e) {
      std::vector<F> row(A.K);
      for (int64_t r = b; r < e; r++) {
        dequant_row<F>(A, q, sc, r, row.data());
        for (int64_t k = 0; k < A.K; k++) store(o + r * A.K + k, row[k]);
      }
    });
  });
}

// quant_matmul(out[M,N], x[M,K], q, scales, format, N, K, block)
void quant_matmul_kernel(const KernelArgs& a) {
  const TensorArg *out = nullptr, *x = nullptr;
  const QuantArgs A = parse_quant_matmul(a, out, x);
  const int64_t M = x->shape[0], N = A.N, K = A.K;
  if (M * N == 0) return;
  const uint8_t* q = A.q->data<uint8_t>();
  const float* sc = A.scales->data<float>();
  LLAVA_DISPATCH_FLOAT(a, x->dtype, T_, {
    using F = acc_t<T_>;
    // x widened once (M is small on this path).
    std::vector<F> xf(size_t(M * K));
    const T_* px = x->data<T_>();
    for (int64_t m = 0; m < M; m++)
      for (int64_t k = 0; k < K; k++) xf[m * K + k] = load(px + m * x->strides[0] + k);
    T_* o = out->data<T_>();
    parallel_for(N, 16, [&](int64_t b, int64_t e) {
      std::vector<F> row(static_cast<size_t>(K));
      for (int64_t n = b; n < e; n++) {
        dequant_row<F>(A, q, sc, n, row.data());
        for (int64_t m = 0; m < M; m++) store(o + m * N + n, K ? dot_any(xf.data() + m * K, row.data(), K) : F(0));
      }
    });
  });
}

}  // namespace

LLAVA_CPU_KERNEL("quantize", quantize_kernel, cpu_quantize);
LLAVA_CPU_KERNEL("dequantize", dequantize_kernel, cpu_dequantize);
LLAVA_CPU_KERNEL("quant_matmul", quant_matmul_kernel, cpu_quant_matmul);

}  // namespace llava
