// cpu_attention_tiles.h — the attention kernels' row conversions, micro-kernels (qk, pv) and row
// operations (see cpu_attention.cc). Included by cpu_attention.cc only, inside its anonymous
// namespace, so it is compiled once per ISA copy of that file (cpu_isa.h): AVX2 under LLAVA_AVX2,
// plain loops otherwise (and for f64 always).
#pragma once

#if LLAVA_AVX2
// ------------------------------------------------------------------ 8-lane helpers
// (vload / vstore / hsum / hmax come from cpu_common.h.)
// The four horizontal sums of a0..a3 as one 4-lane vector.
inline __m128 hsum4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

// exp for 8 lanes of attention's shifted scores (x <= 0 up to rounding; -inf for masked keys), as 2^(x log2 e):
// n = round(y) by adding 1.5 * 2^23 + 127 (the sum's low bits then hold n + 127, which shifted up by 23 are
// the bits of 2^n), 2^(y - n) on [-1/2, 1/2] by a degree-5 polynomial fitted for relative error (9e-8).
// Measured against exp in double: relative error 1.8e-7 on [-1, 0], growing with |x| (the rounding of
// x log2 e) to 6e-7 at -10 and 4e-6 at -87, absolute error at most 1.2e-7 everywhere, so every P is within
// 1.2e-7 of the row's largest (1). A third fewer instructions than exp256_ps's exact range reduction (2 ulp),
// which measured 5% of the ViT-L bf16 attention forward. Inputs below -87 give exactly 0 (masked keys);
// a NaN stays NaN. Valid for x < 88.
inline __m256 exp8(__m256 x) {
  const __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
  const __m256 shifter = _mm256_set1_ps(12582912.0f + 127.0f);
  const __m256 y = _mm256_max_ps(_mm256_set1_ps(-126.0f), _mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)));
  const __m256 t = _mm256_add_ps(y, shifter);
  const __m256 f = _mm256_sub_ps(y, _mm256_sub_ps(t, shifter));
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.32647287e-3f), f, _mm256_set1_ps(9.67151292e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.55073374e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.40222421e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.93146978e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
  const __m256 two_n = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
  return _mm256_andnot_ps(zero, _mm256_mul_ps(p, two_n));
}
#endif

// ------------------------------------------------------------------ row conversion
// dst[0, np) = widen(src[0, n)), zero-padded.
template <typename T, typename A> void load_row(const T* src, int64_t n, A* dst, int64_t np) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, A>) {
    std::memcpy(dst, src, n * sizeof(A));
    i = n;
  }
#if LLAVA_AVX2
  else if constexpr (std::is_same_v<A, float>) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, vload(src + i));
  }
