// isa/gemm_amx_avx512.cc — the AMX-BF16 GEMM tile and its A packer. Built with the AVX-512 flags
// (scripts/sources.js) and, by the pragma below, for AVX512-BF16, AMX-TILE and AMX-BF16; cpu_matmul.cc calls
// it only when cpu_isa() is Amx (cpu_isa.h: the CPU has it and Linux granted the tile state), or with the
// software tiles when cpu_amx_emulated().
//
// AMX has eight tile registers of up to 16 rows x 64 bytes. tdpbf16ps C, A, B multiplies a 16 x 32 bf16 tile
// A (row-major) by a 16 x 16 tile B of bf16 pairs along k (row k2 holds, for each of 16 columns, the pair
// k = 2 k2, 2 k2 + 1: the pair layout the AVX512-BF16 tiles pack too) and adds the 16 x 16 f32 products into C.
// The tile here is 32 x 32 (oneDNN's brgemm blocking on AMX): four C tiles, two A tiles (rows 0-15 and
// 16-31), two B tiles (columns 0-15 and 16-31), so that every tile load feeds two multiplies.
//
// NOT YET RUN ON AMX HARDWARE: the development machine and CI have AVX512-BF16 and no AMX. The tile runs
// there through Emu below, the eight tiles in memory and each instruction done in software as Intel's
// pseudo-code defines it (LLAVA_CPU_AMX_EMULATE=1; cpu_isa.test.ts runs the matmul cases on it). The
// packing, blocking, tile addressing and write-back are therefore tested; the instructions themselves, the
// tile configuration as the CPU reads it, and the speed are not.
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#pragma GCC target("avx512bf16,amx-tile,amx-bf16")
#define LLAVA_ACT_HW_BF16 1
#include <cmath>
#include <cstring>

#include "act_lanes.h"
#include "gemm_parts.h"

