// isa/gemm_avx512.cc — the AVX-512 f32 GEMM micro-kernel (built with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq on x86-64; empty elsewhere). Called by cpu_matmul.cc when cpu_isa() is avx512 or above; the
// bf16 tile is in isa/gemm_bf16_avx512.cc.
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#include "gemm_parts.h"

namespace llava {
namespace isa {

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
  // Write-back (the bf16 tiles' row store without a bf16 output): on the first k block C = acc + bias + beta * C
  // (C not read when beta is 0), after it C += acc.
  const __m512 bb[2] = {first && bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps(),
                        first && bias ? _mm512_loadu_ps(bias + 16) : _mm512_setzero_ps()};
#pragma GCC unroll 12
  for (int r = 0; r < MR; r++)
    for (int q = 0; q < 2; q++) finish_row16(c[r][q], 16, first, bb[q], beta, C + r * ldc + 16 * q, nullptr);
}

}  // namespace isa
}  // namespace llava
#endif
