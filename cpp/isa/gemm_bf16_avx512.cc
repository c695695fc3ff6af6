// isa/gemm_bf16_avx512.cc — the AVX512-BF16 GEMM micro-kernel and its panel packers. The file is built
// with the AVX-512 flags (scripts/sources.js) and, by the pragma below, for AVX512-BF16 too (vdpbf16ps,
// vcvtneps2bf16); cpu_matmul.cc calls it only when cpu_has_avx512_bf16().
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#pragma GCC target("avx512bf16")
#define LLAVA_ACT_HW_BF16 1
#include <cstring>

#include <type_traits>

#include "../cpu_common.h"
#include "act_lanes.h"
#include "gemm_parts.h"

namespace llava {
namespace isa {

// The bf16 GEMM tiles: vdpbf16ps multiplies a pair of bf16 along k and adds both products into an f32
// lane, so one instruction does 16 lanes x 2 k. Operands hold bf16 in pairs along k ("VNNI" layout). B is a
// packed panel BW (32 or 64) columns wide, B[(k2 * BW + j) * 2 + e] for k = 2 k2 + e, zero past the
// product's columns; the tile computes the panel's first 16 * Q columns. A is either a packed 12-row panel
// (row r at A[(k2 * 12 + r) * 2 + e]) or, with RowA, rows of a row-major matrix read in place (row r at
// A + r * lda, whose k pairs are already adjacent; the rows are reached as four base pointers plus 0, 1 or
// 2 row strides, an x86 addressing mode).
//   12 x 32 (R <= 12, Q 2, BW 32, packed A): attention's products, and matmuls whose A needs packing.
//   6 x 64 (R <= 6, Q 4, or 2 for a right edge of at most 32 columns, BW 64, A in place): matmuls with a
//   row-major A. The shape oneDNN's brgemm uses on this ISA; six rows a power-of-two stride apart share
//   an L1 set without overflowing its eight ways (a 12-row tile reading in place ran at half speed at
//   2048^3), and with no A panels the threads can split the columns, each packing only its part of B.
// Only the first `cols` columns are stored (masked). Without out16, C = first ? acc + bias + beta * C :
// C + acc (C is not read when first and beta is 0). With out16 (the last depth block of a bf16 product)
// the finished tile, first ? acc + bias : C + acc, plus beta * out16 when beta is not 0, is rounded once
// and written to out16 (row stride ldo); C is then only read. R below the tile's height runs the first R
// rows (a product's bottom edge). noinline: one copy per shape, called from the row dispatch below, which
// would otherwise take in the short tiles and grow to thousands of instructions.
template <int R, int Q, int BW, bool RowA>
__attribute__((noinline)) static void tile(int64_t kp, const uint16_t* A, int64_t lda, const uint16_t* B, int cols,
                                           float* C, int64_t ldc, bool first, float beta, const float* bias,
                                           uint16_t* out16, int64_t ldo) {
  __m512 c[R][Q];
#pragma GCC unroll 12
  for (int r = 0; r < R; r++)
    for (int q = 0; q < Q; q++) c[r][q] = _mm512_setzero_ps();
  if (!(out16 && first))  // C is read or written
    for (int r = 0; r < R; r++) _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
  const int64_t ldab = lda * 2;
  const char* base[4];  // RowA: row 3 g + t at base[g] + t * ldab
  for (int g = 0; g < 4; g++) base[g] = reinterpret_cast<const char*>(A) + (RowA ? 3 * g * ldab : 0);
#pragma GCC unroll 2
  for (int64_t k = 0; k < kp; k++) {
    __m512bh b[Q];
#pragma GCC unroll 4
    for (int q = 0; q < Q; q++) b[q] = (__m512bh)_mm512_loadu_si512(B + 32 * q);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
      int32_t pair;
      std::memcpy(&pair, RowA ? base[r / 3] + (r % 3) * ldab : base[0] + 4 * r, 4);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int q = 0; q < Q; q++) c[r][q] = _mm512_dpbf16_ps(c[r][q], a, b[q]);
    }
    for (int g = 0; g < (RowA ? 4 : 1); g++) base[g] += RowA ? 4 : 4 * 12;  // (packed: the 12-row panel)
    B += 2 * BW;
  }
  for (int q = 0; q < Q && cols > 16 * q; q++) {
    const int n = cols - 16 * q;
    const __m512 bb = first && bias ? _mm512_maskz_loadu_ps(lane_mask(n), bias + 16 * q) : _mm512_setzero_ps();
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
      finish_row16(c[r][q], n, first, bb, beta, C + r * ldc + 16 * q, out16 ? out16 + r * ldo + 16 * q : nullptr);
  }
}

// Calls f(std::integral_constant<int, rows>) for rows in 1..R (the tile heights); nothing outside it.
template <int R, typename F> static void with_rows(int rows, F&& f) {
  if constexpr (R > 1)
    if (rows < R) return with_rows<R - 1>(rows, f);
  if (rows == R) f(std::integral_constant<int, R>{});
}

