// isa/act_avx2.cc — vectorised activations, 8 lanes (built with -mavx2 -mfma -mf16c on x86-64; empty
// elsewhere). The maths is isa/act_math.h; this file gives it AVX2 lanes. Called by cpu_elementwise.cc.
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#include <immintrin.h>

#include "act_math.h"

namespace llava {
namespace isa {
namespace {

struct V8 {
  using reg = __m256;
  static constexpr int N = 8;
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_ps(a, b); }
  static reg fma(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static reg fnma(reg a, reg b, reg c) { return _mm256_fnmadd_ps(a, b, c); }  // c - a*b
  static reg min(reg a, reg b) { return _mm256_min_ps(a, b); }
  static reg max(reg a, reg b) { return _mm256_max_ps(a, b); }
  static reg floor(reg a) { return _mm256_floor_ps(a); }
  static reg sign() { return _mm256_set1_ps(-0.f); }
  static reg neg(reg a) { return _mm256_xor_ps(a, sign()); }
  static reg abs(reg a) { return _mm256_andnot_ps(sign(), a); }
  static reg copysign(reg mag, reg s) { return _mm256_or_ps(abs(mag), _mm256_and_ps(s, sign())); }
  static reg pow2i(reg fx) {  // 2^fx for integral fx in [-127, 127]
    __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
    return _mm256_castsi256_ps(_mm256_slli_epi32(n, 23));
  }
  // y where x >= lo, 0 below, NaN where x is NaN.
  static reg zero_below(reg y, reg x, reg lo) {
    y = _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), y);
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg load(const uint16_t* p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static void store(uint16_t* p, reg v) {  // round to nearest even, NaN stays NaN
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
    __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    r = _mm256_blendv_epi8(r, q, nan);
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
};

}  // namespace

const ActKernels& act_kernels_avx2() { return Act<V8>::table(); }

}  // namespace isa
}  // namespace llava
#endif
