// isa/gemm_avx512.cc — AVX-512 GEMM micro-kernels (built with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq on x86-64; empty elsewhere). Called by cpu_matmul.cc when cpu_isa() is avx512 (the bf16
// one also needs cpu_has_avx512_bf16()).
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#include <immintrin.h>

#include <cstring>

namespace llava {
namespace isa {

// Writes a finished 12 x 32 accumulator tile: on the first k block C = acc + bias + beta * C, after it
// C += acc.
__attribute__((always_inline)) static inline void store_tile_12x32(__m512 (&c)[12][2], float* C, int64_t ldc, bool first, float beta, const float* bias) {
  constexpr int MR = 12;
  if (first) {
    __m512 bb0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    __m512 bb1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
    __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      float* cr = C + r * ldc;
      __m512 v0 = _mm512_add_ps(c[r][0], bb0), v1 = _mm512_add_ps(c[r][1], bb1);
      if (beta != 0.f) {
        v0 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr), v0);
        v1 = _mm512_fmadd_ps(vb, _mm512_loadu_ps(cr + 16), v1);
      }
      _mm512_storeu_ps(cr, v0);
      _mm512_storeu_ps(cr + 16, v1);
    }
  } else {
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      float* cr = C + r * ldc;
      _mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), c[r][0]));
      _mm512_storeu_ps(cr + 16, _mm512_add_ps(_mm512_loadu_ps(cr + 16), c[r][1]));
    }
  }
}

// 12 x 32 f32 tile in 24 zmm accumulators; the A broadcasts fold into the FMAs ({1to16}).
void sgemm_ukr_avx512_12x32(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool first, float beta,
                            const float* bias) {
  constexpr int MR = 12, NR = 32;
  __m512 c[MR][2];
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
  for (int r = 0; r < MR; r++) _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; k++) {
    __m512 b0 = _mm512_load_ps(B), b1 = _mm512_load_ps(B + 16);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      __m512 a = _mm512_set1_ps(A[r]);
      c[r][0] = _mm512_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm512_fmadd_ps(a, b1, c[r][1]);
    }
    A += MR;
    B += NR;
  }
  store_tile_12x32(c, C, ldc, first, beta, bias);
}

// bf16 x bf16 -> f32, 12 x 32 tile: vdpbf16ps multiplies a pair of bf16 along k and adds both
// products into an f32 lane, so one instruction does 16 lanes x 2 k. Panels hold bf16 in pairs
// along k ("VNNI" layout): A[(k2 * 12 + r) * 2 + e], B[(k2 * 32 + j) * 2 + e] for k = 2 k2 + e.
// Needs AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4): only this function is compiled for it.
__attribute__((target("avx512bf16"))) void bf16gemm_ukr_avx512_12x32(int64_t kp, const uint16_t* A, const uint16_t* B,
                                                                     float* C, int64_t ldc, bool first, float beta,
                                                                     const float* bias) {
  constexpr int MR = 12;
  __m512 c[MR][2];
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm512_setzero_ps();
  for (int r = 0; r < MR; r++) _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
#pragma GCC unroll 2
  for (int64_t k = 0; k < kp; k++) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(B), b1 = (__m512bh)_mm512_loadu_si512(B + 32);
#pragma GCC unroll 12
    for (int r = 0; r < MR; r++) {
      int32_t pair;
      std::memcpy(&pair, A + 2 * r, 4);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      c[r][0] = _mm512_dpbf16_ps(c[r][0], a, b0);
      c[r][1] = _mm512_dpbf16_ps(c[r][1], a, b1);
    }
    A += 2 * MR;
    B += 64;
  }
  store_tile_12x32(c, C, ldc, first, beta, bias);
}

