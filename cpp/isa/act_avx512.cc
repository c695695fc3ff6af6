// isa/act_avx512.cc — vectorised activations, 16 lanes (built with the AVX-512 flags on x86-64; empty
// elsewhere). The maths is isa/act_math.h; this file gives it AVX-512 lanes. Called by cpu_elementwise.cc.
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#include <immintrin.h>

#include "act_math.h"

namespace llava {
namespace isa {
namespace {

struct V16 {
  using reg = __m512;
  static constexpr int N = 16;
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm512_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm512_div_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static reg fnma(reg a, reg b, reg c) { return _mm512_fnmadd_ps(a, b, c); }  // c - a*b
  static reg min(reg a, reg b) { return _mm512_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm512_max_ps(a, b); }
  static reg floor(reg a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static __m512i signbits() { return _mm512_set1_epi32(int(0x80000000u)); }
  static reg neg(reg a) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), signbits())); }
  static reg abs(reg a) { return _mm512_castsi512_ps(_mm512_andnot_si512(signbits(), _mm512_castps_si512(a))); }
  static reg copysign(reg mag, reg s) {
    __m512i m = _mm512_castps_si512(abs(mag)), sb = _mm512_and_si512(_mm512_castps_si512(s), signbits());
    return _mm512_castsi512_ps(_mm512_or_si512(m, sb));
  }
  static reg pow2i(reg fx) {
    __m512i n = _mm512_add_epi32(_mm512_cvttps_epi32(fx), _mm512_set1_epi32(127));
    return _mm512_castsi512_ps(_mm512_slli_epi32(n, 23));
  }
  static reg zero_below(reg y, reg x, reg lo) {
    y = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), y);  // keeps NaN lanes (y is NaN there)
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
  }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg load(const uint16_t* p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  }
  static void store(uint16_t* p, reg v) {  // round to nearest even, NaN stays NaN
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
    __mmask16 nan =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
};

}  // namespace

const ActKernels& act_kernels_avx512() { return Act<V16>::table(); }

}  // namespace isa
}  // namespace llava
#endif
