// isa/act_lanes.h — the lane type of isa/act_math.h, written once over the vector width W (8 f32 lanes
// for AVX2, 16 for AVX-512) with GCC/Clang vector extensions: the arithmetic, comparisons, selects, bit
// casts and width conversions are the compiler's, which emits the instructions of the flags the
// including file is built with. Fused multiply-add, min, max, sqrt and floor are spelled as intrinsics
// per width (a fused multiply-add where the formula wants one, not wherever the compiler may contract
// a*b+c; the others the compiler does not find from portable spellings). Included by the cpp/isa files
// only (the activations, the AdamW loop, the bf16 GEMM's stores); the anonymous namespace gives each its
// own copy, so code built with different flags is never shared.
//
// bf16 store: round to nearest even, a NaN stays a (quiet) NaN. A file that defines LLAVA_ACT_HW_BF16
// (built for AVX512-BF16) stores with the hardware conversion.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace llava {
namespace isa {
namespace {

// The vector types of a width (GCC wants the size of a vector_size attribute known where it is written).
#define LLAVA_ACT_VECTORS(W)                                   \
  template <> struct Vectors<W> {                              \
    typedef float reg __attribute__((vector_size(4 * W)));     \
    typedef int32_t ireg __attribute__((vector_size(4 * W)));  \
    typedef uint32_t ureg __attribute__((vector_size(4 * W))); \
  };
template <int W> struct Vectors;
LLAVA_ACT_VECTORS(8)
LLAVA_ACT_VECTORS(16)
#undef LLAVA_ACT_VECTORS

template <int W> struct Lanes {
  using reg = typename Vectors<W>::reg;
  using ireg = typename Vectors<W>::ireg;
  using ureg = typename Vectors<W>::ureg;
  static constexpr int N = W;

  static reg set1(float v) { return reg{} + v; }
  static reg add(reg a, reg b) { return a + b; }
  static reg sub(reg a, reg b) { return a - b; }
  static reg mul(reg a, reg b) { return a * b; }
  static reg div(reg a, reg b) { return a / b; }
  static reg fma(reg a, reg b, reg c) {  // a*b + c
    if constexpr (W == 16)
      return _mm512_fmadd_ps(a, b, c);
    else
      return _mm256_fmadd_ps(a, b, c);
  }
  static reg fnma(reg a, reg b, reg c) {  // c - a*b
    if constexpr (W == 16)
      return _mm512_fnmadd_ps(a, b, c);
    else
      return _mm256_fnmadd_ps(a, b, c);
  }
  // minps/maxps (the second operand where either is NaN) and round-down: one instruction each, which
  // the compiler does not find from the portable spellings.
  static reg min(reg a, reg b) {
    if constexpr (W == 16)
      return _mm512_min_ps(a, b);
    else
      return _mm256_min_ps(a, b);
  }
  static reg max(reg a, reg b) {
    if constexpr (W == 16)
      return _mm512_max_ps(a, b);
    else
      return _mm256_max_ps(a, b);
  }
  static reg sqrt(reg a) {
    if constexpr (W == 16)
      return _mm512_sqrt_ps(a);
    else
      return _mm256_sqrt_ps(a);
  }
  static reg floor(reg a) {
    if constexpr (W == 16)
      return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    else
      return _mm256_floor_ps(a);
  }
  static reg neg(reg a) { return (reg)((ureg)a ^ 0x80000000u); }
  static reg abs(reg a) { return (reg)((ureg)a & 0x7fffffffu); }
  static reg copysign(reg mag, reg s) { return (reg)(((ureg)mag & 0x7fffffffu) | ((ureg)s & 0x80000000u)); }
  // 2^fx for integral fx in [-127, 127].
  static reg pow2i(reg fx) { return (reg)((__builtin_convertvector(fx, ireg) + 127) << 23); }
  // y where x >= lo, 0 below, NaN where x is NaN.
  static reg zero_below(reg y, reg x, reg lo) {
    y = x < lo ? reg{} : y;
    return x != x ? x : y;
  }
  static reg load(const float* p) {
    reg r;
    std::memcpy(&r, p, sizeof r);
    return r;
  }
  static void store(float* p, reg v) { std::memcpy(p, &v, sizeof v); }
  static reg load(const uint16_t* p) {  // bf16 bits to the high half of f32 lanes
    if constexpr (W == 16)
      return reg(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
    else
      return reg(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  // bf16 load and store per width: the vector-extension spelling of these ran ~8% slower.
  static void store(uint16_t* p, reg v) {
#ifdef LLAVA_ACT_HW_BF16
    // vcvtneps2bf16 rounds to nearest even and keeps NaNs quiet NaNs exactly as the sequence below, in one
    // instruction, but it flushes denormal inputs to zero: a vector holding one takes the exact path.
    if constexpr (W == 16) {
      const __m512i mag = _mm512_and_si512(__m512i(v), _mm512_set1_epi32(0x7fffffff));
      if (!_mm512_cmplt_epu32_mask(_mm512_sub_epi32(mag, _mm512_set1_epi32(1)), _mm512_set1_epi32(0x7fffff))) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), __m256i(_mm512_cvtneps_pbh(v)));
        return;
      }
    }
#endif
    if constexpr (W == 16) {
      __m512i u = __m512i(v);
      __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
      __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
      __mmask16 nan =
          _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
      r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
    } else {
      __m256i u = __m256i(v);
      __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
      __m256i nan =
          _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
      r = _mm256_blendv_epi8(r, _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40)), nan);
      __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
    }
  }
};

}  // namespace
}  // namespace isa
}  // namespace llava
