// isa/gemm_parts.h — what the AVX-512 GEMM tiles share: the store of a finished tile row (the f32 tile of
// gemm_avx512.cc, the AVX512-BF16 tile of gemm_bf16_avx512.cc and the AMX tile of gemm_amx_avx512.cc write
// back alike; only the bf16 ones round into a bf16 output) and a 16 x 16 transpose of 32-bit words (the bf16
// packers). Included by those files only; the anonymous namespace gives each its own copy, built with its
// flags.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "act_lanes.h"

namespace llava {
namespace isa {
namespace {

// The first n (1..16) lanes.
inline __mmask16 lane_mask(int n) { return n >= 16 ? __mmask16(0xffff) : __mmask16((1u << n) - 1); }

// Writes n (1..16) columns of one finished row of a tile whose sums are acc. Without o (an f32 row at cr):
// cr = first ? acc + bias + beta * cr : cr + acc (cr is not read when first and beta is 0). With o (the last
// depth block of a bf16 product): (first ? acc + bias : cr + acc) + beta * o, rounded once into o; cr is then
// only read. bias: the row's 16 bias values, zero when there is none or not first.
__attribute__((always_inline)) inline void finish_row16(__m512 acc, int n, bool first, __m512 bias, float beta,
                                                        float* cr, uint16_t* o) {
  using V = Lanes<16>;
  const __mmask16 m = lane_mask(n);
  __m512 v = _mm512_add_ps(acc, first ? bias : _mm512_maskz_loadu_ps(m, cr));
  if (!o) {
    if (first && beta != 0.f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, cr), v);
    _mm512_mask_storeu_ps(cr, m, v);
  } else if (n >= 16) {
    if (beta != 0.f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), __m512(V::load(o)), v);
    V::store(o, V::reg(v));
  } else {  // a part vector goes through a local row, so its rounding is V::store's
    alignas(64) uint16_t part[16] = {};
    std::memcpy(part, o, 2 * n);
    if (beta != 0.f) v = _mm512_fmadd_ps(_mm512_set1_ps(beta), __m512(V::load(part)), v);
    V::store(part, V::reg(v));
    std::memcpy(o, part, 2 * n);
  }
}

// One round of 128-bit block shuffles: for every pair (i, i + D) with bit D of i clear, dst[i] takes the even
// blocks and dst[i + D] the odd blocks of src[i] and src[i + D].
template <int D> __attribute__((always_inline)) inline void block_round(const __m512i (&src)[16], __m512i (&dst)[16]) {
#pragma GCC unroll 16
  for (int i = 0; i < 16; i++)
    if (!(i & D)) {
      dst[i] = _mm512_shuffle_i32x4(src[i], src[i + D], 0x88);
      dst[i + D] = _mm512_shuffle_i32x4(src[i], src[i + D], 0xdd);
    }
}

// In-register transpose of a 16 x 16 matrix of 32-bit words (row i in r[i] -> column i in r[i]):
// 32-bit and 64-bit interleaves inside each 128-bit lane, then two rounds of 128-bit block shuffles.
__attribute__((always_inline)) inline void transpose_16x16_epi32(__m512i (&r)[16]) {
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
  block_round<4>(r, t);
  block_round<8>(t, r);
}

}  // namespace
}  // namespace isa
}  // namespace llava