// B panel for the bf16 tile from 32 contiguous columns (row stride sk): rows k and k+1 interleaved
// 16 bits at a time, dst[(k2 * 32 + j) * 2 + e] = src[(2 k2 + e) * sk + j]; an odd last row pairs with 0.
void bf16_pack_rows32_avx512(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst) {
  alignas(64) static const uint16_t lo_idx[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                  8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t hi_idx[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                  24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  int64_t k = 0;
  for (; k + 2 <= kc; k += 2, dst += 64) {
    __m512i r0 = _mm512_loadu_si512(src + k * sk), r1 = _mm512_loadu_si512(src + (k + 1) * sk);
    _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(r0, lo, r1));
    _mm512_storeu_si512(dst + 32, _mm512_permutex2var_epi16(r0, hi, r1));
  }
  if (k < kc) {
    __m512i r0 = _mm512_loadu_si512(src + k * sk), z = _mm512_setzero_si512();
    _mm512_storeu_si512(dst, _mm512_permutex2var_epi16(r0, lo, z));
    _mm512_storeu_si512(dst + 32, _mm512_permutex2var_epi16(r0, hi, z));
  }
}

// In-register transpose of a 16 x 16 matrix of 32-bit words (row i in r[i] -> column i in r[i]):
// 32-bit and 64-bit interleaves inside each 128-bit lane, then two rounds of 128-bit block shuffles.
__attribute__((always_inline)) static inline void transpose_16x16_epi32(__m512i (&r)[16]) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
#pragma GCC unroll 4
  for (int g = 0; g < 4; g++) {  // r[4g + c]: word 4b + c of rows 4g..4g+3, in 128-bit block b
    r[4 * g] = _mm512_unpacklo_epi64(t[4 * g], t[4 * g + 2]);
    r[4 * g + 1] = _mm512_unpackhi_epi64(t[4 * g], t[4 * g + 2]);
    r[4 * g + 2] = _mm512_unpacklo_epi64(t[4 * g + 1], t[4 * g + 3]);
    r[4 * g + 3] = _mm512_unpackhi_epi64(t[4 * g + 1], t[4 * g + 3]);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; c++) {
    t[c] = _mm512_shuffle_i32x4(r[c], r[4 + c], 0x88);
    t[4 + c] = _mm512_shuffle_i32x4(r[c], r[4 + c], 0xdd);
    t[8 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0x88);
    t[12 + c] = _mm512_shuffle_i32x4(r[8 + c], r[12 + c], 0xdd);
  }
#pragma GCC unroll 4
  for (int c = 0; c < 4; c++) {
    r[c] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0x88);
    r[8 + c] = _mm512_shuffle_i32x4(t[c], t[8 + c], 0xdd);
    r[4 + c] = _mm512_shuffle_i32x4(t[4 + c], t[12 + c], 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(t[4 + c], t[12 + c], 0xdd);
  }
}

// B panel for the bf16 tile from 32 rows of contiguous depth (x @ W^T: row w of W at src + w * sw):
// each k pair is one 32-bit word. Whole blocks of 16 pairs are read as 64-byte row pieces and
// transposed in registers (16 rows at a time); the remaining pairs are gathered across the 32 rows,
// 16 at a time. Needs 31 * sw < 2^31.
void bf16_pack_cols32_avx512(const uint16_t* src, int64_t sw, int64_t kc, uint16_t* dst) {
  int64_t k2 = 0;
  for (; 2 * k2 + 32 <= kc; k2 += 16, dst += 16 * 64) {
#pragma GCC unroll 2
    for (int h = 0; h < 2; h++) {
      __m512i r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_si512(src + (16 * h + i) * sw + 2 * k2);
      transpose_16x16_epi32(r);
#pragma GCC unroll 16
      for (int j = 0; j < 16; j++) _mm512_storeu_si512(dst + j * 64 + 32 * h, r[j]);
    }
  }
  const __m512i step = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i lo = _mm512_mullo_epi32(step, _mm512_set1_epi32(int32_t(sw)));
  const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(int32_t(16 * sw)));
  for (; 2 * k2 + 1 < kc; k2++, dst += 64) {
    const uint16_t* base = src + 2 * k2;
    _mm512_storeu_si512(dst, _mm512_i32gather_epi32(lo, base, 2));
    _mm512_storeu_si512(dst + 32, _mm512_i32gather_epi32(hi, base, 2));
  }
  if (2 * k2 < kc)  // odd kc: the last pair's second half is zero
    for (int w = 0; w < 32; w++) {
      dst[2 * w] = src[w * sw + 2 * k2];
      dst[2 * w + 1] = 0;
    }
}

}  // namespace isa
}  // namespace llava
#endif
