// cpu_matmul_tiles.h — the GEMM's packing routines and micro-kernels (see cpu_matmul.cc for the
// algorithm). Included by cpu_matmul.cc only, inside its anonymous namespace, so it is compiled once per
// ISA copy of that file (cpu_isa.h): the AVX2 tiles under LLAVA_AVX2, the portable tile otherwise.
#pragma once

#if LLAVA_AVX2
inline void transpose8(__m256 r[8]) {
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
#endif

// ------------------------------------------------------------------ packing
// dst[k*W + w] = src[w*sw + k*sk] for w < wvalid, k < kc; lanes w >= wvalid are zero. This packs
// an A panel (lanes = MR rows) and a B panel (lanes = NR columns) alike.
template <typename T, int W, typename Acc>
void pack_panel(const T* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, Acc* dst) {
  int64_t k = 0;
#if LLAVA_AVX2
  if constexpr (std::is_same_v<Acc, float>) {
    constexpr int G = (W + 7) / 8;
    if (sw == 1 && wvalid == W && W % 8 == 0) {
      // Lanes contiguous (row-major B, column-major A): straight vector copies.
      for (; k < kc; k++)
        for (int g = 0; g < G; g++) _mm256_storeu_ps(dst + k * W + g * 8, vload(src + k * sk + g * 8));
      return;
    }
    if (sk == 1) {
      // Depth contiguous (row-major A, column-major B i.e. x @ W^T): 8x8 transposes. The last
      // group of a W that is not a multiple of 8 stores 8 lanes; the extra ones land on the next
      // k row (written right after) or on the buffer's slack.
      for (; k + 8 <= kc; k += 8) {
        __m256 r[G][8];
        for (int g = 0; g < G; g++) {
          for (int j = 0; j < 8; j++) {
            int w = g * 8 + j;
            r[g][j] = w < wvalid ? vload(src + w * sw + k) : _mm256_setzero_ps();
          }
          transpose8(r[g]);
        }
        for (int kk = 0; kk < 8; kk++)
          for (int g = 0; g < G; g++) _mm256_storeu_ps(dst + (k + kk) * W + g * 8, r[g][kk]);
      }
    }
  }
#endif
  for (; k < kc; k++) {  // general strides and remainders
    const T* s = src + k * sk;
    Acc* d = dst + k * W;
    for (int w = 0; w < wvalid; w++) d[w] = Acc(load(s + w * sw));
    for (int w = wvalid; w < W; w++) d[w] = Acc(0);
  }
}

// bf16 panels for the AVX512-BF16 kernel: pairs along k ("VNNI" layout),
// dst[(k2 * W + w) * 2 + e] = bits(src[w*sw + (2 k2 + e)*sk]), zero past wvalid lanes and past kc.
template <int W> void pack_pairs(const bf16* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, uint16_t* dst) {
  const int64_t kp = (kc + 1) / 2;
#if LLAVA_X86_ISA && LLAVA_AVX2
  static_assert(W == 64 || W == 32 || W == 12, "the bf16 tiles' panel widths");
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
  if (sw == 1 && wvalid == W) {  // lanes contiguous: interleave row pairs in registers
    if constexpr (W == 64) isa::bf16_pack_rows64_avx512(s, sk, kc, dst);
    if constexpr (W == 32) isa::bf16_pack_rows32_avx512(s, sk, kc, dst);
    if constexpr (W == 12) isa::bf16_pack_rows12_avx512(s, sk, kc, dst);
    return;
  }
  if (sk == 1 && wvalid == W && sw > 0 && sw < (int64_t(1) << 31) / W) {  // depth contiguous
    if constexpr (W == 64) isa::bf16_pack_cols64_avx512(s, sw, kc, dst);
    if constexpr (W == 32) isa::bf16_pack_cols32_avx512(s, sw, kc, dst);
    if constexpr (W == 12) isa::bf16_pack_cols12_avx512(s, sw, kc, dst);
    return;
  }
#endif
  if (sk == 1) {  // depth contiguous (row-major A, x @ W^T): every pair is one 32-bit word
    uint32_t* d32 = reinterpret_cast<uint32_t*>(dst);
    for (int w = 0; w < wvalid; w++) {
      const bf16* s = src + w * sw;
      int64_t k2 = 0;
      for (; 2 * k2 + 1 < kc; k2++) std::memcpy(d32 + k2 * W + w, s + 2 * k2, 4);
      if (k2 < kp) d32[k2 * W + w] = s[2 * k2].bits;  // odd kc: low half only (little-endian pair)
    }
    for (int64_t k2 = 0; k2 < kp; k2++)
      for (int w = wvalid; w < W; w++) d32[k2 * W + w] = 0;
    return;
  }
  for (int w = 0; w < wvalid; w++) {
    const bf16* s = src + w * sw;
    uint16_t* d = dst + 2 * w;
    int64_t k2 = 0;
    for (; 2 * k2 + 1 < kc; k2++) {
      d[k2 * W * 2] = s[2 * k2 * sk].bits;
      d[k2 * W * 2 + 1] = s[(2 * k2 + 1) * sk].bits;
    }
    if (k2 < kp) {  // odd kc: the last pair's second half is zero
      d[k2 * W * 2] = s[2 * k2 * sk].bits;
      d[k2 * W * 2 + 1] = 0;
    }
  }
  for (int64_t k2 = 0; k2 < kp; k2++)
    for (int w = wvalid; w < W; w++) dst[(k2 * W + w) * 2] = dst[(k2 * W + w) * 2 + 1] = 0;
}

// ------------------------------------------------------------------ micro-kernels
// Packing policy shared by the f32/f64 kernels: panels in the accumulation type, one k per row.
template <typename Acc> struct PlainPanels {
  using packed = Acc;
  static int64_t kpad(int64_t kc) { return kc; }
  template <typename T, int W>
  static void pack(const T* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, packed* dst) {
    pack_panel<T, W, Acc>(src, sw, sk, wvalid, kc, dst);
  }
  template <typename T, int W>
  static void pack_a(const T* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, packed* dst) {
    pack<T, W>(src, sw, sk, wvalid, kc, dst);  // A panels are laid out as B panels are
  }
};

// C[MR x NR] (row stride ldc) = first ? acc + bias + beta*C : C + acc, where acc = A panel @ B panel.
// bias (NR values) may be null; beta == 0 means C is not read on the first block.

#if LLAVA_AVX2
struct KernAvx2 : PlainPanels<float> {
  using acc = float;
  static constexpr int MR = 6, NR = 16;                    // 12 accumulators + 2 B rows + 1 broadcast of 16 ymm
  static constexpr int64_t KC = 256, MC = 144, NC = 3072;  // 16 KiB B micro-panel in L1, 144 KiB A block in L2
  static void ukr(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool first, float beta,
                  const float* bias) {
    __m256 c[MR][2];
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++) c[r][0] = c[r][1] = _mm256_setzero_ps();
    for (int r = 0; r < MR; r++) _mm_prefetch(reinterpret_cast<const char*>(C + r * ldc), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int64_t k = 0; k < kc; k++) {
      __m256 b0 = _mm256_load_ps(B), b1 = _mm256_load_ps(B + 8);
#pragma GCC unroll 6
      for (int r = 0; r < MR; r++) {
        __m256 a = _mm256_broadcast_ss(A + r);
        c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
        c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
      }
      A += MR;
      B += NR;
    }
    if (first) {
      __m256 bb0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
      __m256 bb1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
      __m256 vb = _mm256_set1_ps(beta);
#pragma GCC unroll 6
      for (int r = 0; r < MR; r++) {
        float* cr = C + r * ldc;
        __m256 v0 = _mm256_add_ps(c[r][0], bb0), v1 = _mm256_add_ps(c[r][1], bb1);
        if (beta != 0.f) {
          v0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr), v0);
          v1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(cr + 8), v1);
        }
        _mm256_storeu_ps(cr, v0);
        _mm256_storeu_ps(cr + 8, v1);
      }
    } else {
#pragma GCC unroll 6
      for (int r = 0; r < MR; r++) {
        float* cr = C + r * ldc;
        _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), c[r][0]));
        _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), c[r][1]));
      }
    }
  }
};

