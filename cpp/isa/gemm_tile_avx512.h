// isa/gemm_tile_avx512.h — the write-back of a 12 x 32 (or fewer rows) f32 accumulator tile, shared by the f32 and bf16
// AVX-512 GEMM micro-kernels (isa/gemm_avx512.cc, isa/gemm_bf16_avx512.cc); included by those only.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace llava {
namespace isa {
namespace {

// Writes a finished R x 32 accumulator tile (R <= 12): on the first k block C = acc + bias + beta * C,
// after it C += acc.
template <int R> __attribute__((always_inline)) static inline void store_tile_x32(__m512 (&c)[R][2], float* C,
                                                                                  int64_t ldc, bool first, float beta,
                                                                                  const float* bias) {
  if (first) {
    __m512 bb0 = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
    __m512 bb1 = bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps();
    __m512 vb = _mm512_set1_ps(beta);
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) {
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
    for (int r = 0; r < R; r++) {
      float* cr = C + r * ldc;
      _mm512_storeu_ps(cr, _mm512_add_ps(_mm512_loadu_ps(cr), c[r][0]));
      _mm512_storeu_ps(cr + 16, _mm512_add_ps(_mm512_loadu_ps(cr + 16), c[r][1]));
    }
  }
}

}  // namespace
}  // namespace isa
}  // namespace llava