namespace llava {
namespace isa {
namespace {

// LDTILECFG's 64-byte operand, palette 1: every tile used here is 16 rows of 64 bytes (C: 16 f32 columns,
// A: 32 bf16 along k, B: 16 k pairs of 16 columns). Constant-initialised: this file is built with AVX-512
// flags, so nothing in it may run at load time on a CPU that lacks them.
struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};
constexpr TileConfig kConfig = {1, 0, {}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

// The tile registers by role: C(i, j) = tile 2 i + j (rows 16 i.., columns 16 j..), A rows 0-15 / 16-31 in
// tiles 4 / 5, B columns 0-15 / 16-31 in tiles 6 / 7. The intrinsics name tiles by literal numbers, hence
// one function per role.
struct Hw {
  static void config() { _tile_loadconfig(&kConfig); }
  static void release() { _tile_release(); }
  static void zero() {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  static void load_b(const void* p, int64_t stride) {
    _tile_loadd(6, p, stride);
    _tile_loadd(7, static_cast<const char*>(p) + 64, stride);
  }
  static void top(const void* a, int64_t stride) {  // rows 0-15
    _tile_loadd(4, a, stride);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
  }
  static void bottom(const void* a, int64_t stride) {  // rows 16-31
    _tile_loadd(5, a, stride);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  static void load_c(const float* c, int64_t ldc) {  // C (32 x 32, row stride ldc floats) into the C tiles
    _tile_loadd(0, c, 4 * ldc);
    _tile_loadd(1, c + 16, 4 * ldc);
    _tile_loadd(2, c + 16 * ldc, 4 * ldc);
    _tile_loadd(3, c + 16 * ldc + 16, 4 * ldc);
  }
  static void store(float* c, int64_t ldc, bool both) {  // the C tiles (rows 0-15, and 16-31 if both) to c
    _tile_stored(0, c, 4 * ldc);
    _tile_stored(1, c + 16, 4 * ldc);
    if (!both) return;
    _tile_stored(2, c + 16 * ldc, 4 * ldc);
    _tile_stored(3, c + 16 * ldc + 16, 4 * ldc);
  }
};

// The same in software: the tiles of the calling thread in memory, each instruction as Intel's pseudo-code
// defines it (tdpbf16ps: per C element, the even then the odd product of each pair added in f32, which is
// exact for bf16 products; subnormal inputs read as zero and subnormal sums are flushed, as the instruction
// does). A tile used without a configuration (a fault on the CPU) yields NaN.
struct Emu {
  struct State {
    bool configured = false;
    alignas(64) uint8_t t[8][16][64];
  };
  static State& s() {
    thread_local State st;
    return st;
  }
  static void config() { s().configured = true; }
  static void release() { s().configured = false; }
  static void load(int t, const void* p, int64_t stride) {
    for (int r = 0; r < 16; r++) std::memcpy(s().t[t][r], static_cast<const char*>(p) + r * stride, 64);
  }
  static float bf(const uint8_t* row, int i) {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    uint32_t u = (h & 0x7f80) ? uint32_t(h) << 16 : uint32_t(h & 0x8000) << 16;  // subnormal: signed zero
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  static float ftz(float v) { return std::fabs(v) < 1.17549435e-38f ? std::copysign(0.f, v) : v; }
  static void dp(int c, int a, int b) {
    State& st = s();
    for (int m = 0; m < 16; m++)
      for (int n = 0; n < 16; n++) {
        float v;
        std::memcpy(&v, st.t[c][m] + 4 * n, 4);
        if (!st.configured) v = __builtin_nanf("");
        for (int k2 = 0; k2 < 16; k2++) {
          v += bf(st.t[a][m], 2 * k2) * bf(st.t[b][k2], 2 * n);
          v = ftz(v);
          v += bf(st.t[a][m], 2 * k2 + 1) * bf(st.t[b][k2], 2 * n + 1);
          v = ftz(v);
        }
        std::memcpy(st.t[c][m] + 4 * n, &v, 4);
      }
  }
  static void zero() { std::memset(s().t, 0, 4 * sizeof(s().t[0])); }
  static void load_b(const void* p, int64_t stride) {
    load(6, p, stride);
    load(7, static_cast<const char*>(p) + 64, stride);
  }
  static void top(const void* a, int64_t stride) {
    load(4, a, stride);
    dp(0, 4, 6);
    dp(1, 4, 7);
  }
  static void bottom(const void* a, int64_t stride) {
    load(5, a, stride);
    dp(2, 5, 6);
    dp(3, 5, 7);
  }
  static void load_c(const float* c, int64_t ldc) {
    for (int t = 0; t < 4; t++) load(t, c + 16 * (t / 2) * ldc + 16 * (t % 2), 4 * ldc);
  }
  static void store(float* c, int64_t ldc, bool both) {
    for (int t = 0; t < (both ? 4 : 2); t++)
      for (int r = 0; r < 16; r++) std::memcpy(c + (16 * (t / 2) + r) * ldc + 16 * (t % 2), s().t[t][r], 64);
  }
};

// rows x cols (<= 32 x 32) of C from A (32 rows of row-major bf16 at row stride lda, zero past the product's
// rows and depth) and a 32-column B panel of kp pairs (kp a multiple of 16, zero past the depth), written
// back as the AVX512-BF16 tile does (finish_row16). A whole 32 x 32 block of f32 C that is only summed into
// (a depth block before the last, or the first with no bias and beta 0) goes between C and the tiles with
// tile loads and stores, with no pass of vector code.
template <typename T> void tile32(int rows, int cols, int64_t kp, const uint16_t* A, int64_t lda, const uint16_t* B,
                                  float* C, int64_t ldc, bool first, float beta, const float* bias, uint16_t* out16,
                                  int64_t ldo) {
  const bool direct = rows == 32 && cols == 32 && !out16 && (!first || (!bias && beta == 0.f));
  if (direct && !first)
    T::load_c(C, ldc);
  else
    T::zero();
  const int64_t sa = 2 * lda;  // bytes
  const uint16_t* A1 = A + 16 * lda;
  if (rows > 16) {
    for (int64_t k2 = 0; k2 < kp; k2 += 16) {
      T::load_b(B + 64 * k2, 128);
      T::top(A + 2 * k2, sa);
      T::bottom(A1 + 2 * k2, sa);
    }
  } else {
    for (int64_t k2 = 0; k2 < kp; k2 += 16) {
      T::load_b(B + 64 * k2, 128);
      T::top(A + 2 * k2, sa);
    }
  }
  if (direct) return T::store(C, ldc, true);
  alignas(64) float acc[32 * 32];
  T::store(acc, 32, rows > 16);
  for (int q = 0; q < 2 && cols > 16 * q; q++) {
    const int n = cols - 16 * q;
    const __m512 bb = first && bias ? _mm512_maskz_loadu_ps(lane_mask(n), bias + 16 * q) : _mm512_setzero_ps();
    for (int r = 0; r < rows; r++)
      finish_row16(_mm512_load_ps(acc + 32 * r + 16 * q), n, first, bb, beta, C + r * ldc + 16 * q,
                   out16 ? out16 + r * ldo + 16 * q : nullptr);
  }
}

}  // namespace

void amx_tiles_begin(bool emulated) { emulated ? Emu::config() : Hw::config(); }
void amx_tiles_end(bool emulated) { emulated ? Emu::release() : Hw::release(); }

void bf16gemm_amx_32x32(bool emulated, int rows, int cols, int64_t kp, const uint16_t* A, int64_t lda,
                        const uint16_t* B, float* C, int64_t ldc, bool first, float beta, const float* bias,
                        uint16_t* out16, int64_t ldo) {
  (emulated ? tile32<Emu> : tile32<Hw>)(rows, cols, kp, A, lda, B, C, ldc, first, beta, bias, out16, ldo);
}

// The A panel of the AMX tile: 32 rows of kcp values each (row r at dst + r * kcp), A[r, k] at src[r * sw + k *
// sk] for r < rows and k < kc, zero elsewhere (kcp >= kc, a multiple of 32).
void bf16_pack_rows_amx(const uint16_t* src, int64_t sw, int64_t sk, int rows, int64_t kc, int64_t kcp, uint16_t* dst) {
  if (sw == 1 && sk != 1) {  // columns of A contiguous (the transposed A of dW = dYᵀ X): transpose in registers
    // For 16 k pairs and 16 rows at a time: word (k2, r) = the pair of row r, built from two source rows
    // k = 2 k2, 2 k2 + 1 (16 bits each), then the 16 x 16 word transpose turns k2-major into r-major.
    for (int h = 0; h < 2; h++) {
      const int nr = rows - 16 * h;
      if (nr <= 0) break;
      const __mmask16 in = lane_mask(nr);
      for (int64_t k0 = 0; k0 < kcp; k0 += 32) {
        __m512i w[16];
        for (int i = 0; i < 16; i++) {
          const int64_t k = k0 + 2 * i;
          const __m512i e0 = k < kc ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(in, src + k * sk + 16 * h))
                                    : _mm512_setzero_si512();
          const __m512i e1 = k + 1 < kc
                                 ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(in, src + (k + 1) * sk + 16 * h))
                                 : _mm512_setzero_si512();
          w[i] = _mm512_or_si512(e0, _mm512_slli_epi32(e1, 16));
        }
        transpose_16x16_epi32(w);
        for (int r = 0; r < 16; r++) _mm512_storeu_si512(dst + (16 * h + r) * kcp + k0, w[r]);
      }
    }
  } else {
    for (int r = 0; r < rows; r++) {
      uint16_t* d = dst + r * kcp;
      const uint16_t* s = src + r * sw;
      if (sk == 1)
        std::memcpy(d, s, 2 * kc);
      else
        for (int64_t k = 0; k < kc; k++) d[k] = s[k * sk];
      std::memset(d + kc, 0, 2 * (kcp - kc));
    }
  }
  for (int r = rows; r < 32; r++) std::memset(dst + r * kcp, 0, 2 * kcp);
}

}  // namespace isa
}  // namespace llava
#endif