#endif

// Portable: plain loops over a 4 x 16 tile that the compiler keeps in vector registers (SSE2, NEON).
struct KernPortable : PlainPanels<float> {
  using acc = float;
  static constexpr int MR = 4, NR = 16;
  static constexpr int64_t KC = 256, MC = 128, NC = 2048;
  static void ukr(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool first, float beta,
                  const float* bias) {
    float c[MR][NR] = {};
    for (int64_t k = 0; k < kc; k++, A += MR, B += NR)
      for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) c[r][j] += A[r] * B[j];
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < NR; j++) {
        float& o = C[r * ldc + j];
        if (!first)
          o += c[r][j];
        else
          o = c[r][j] + (bias ? bias[j] : 0.f) + (beta != 0.f ? beta * o : 0.f);
      }
  }
};

#if LLAVA_X86_ISA && LLAVA_AVX2
struct KernAvx512 : PlainPanels<float> {
  using acc = float;
  static constexpr int MR = 12, NR = 32;
  // B micro-panel KC x NR = 32 KiB stays in a 48 KiB L1; the A block MC x KC = 192 KiB sits in L2
  // (2 MiB on the dev machine); a B panel KC x NC = 3 MiB lives in L3. Tuned on the dev machine:
  // KC 192..384, MC 96..240 and NC 512..4096 are all within noise of this.
  static constexpr int64_t KC = 256, MC = 192, NC = 3072;
  static void ukr(int64_t kc, const float* A, const float* B, float* C, int64_t ldc, bool first, float beta,
                  const float* bias) {
    isa::sgemm_ukr_avx512_12x32(kc, A, B, C, ldc, first, beta, bias);
  }
};