void bf16gemm_ukr_avx512_rows_x32(int rows, int cols, int64_t kp, const uint16_t* A, const uint16_t* B, float* C,
                                  int64_t ldc, bool first, float beta, const float* bias, uint16_t* out16,
                                  int64_t ldo) {
  with_rows<12>(rows, [&](auto r) {
    tile<decltype(r)::value, 2, 32, false>(kp, A, 0, B, cols, C, ldc, first, beta, bias, out16, ldo);
  });
}

void bf16gemm_ukr_avx512_rows_x64(int rows, int cols, int64_t kp, const uint16_t* A, int64_t lda, const uint16_t* B,
                                  float* C, int64_t ldc, bool first, float beta, const float* bias, uint16_t* out16,
                                  int64_t ldo) {
  with_rows<6>(rows, [&](auto r) {
    constexpr int R = decltype(r)::value;
    if (cols > 32)
      tile<R, 4, 64, true>(kp, A, lda, B, cols, C, ldc, first, beta, bias, out16, ldo);
    else
      tile<R, 2, 64, true>(kp, A, lda, B, cols, C, ldc, first, beta, bias, out16, ldo);
  });
}

// A panel (W = 12) or B panel (W = 32, 64) for the bf16 tiles from W contiguous columns (row stride sk; a
// row-major B, or the transposed A of dW = dYᵀ X): rows k and k+1 interleaved 16 bits at a time,
// dst[(k2 * W + j) * 2 + e] = src[(2 k2 + e) * sk + j]; an odd last row pairs with 0. W = 64 is two
// 32-column halves side by side.
template <int W> static void pack_rows(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst) {
  static_assert(W <= 32 || W == 64, "up to 32 columns, or two halves of 32");
  constexpr int H = W == 64 ? 32 : W;  // columns per half
  alignas(64) static const uint16_t lo_idx[32] = {0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
                                                  8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  alignas(64) static const uint16_t hi_idx[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
                                                  24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
  const __m512i lo = _mm512_load_si512(lo_idx), hi = _mm512_load_si512(hi_idx);
  const __mmask32 in = H == 32 ? ~__mmask32(0) : __mmask32((1u << H) - 1);
  auto row = [&](int64_t k, int h) { return _mm512_maskz_loadu_epi16(in, src + k * sk + h * 32); };
  auto put = [&](__m512i r0, __m512i r1, uint16_t* d) {
    if constexpr (H == 32) {
      _mm512_storeu_si512(d, _mm512_permutex2var_epi16(r0, lo, r1));
      _mm512_storeu_si512(d + 32, _mm512_permutex2var_epi16(r0, hi, r1));
    } else if constexpr (H > 16) {
      _mm512_storeu_si512(d, _mm512_permutex2var_epi16(r0, lo, r1));
      _mm512_mask_storeu_epi16(d + 32, __mmask32((1u << (2 * H - 32)) - 1), _mm512_permutex2var_epi16(r0, hi, r1));
    } else {
      _mm512_mask_storeu_epi16(d, __mmask32((uint64_t(1) << 2 * H) - 1), _mm512_permutex2var_epi16(r0, lo, r1));
    }
  };
  int64_t k = 0;
  for (; k + 2 <= kc; k += 2, dst += 2 * W)
    for (int h = 0; h < W / H; h++) put(row(k, h), row(k + 1, h), dst + 2 * H * h);
  if (k < kc)
    for (int h = 0; h < W / H; h++) put(row(k, h), _mm512_setzero_si512(), dst + 2 * H * h);
}

void bf16_pack_rows12_avx512(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst) {
  pack_rows<12>(src, sk, kc, dst);
}
void bf16_pack_rows32_avx512(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst) {
  pack_rows<32>(src, sk, kc, dst);
}
void bf16_pack_rows64_avx512(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst) {
  pack_rows<64>(src, sk, kc, dst);
}

// A panel for the bf16 tile from 12 f32 columns of kc rows (row stride sk), rounded to bf16
// (vcvtne2ps2bf16), rows k and k+1 interleaved: dst[(k2 * 12 + j) * 2 + e] = src[(2 k2 + e) * sk + j];
// an odd last row pairs with 0. (The transposed operand of attention's dV += P^T dO, dK += dS^T Q.)
void bf16_pack_f32_rows12_avx512(const float* src, int64_t sk, int64_t kc, uint16_t* dst) {
  alignas(64) static const uint16_t idx[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                               8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i ix = _mm512_load_si512(idx);
  const __mmask16 m12 = 0x0fff;
  int64_t k = 0;
  for (; k + 2 <= kc; k += 2, dst += 24) {
    const __m512 r0 = _mm512_maskz_loadu_ps(m12, src + k * sk), r1 = _mm512_maskz_loadu_ps(m12, src + (k + 1) * sk);
    _mm512_mask_storeu_epi32(dst, m12, _mm512_permutexvar_epi16(ix, __m512i(_mm512_cvtne2ps_pbh(r1, r0))));
  }
  if (k < kc) {
    const __m512 r0 = _mm512_maskz_loadu_ps(m12, src + k * sk);
    _mm512_mask_storeu_epi32(dst, m12,
                             _mm512_permutexvar_epi16(ix, __m512i(_mm512_cvtne2ps_pbh(_mm512_setzero_ps(), r0))));
  }
}

// A (W = 12) or B (W = 32) panel for the bf16 tile from W rows of contiguous depth (row w at
// src + w * sw; a row-major A, or W of x @ W^T): each k pair is one 32-bit word. Whole blocks of 16 pairs
// are read as 64-byte row pieces and transposed in registers, 16 rows at a time (a 12-row group padded
// with zero rows, stored under a mask); the remaining pairs are gathered across the rows, 16 at a time.
// An f32 source (S = float) is rounded to bf16 on the way (vcvtne2ps2bf16 in the blocks, which flushes
// subnormals to zero; exact rounding in the scalar tail). Needs (W - 1) * sw < 2^31.
template <int W, typename S> static void pack_cols(const S* src, int64_t sw, int64_t kc, uint16_t* dst) {
  constexpr int G = (W + 15) / 16;  // groups of 16 rows
  auto rows_of = [](int g) { return W - 16 * g < 16 ? W - 16 * g : 16; };
  auto row16 = [&](int i, int64_t k2) -> __m512i {  // pairs k2 .. k2 + 15 of row i
    const S* r = src + i * sw + 2 * k2;
    if constexpr (std::is_same_v<S, float>)
      return __m512i(_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r + 16), _mm512_loadu_ps(r)));
    else
      return _mm512_loadu_si512(r);
  };
  // One group of 16 rows at a time over the whole depth: 16 sequential read streams rather than W (the
  // hardware prefetchers keep up with 16; a 22 MB weight packed 64 rows at a time ran at DRAM latency).
  const int64_t blocks = kc / 32;
  for (int g = 0; g < G; g++) {
    const int rows = rows_of(g);
    const __mmask16 keep = __mmask16((1u << rows) - 1);
    for (int64_t b = 0; b < blocks; b++) {
      __m512i r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; i++) r[i] = i < rows ? row16(16 * g + i, 16 * b) : _mm512_setzero_si512();
      transpose_16x16_epi32(r);
      uint16_t* d = dst + b * 16 * 2 * W + 32 * g;
#pragma GCC unroll 16
      for (int j = 0; j < 16; j++) _mm512_mask_storeu_epi32(d + j * 2 * W, keep, r[j]);
    }
  }
  int64_t k2 = 16 * blocks;
  dst += blocks * 16 * 2 * W;
  if constexpr (std::is_same_v<S, uint16_t>) {
    const __m512i step = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i idx[G];
    for (int g = 0; g < G; g++)
      idx[g] = _mm512_mullo_epi32(_mm512_add_epi32(step, _mm512_set1_epi32(16 * g)), _mm512_set1_epi32(int32_t(sw)));
    for (; 2 * k2 + 1 < kc; k2++, dst += 2 * W) {
      const uint16_t* base = src + 2 * k2;
      for (int g = 0; g < G; g++) {
        const __mmask16 keep = __mmask16((1u << rows_of(g)) - 1);
        const __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), keep, idx[g], base, 2);
        _mm512_mask_storeu_epi32(dst + 32 * g, keep, v);
      }
    }
  }
  auto bits = [](S v) -> uint16_t {
    if constexpr (std::is_same_v<S, float>)
      return f32_to_bf16(v);
    else
      return v;
  };
  for (; 2 * k2 < kc; k2++, dst += 2 * W)  // the rest one pair at a time; an odd kc pairs with zero
    for (int w = 0; w < W; w++) {
      const S* r = src + w * sw + 2 * k2;
      dst[2 * w] = bits(r[0]);
      dst[2 * w + 1] = 2 * k2 + 1 < kc ? bits(r[1]) : 0;
    }
}

void bf16_pack_cols12_avx512(const uint16_t* src, int64_t sw, int64_t kc, uint16_t* dst) {
  pack_cols<12>(src, sw, kc, dst);
}
void bf16_pack_cols32_avx512(const uint16_t* src, int64_t sw, int64_t kc, uint16_t* dst) {
  pack_cols<32>(src, sw, kc, dst);
}
void bf16_pack_cols64_avx512(const uint16_t* src, int64_t sw, int64_t kc, uint16_t* dst) {
  pack_cols<64>(src, sw, kc, dst);
}
void bf16_pack_f32_cols12_avx512(const float* src, int64_t sw, int64_t kc, uint16_t* dst) {
  pack_cols<12>(src, sw, kc, dst);
}

}  // namespace isa
}  // namespace llava
#endif
