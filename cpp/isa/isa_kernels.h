// isa/isa_kernels.h — functions built with an instruction set above the baseline (see cpu_isa.h).
// Each is defined in cpp/isa/<name>_<level>.cc, compiled with that level's flags on x86-64 only;
// call one only after cpu_isa() (or cpu_has_avx512_bf16()) says the CPU runs it. Plain pointer
// interfaces: nothing here depends on how the caller was compiled.
#pragma once

#include <cstdint>

#include "../cpu_isa.h"

namespace llava {
namespace isa {

#if LLAVA_X86_ISA
// ---------------------------------------------------------------- gemm_avx512.cc
// C[12 x 32] (row stride ldc) = first ? acc + bias + beta*C : C + acc, acc = A panel (kc x 12,
// k-major) @ B panel (kc x 32, k-major); bias (32 values) may be null; beta 0: C not read.
void sgemm_ukr_avx512_12x32(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool first, float beta,
                            const float* bias);
// ---------------------------------------------------------------- gemm_bf16_avx512.cc (AVX512-BF16)
// The bf16 tiles (vdpbf16ps, f32 accumulation) on operands in k pairs (bf16 bit patterns; kp = k pairs):
// a rows x cols block of C from the first `rows` rows of A and a B panel 32 (x32) or 64 (x64) columns wide,
// of which the first `cols` are stored. x32: A is a packed 12-row panel; x64: rows of a row-major matrix
// read in place (row r at A + r * lda, lda > 0). Without out16, C = first ?
// acc + bias + beta * C : C + acc (bias: cols values or null; beta 0: C not read); with out16 the finished
// tile (first ? acc + bias : C + acc, plus beta * out16) is rounded to bf16 into out16 (row stride ldo) and C
// is only read.
void bf16gemm_ukr_avx512_rows_x32(int rows, int cols, int64_t kp, const uint16_t* A, const uint16_t* B, float* C,
                                  int64_t ldc, bool first, float beta, const float* bias, uint16_t* out16 = nullptr,
                                  int64_t ldo = 0);
void bf16gemm_ukr_avx512_rows_x64(int rows, int cols, int64_t kp, const uint16_t* A, int64_t lda, const uint16_t* B,
                                  float* C, int64_t ldc, bool first, float beta, const float* bias, uint16_t* out16,
                                  int64_t ldo);
// Pack W contiguous columns (row stride sk, kc rows) into that pair layout: a B panel (W 32, 64), or the
// 12-row A panel of a transposed A.
void bf16_pack_rows12_avx512(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst);
void bf16_pack_rows32_avx512(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst);
void bf16_pack_rows64_avx512(const uint16_t* src, int64_t sk, int64_t kc, uint16_t* dst);
// The same from W rows of contiguous depth (row stride sw < 2^31 / (W - 1) elements): B panels (32, 64)
// and A panels (12).
void bf16_pack_cols12_avx512(const uint16_t* src, int64_t sw, int64_t kc, uint16_t* dst);
void bf16_pack_cols32_avx512(const uint16_t* src, int64_t sw, int64_t kc, uint16_t* dst);
void bf16_pack_cols64_avx512(const uint16_t* src, int64_t sw, int64_t kc, uint16_t* dst);
// The 12-row A panel from 12 f32 rows, rounded to bf16 (subnormals flushed to zero).
void bf16_pack_f32_cols12_avx512(const float* src, int64_t sw, int64_t kc, uint16_t* dst);
// The 12-row A panel from 12 f32 columns (kc rows of row stride sk), rounded to bf16: a transposed A.
void bf16_pack_f32_rows12_avx512(const float* src, int64_t sk, int64_t kc, uint16_t* dst);

// ---------------------------------------------------------------- gemm_amx_avx512.cc (AMX-BF16)
// The AMX tile (cpu_isa() == Amx; emulated: the same tile with its instructions done in software, see
// cpu_amx_emulated). begin loads the tile configuration on the calling thread and end releases it; the tile
// runs only between them. bf16gemm_amx_32x32: a rows x cols (<= 32 x 32) block of C from a packed A (32
// rows at row stride lda, zero past the product) and a 32-column B panel in k pairs (as above), kp pairs a
// multiple of 16 with zeros past the depth; stored as the rows_x32 tile stores.
void amx_tiles_begin(bool emulated);
void amx_tiles_end(bool emulated);
void bf16gemm_amx_32x32(bool emulated, int rows, int cols, int64_t kp, const uint16_t* A, int64_t lda,
                        const uint16_t* B, float* C, int64_t ldc, bool first, float beta, const float* bias,
                        uint16_t* out16, int64_t ldo);
// Its A panel: dst[r * kcp + k] = src[r * sw + k * sk] for r < rows, k < kc; zero up to 32 rows and kcp.
void bf16_pack_rows_amx(const uint16_t* src, int64_t sw, int64_t sk, int rows, int64_t kc, int64_t kcp, uint16_t* dst);

// ---------------------------------------------------------------- adamw_avx2.cc
// One AdamW step over n contiguous elements (cpu_adamw.cc's expression order; its constants as float).
struct AdamwConsts {
  float lr_wd, b1, one_b1, b2, one_b2, lr, bc1, bc2, eps;
};
void adamw_f32_avx2(float* p, const float* g, float* m, float* v, int64_t n, const AdamwConsts& c);
// bf16 parameters (bit patterns); master: their f32 copy (read and written), or null.
void adamw_bf16_avx2(uint16_t* p, const uint16_t* g, float* m, float* v, float* master, int64_t n,
                     const AdamwConsts& c);

// ---------------------------------------------------------------- act_avx2.cc / act_avx512.cc / act_bf16_avx512.cc
// The vectorised activations of one ISA level (isa/act_math.h), contiguous, i < n, bf16 as bit
// patterns with f32 maths:
//   unary:  out[i] = f(x[i]), or dy[i] * f'(x[i]) when dy is not null; op one of exp tanh sigmoid gelu
//           gelu_tanh quick_gelu silu (the unary_op enumerators).
//   swiglu: out[i] = silu(g[i]) * u[i] when dy is null; else out[i] = d_gate, out2[i] = d_up.
template <typename T> struct ActFns {
  void (*unary)(int op, const T* x, const T* dy, T* out, int64_t n);
  void (*swiglu)(const T* g, const T* u, const T* dy, T* out, T* out2, int64_t n);
};
struct ActKernels {
  ActFns<float> f32;
  ActFns<uint16_t> bf16;
};
const ActKernels& act_kernels_avx2();
const ActKernels& act_kernels_avx512();
const ActKernels& act_kernels_avx512bf16();  // needs AVX512-BF16
// The table for an ISA level (Avx2 or above).
inline const ActKernels& act_kernels(CpuIsa level) {
  return level >= CpuIsa::Avx512Bf16 ? act_kernels_avx512bf16()
         : level >= CpuIsa::Avx512   ? act_kernels_avx512()
                                     : act_kernels_avx2();
}
#endif

}  // namespace isa
}  // namespace llava