#endif

#if LLAVA_X86_ISA && LLAVA_AVX2
// bf16 x bf16 with AVX512-BF16 (vdpbf16ps): bf16 operands in k pairs, f32 accumulation, the tiles of
// isa/gemm_bf16_avx512.cc. What the two matmul kernels share:
struct KernBf16Base {
  using acc = float;
  using packed = uint16_t;
  // KC 2048: a product with K <= 2048 is one depth block, rounded into a bf16 output from registers
  // with no f32 scratch (measured 5-10% faster than KC 512 at 1024^3 and 2048^3 on Zen 4, whose L2 feeds
  // the tile well enough that the B micro-panel need not sit in L1). NC 1024 against 3072 made
  // x @ W^T at 256x2048x5504 about 7% faster (measured with the 12 x 32 tile).
  static constexpr int64_t KC = 2048, MC = 192, NC = 1024;
  static int64_t kpad(int64_t kc) { return (kc + 1) & ~int64_t(1); }
  template <typename T, int W>
  static void pack(const T* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, packed* dst) {
    static_assert(std::is_same_v<T, bf16>, "the bf16 kernel packs bf16 operands only");
    pack_pairs<W>(src, sw, sk, wvalid, kc, dst);
  }
  template <typename T, int W>
  static void pack_a(const T* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, packed* dst) {
    pack<T, W>(src, sw, sk, wvalid, kc, dst);
  }
  // The tiles' extras (the Bf16Tile trait in cpu_matmul.cc): any row count up to MR and column count up
  // to NR; out not null: the last depth block of a bf16 product goes to the bf16 output from registers.
  static constexpr bool bf16_tile = true;
};

// 6 x 64 for a row-major A, which the tile reads in place (run only then: lda > 0).
struct KernBf16Avx512 : KernBf16Base {
  static constexpr int MR = 6, NR = 64;
  static constexpr bool reads_a = true;
  static void ukr(int64_t kc, const uint16_t* A, int64_t lda, const uint16_t* B, int mr, int nr, const float* C,
                  int64_t ldc, bool first, float beta, const float* bias, bf16* out = nullptr, int64_t ldo = 0) {
    isa::bf16gemm_ukr_avx512_rows_x64(mr, nr, kpad(kc) / 2, A, lda, B, const_cast<float*>(C), ldc, first, beta, bias,
                                      reinterpret_cast<uint16_t*>(out), ldo);
  }
};