#endif
  for (; i < n; i++) dst[i] = load(src + i);
  for (; i < np; i++) dst[i] = A(0);
}
// dst[0, n) = round(src[0, n) * mul).
template <typename T, typename A> void store_row(T* dst, const A* src, int64_t n, A mul) {
  int64_t i = 0;
#if LLAVA_AVX2
  if constexpr (std::is_same_v<A, float>) {
    const __m256 m = _mm256_set1_ps(mul);
    for (; i + 8 <= n; i += 8) vstore(dst + i, _mm256_mul_ps(_mm256_loadu_ps(src + i), m));
  }
#endif
  for (; i < n; i++) store(dst + i, src[i] * mul);
}
// sum(a * b) over a row of storage type T, in the compute type.
template <typename T> acc_t<T> dot_row(const T* a, const T* b, int64_t n) {
  using A = acc_t<T>;
  A s = 0;
  int64_t i = 0;
#if LLAVA_AVX2
  if constexpr (std::is_same_v<A, float>) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
      acc0 = _mm256_fmadd_ps(vload(a + i), vload(b + i), acc0);
      acc1 = _mm256_fmadd_ps(vload(a + i + 8), vload(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(vload(a + i), vload(b + i), acc0);
    s = hsum(_mm256_add_ps(acc0, acc1));
  }
#endif
  for (; i < n; i++) s += load(a + i) * load(b + i);
  return s;
}

// ------------------------------------------------------------------ micro-kernels
// qk: c[i][j] = dot(a row i, b row j) over Dp (a multiple of 8), i < m, j < nb (written up to round4(nb)).
// Key rows past nb - 1 are clamped to nb - 1 (valid memory; those columns are ignored by the caller).
// Portable builds use the plain loops (template versions below) for f32 too.
#if LLAVA_AVX2
template <int MR>
inline void qk_tile(const float* a, int64_t lda, const float* const* bp, int Dp, float* c, int64_t ldc) {
  __m256 acc[MR][4];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
    for (int j = 0; j < 4; j++) acc[i][j] = _mm256_setzero_ps();
  for (int d = 0; d < Dp; d += 8) {
    __m256 av[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) av[i] = _mm256_loadu_ps(a + i * lda + d);
#pragma GCC unroll 8
    for (int j = 0; j < 4; j++) {
      __m256 bv = _mm256_loadu_ps(bp[j] + d);
#pragma GCC unroll 8
      for (int i = 0; i < MR; i++) acc[i][j] = _mm256_fmadd_ps(av[i], bv, acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++) _mm_storeu_ps(c + i * ldc, hsum4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));
}
void qk(const float* a, int64_t lda, int m, const float* b, int64_t ldb, int nb, int Dp, float* c, int64_t ldc) {
  for (int j0 = 0; j0 < nb; j0 += 4) {
    const float* bp[4];
#pragma GCC unroll 8
    for (int j = 0; j < 4; j++) bp[j] = b + std::min(j0 + j, nb - 1) * ldb;
    int i = 0;
    for (; i + 3 <= m; i += 3) qk_tile<3>(a + i * lda, lda, bp, Dp, c + i * ldc + j0, ldc);
    if (m - i == 2)
      qk_tile<2>(a + i * lda, lda, bp, Dp, c + i * ldc + j0, ldc);
    else if (m - i == 1)
      qk_tile<1>(a + i * lda, lda, bp, Dp, c + i * ldc + j0, ldc);
  }
}
#endif
template <typename A>
void qk(const A* a, int64_t lda, int m, const A* b, int64_t ldb, int nb, int Dp, A* c, int64_t ldc) {
  for (int i = 0; i < m; i++)
    for (int j = 0; j < nb; j++) {
      A s = 0;
      for (int d = 0; d < Dp; d++) s += a[i * lda + d] * b[j * ldb + d];
      c[i * ldc + j] = s;
    }
}

// pv: c[i][0, Dp) += sum_k a(i, k) * b[k][0, Dp), i < m, k < K, where a(i, k) = a[i*ars + k*acs]
// (so a transposed operand is just swapped strides). 6 x 16 tile: 12 accumulators + 2 loads + 1 broadcast.
#if LLAVA_AVX2
template <int MR, int NV> inline void pv_tile(const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                                              int K, float* c, int64_t ldc) {
  __m256 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) acc[i][v] = _mm256_loadu_ps(c + i * ldc + 8 * v);
  for (int k = 0; k < K; k++) {
    __m256 bv[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(b + k * ldb + 8 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
      __m256 av = _mm256_broadcast_ss(a + i * ars + k * acs);
#pragma GCC unroll 8
      for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 8
    for (int v = 0; v < NV; v++) _mm256_storeu_ps(c + i * ldc + 8 * v, acc[i][v]);
}
template <int NV> inline void pv_rows(int mr, const float* a, int64_t ars, int64_t acs, const float* b, int64_t ldb,
                                      int K, float* c, int64_t ldc) {
  switch (mr) {
    case 6:
      pv_tile<6, NV>(a, ars, acs, b, ldb, K, c, ldc);
      break;
    case 5:
      pv_tile<5, NV>(a, ars, acs, b, ldb, K, c, ldc);
      break;
    case 4:
      pv_tile<4, NV>(a, ars, acs, b, ldb, K, c, ldc);
      break;
    case 3:
      pv_tile<3, NV>(a, ars, acs, b, ldb, K, c, ldc);
      break;
    case 2:
      pv_tile<2, NV>(a, ars, acs, b, ldb, K, c, ldc);
      break;
    default:
      pv_tile<1, NV>(a, ars, acs, b, ldb, K, c, ldc);
      break;
  }
}
void pv(const float* a, int64_t ars, int64_t acs, int m, const float* b, int64_t ldb, int K, int Dp, float* c,
        int64_t ldc) {
  if (K <= 0) return;
  for (int i = 0; i < m; i += 6) {
    int mr = std::min(6, m - i);
    for (int d = 0; d < Dp; d += 16) {
      if (d + 16 <= Dp)
        pv_rows<2>(mr, a + i * ars, ars, acs, b + d, ldb, K, c + i * ldc + d, ldc);
      else
        pv_rows<1>(mr, a + i * ars, ars, acs, b + d, ldb, K, c + i * ldc + d, ldc);
    }
  }
}
#endif
template <typename A>
void pv(const A* a, int64_t ars, int64_t acs, int m, const A* b, int64_t ldb, int K, int Dp, A* c, int64_t ldc) {
  for (int i = 0; i < m; i++)
    for (int k = 0; k < K; k++) {
      A av = a[i * ars + k * acs];
      for (int d = 0; d < Dp; d++) c[i * ldc + d] += av * b[k * ldb + d];
    }
}

// ------------------------------------------------------------------ row operations (n8: multiple of 8)
#if LLAVA_AVX2
void scale_row(float* x, int n8, float s) {
  const __m256 sv = _mm256_set1_ps(s);
  for (int j = 0; j < n8; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), sv));
}
#endif
template <typename A> void scale_row(A* x, int n8, A s) {
  for (int j = 0; j < n8; j++) x[j] *= s;
}
#if LLAVA_AVX2
// The row maximum, or NaN when the row holds a NaN (max alone would drop it).
float row_max(const float* x, int n8) {
  __m256 m = _mm256_set1_ps(kNegInf), bad = _mm256_setzero_ps();
  for (int j = 0; j < n8; j += 8) {
    const __m256 v = _mm256_loadu_ps(x + j);
    m = _mm256_max_ps(m, v);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  return _mm256_movemask_ps(bad) ? std::numeric_limits<float>::quiet_NaN() : hmax(m);
}
#endif
template <typename A> A row_max(const A* x, int n8) {
  A m = -std::numeric_limits<A>::infinity();
  for (int j = 0; j < n8; j++) m = x[j] != x[j] || m != m ? m + x[j] : std::max(m, x[j]);
  return m;
}
// x = exp(x * scale - m), returns the sum (the score scale applied here, in the same FMA as the shift).
#if LLAVA_AVX2
float exp_row(float* x, int n8, float m, float scale) {
  const __m256 mv = _mm256_set1_ps(m), sv = _mm256_set1_ps(scale);
  __m256 s = _mm256_setzero_ps();
  for (int j = 0; j < n8; j += 8) {
    __m256 p = exp8(_mm256_fmsub_ps(_mm256_loadu_ps(x + j), sv, mv));
    _mm256_storeu_ps(x + j, p);
    s = _mm256_add_ps(s, p);
  }
  return hsum(s);
}
#endif
template <typename A> A exp_row(A* x, int n8, A m, A scale) {
  A s = 0;
  for (int j = 0; j < n8; j++) s += (x[j] = std::exp(x[j] * scale - m));
  return s;
}
// dp = p * (dp - delta) * scale (dS, with the scale folded in for dQ and dK).
#if LLAVA_AVX2
void ds_row(const float* p, float* dp, int n8, float delta, float scale) {
  const __m256 dv = _mm256_set1_ps(delta), sv = _mm256_set1_ps(scale);
  for (int j = 0; j < n8; j += 8) {
    __m256 t = _mm256_mul_ps(_mm256_loadu_ps(p + j), _mm256_sub_ps(_mm256_loadu_ps(dp + j), dv));
    _mm256_storeu_ps(dp + j, _mm256_mul_ps(t, sv));
  }
}
#endif
template <typename A> void ds_row(const A* p, A* dp, int n8, A delta, A scale) {
  for (int j = 0; j < n8; j++) dp[j] = p[j] * (dp[j] - delta) * scale;
}