// 12 x 32 on packed A panels, with the generic split: the products whose A needs packing (the transposed
// A of dW = dYᵀ X, odd K). On those, the 6 x 64 tile and the in-place split measured 5-10% slower in
// interleaved runs (6 x 64 reads half of each 12-row panel's line per k pair, and twice the B bytes per
// multiply-add).
struct KernBf16Avx512Packed : KernBf16Base {
  static constexpr int MR = 12, NR = 32;
  static constexpr bool reads_a = false;
  static void ukr(int64_t kc, const uint16_t* A, int64_t, const uint16_t* B, int mr, int nr, const float* C,
                  int64_t ldc, bool first, float beta, const float* bias, bf16* out = nullptr, int64_t ldo = 0) {
    isa::bf16gemm_ukr_avx512_rows_x32(mr, nr, kpad(kc) / 2, A, B, const_cast<float*>(C), ldc, first, beta, bias,
                                      reinterpret_cast<uint16_t*>(out), ldo);
  }
};

// AMX-BF16 (isa/gemm_amx_avx512.cc), when cpu_isa() is Amx: 32 x 32 tiles, every product (A packed into
// row-major 32-row panels, which the tile loads 16 rows x 32 k at a time; B panels in k pairs as above), the
// depth padded with zeros to whole tile loads of 32. KC 512: a B micro-panel of 32 KiB stays in L1 while the
// tile walks the A block; MC 128: a 128 KiB A block in L2. Not tuned: no AMX machine has run it yet.
struct KernBf16Amx : KernBf16Base {
  static constexpr int MR = 32, NR = 32;
  static constexpr int64_t KC = 512, MC = 128, NC = 1024;
  static constexpr bool reads_a = false;
  static int64_t kpad(int64_t kc) { return (kc + 31) & ~int64_t(31); }
  template <typename T, int W>
  static void pack(const T* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, packed* dst) {
    KernBf16Base::pack<T, W>(src, sw, sk, wvalid, kc, dst);
    const int64_t kp = (kc + 1) / 2;
    std::memset(dst + kp * W * 2, 0, sizeof(packed) * (kpad(kc) / 2 - kp) * W * 2);
  }
  template <typename T, int W>
  static void pack_a(const T* src, int64_t sw, int64_t sk, int wvalid, int64_t kc, packed* dst) {
    isa::bf16_pack_rows_amx(reinterpret_cast<const uint16_t*>(src), sw, sk, wvalid, kc, kpad(kc), dst);
  }
  // The tile configuration, held for one unit of work on one thread (gemm_unit).
  struct Scope {
    const bool emulated = cpu_amx_emulated();
    Scope() { isa::amx_tiles_begin(emulated); }
    ~Scope() { isa::amx_tiles_end(emulated); }
  };
  static void ukr(int64_t kc, const uint16_t* A, int64_t, const uint16_t* B, int mr, int nr, const float* C,
                  int64_t ldc, bool first, float beta, const float* bias, bf16* out = nullptr, int64_t ldo = 0) {
    isa::bf16gemm_amx_32x32(cpu_amx_emulated(), mr, nr, kpad(kc) / 2, A, kpad(kc), B, const_cast<float*>(C), ldc, first,
                            beta, bias, reinterpret_cast<uint16_t*>(out), ldo);
  }
};
#endif

struct KernF64 : PlainPanels<double> {
  using acc = double;
  static constexpr int MR = 4, NR = 8;
  static constexpr int64_t KC = 256, MC = 96, NC = 2048;
  static void ukr(int64_t kc, const double* A, const double* B, double* C, int64_t ldc, bool first, double beta,
                  const double* bias) {
    double c[MR][NR] = {};
    for (int64_t k = 0; k < kc; k++, A += MR, B += NR)
      for (int r = 0; r < MR; r++)
        for (int j = 0; j < NR; j++) c[r][j] += A[r] * B[j];
    for (int r = 0; r < MR; r++)
      for (int j = 0; j < NR; j++) {
        double& o = C[r * ldc + j];
        if (!first)
          o += c[r][j];
        else
          o = c[r][j] + (bias ? bias[j] : 0.0) + (beta != 0.0 ? beta * o : 0.0);
      }
  }
};
