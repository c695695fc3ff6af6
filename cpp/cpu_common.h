// cpu_common.h — what every CPU kernel file shares: 16-bit float storage types, the compute type
// of each storage type (f32 for bf16/f16/f32, f64 for f64), dtype dispatch and a strided index walker.
//
// bf16/f16 are storage formats only: kernels load them into f32 registers, compute, and round once
// on store (round-to-nearest-even, as PyTorch does).
//
// This header is compiled at more than one ISA level (cpu_isa.h): the 8-lane helpers exist only where
// the translation unit is built with AVX2/FMA/F16C (LLAVA_AVX2 is then 1), and everything here sits
// in an inline namespace named after the level, so the linker never mixes an AVX2-compiled copy of
// an inline function into the portable path.
#pragma once

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define LLAVA_AVX2 1
#include <immintrin.h>
#else
#define LLAVA_AVX2 0
#endif

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_isa.h"
#include "kernel_api.h"

namespace llava {
#if defined(__AVX512F__)
inline namespace isa_avx512 {
#elif LLAVA_AVX2
inline namespace isa_avx2 {
#else
inline namespace isa_base {
#endif

struct bf16 {
  uint16_t bits;
};
struct f16 {
  uint16_t bits;
};

// A bf16 tensor's elements as the bit patterns the cpp/isa kernels take.
inline uint16_t* bf16_bits(const TensorArg& t) { return reinterpret_cast<uint16_t*>(t.data<bf16>()); }

inline float bf16_to_f32(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // keep NaN a NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
#if LLAVA_AVX2
inline float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t f32_to_f16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
#else
// IEEE half <-> single by bit manipulation (what F16C does in hardware): subnormals, inf and NaN kept,
// round to nearest even on narrowing.
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u | (man << 13);  // inf / NaN
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);
  } else if (man == 0) {
    u = sign;
  } else {  // subnormal half: normalise
    int e = -1;
    do {
      e++;
      man <<= 1;
    } while (!(man & 0x400u));
    u = sign | (uint32_t(112 - e) << 23) | ((man & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN stays NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);                        // rounds past 65504: inf
  if (a < 0x38800000u) {                                                        // half subnormal or 0
    if (a < 0x33000000u) return sign;                                           // below half the least subnormal
    const uint32_t man = (a & 0x7fffffu) | 0x800000u;
    const int shift = 126 - int(a >> 23);  // 14..24
    uint32_t r = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return uint16_t(sign | r);
  }
  uint32_t r = a - 0x38000000u;  // rebias the exponent (127 -> 15)
  r += 0xfffu + ((r >> 13) & 1u);
  return uint16_t(sign | (r >> 13));
}
#endif

template <typename T> struct Compute { using type = T; };
template <> struct Compute<bf16> { using type = float; };
template <> struct Compute<f16> { using type = float; };
template <> struct Compute<bool> { using type = float; };
template <typename T> using acc_t = typename Compute<T>::type;

template <typename T> inline acc_t<T> load(const T* p) { return acc_t<T>(*p); }
template <> inline float load<bf16>(const bf16* p) { return bf16_to_f32(p->bits); }
template <> inline float load<f16>(const f16* p) { return f16_to_f32(p->bits); }
template <> inline float load<bool>(const bool* p) { return *p ? 1.f : 0.f; }
template <typename T, typename V> inline void store(T* p, V v) { *p = T(v); }
template <typename V> inline void store(bf16* p, V v) { p->bits = f32_to_bf16(float(v)); }
template <typename V> inline void store(f16* p, V v) { p->bits = f32_to_f16(float(v)); }
template <typename V> inline void store(bool* p, V v) { *p = v != V(0); }

// A kernel's scratch too large for a thread-local buffer to keep, from the CPU backend's caching allocator:
// a block of the same size comes back warm (already mapped: no page faults, unlike a fresh malloc of this
// size), and emptyCache() releases it. Uninitialised; 64-byte aligned.
template <typename U> class HostScratch {
 public:
  explicit HostScratch(size_t n) : bytes_(n * sizeof(U)) {
    if (bytes_) p_ = static_cast<U*>(find_backend(Device::CPU)->alloc(bytes_));
  }
  ~HostScratch() {
    if (p_) find_backend(Device::CPU)->free(p_, bytes_);
  }
  HostScratch(const HostScratch&) = delete;
  HostScratch& operator=(const HostScratch&) = delete;
  U* data() const { return p_; }
  U& operator[](size_t i) const { return p_[i]; }

 private:
  size_t bytes_;
  U* p_ = nullptr;
};

// Run the body with `T` bound to the CPU storage type of dtype `dt` (kernel_api.h).
#define LLAVA_DISPATCH_FLOAT(args, dt, T, ...) \
  LLAVA_DISPATCH_FLOAT_AS(::llava::bf16, ::llava::f16, args, dt, T, __VA_ARGS__)
#define LLAVA_DISPATCH_ALL(args, dt, T, ...) \
  LLAVA_DISPATCH_ALL_AS(::llava::bf16, ::llava::f16, args, dt, T, __VA_ARGS__)

#if LLAVA_AVX2
// ---------------------------------------------------------------- 8-lane AVX2 helpers
// vload/vstore widen a storage type to its compute register and narrow it back (bf16/f16 <-> 8 x f32,
// double <-> 4 x f64), rounding to nearest even like store() (NaN stays NaN).
inline __m256 vload(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 vload(const bf16* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
inline __m256 vload(const f16* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
inline __m256d vload(const double* p) { return _mm256_loadu_pd(p); }

// f32 -> bf16 bits in the low half of each lane, round-to-nearest-even, NaN kept a NaN.
inline __m256i bf16_bits(__m256 v) {
  __m256i u = _mm256_castps_si256(v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  __m256i qnan = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(r, qnan, nan);
}
inline void vstore(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void vstore(double* p, __m256d v) { _mm256_storeu_pd(p, v); }
inline void vstore(bf16* p, __m256 v) {
  __m256i r = bf16_bits(v);
  __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}
inline void vstore(f16* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// Horizontal sum / max of the lanes.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
inline double hsum(__m256d v) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}

// exp(x) for 8 floats (AVX2/FMA): n = round(x / ln2), exp(x) = 2^n * exp(r) with r = x - n ln2 split
// in two constants for accuracy, exp(r) by a degree-6 polynomial (Cephes coefficients). Max error
// about 2 ulp on [-87, 88]; inputs below the range (and -inf) give 0, above give exp(88.38).
inline __m256 exp256_ps(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-88.3762626647949f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  __m256i n = _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127));
  return _mm256_mul_ps(y, _mm256_castsi256_ps(_mm256_slli_epi32(n, 23)));
}

// out[i] = exp(x[i] - m) (out may be null) for float32 or bf16 rows, in f32; returns the sum in double.
template <typename T> inline double exp_shift_sum(const T* x, float m, float* out, int64_t n) {
  __m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
  double total = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 e = exp256_ps(_mm256_sub_ps(vload(x + i), vm));
    if (out) _mm256_storeu_ps(out + i, e);
    acc = _mm256_add_ps(acc, e);
    if ((i & 1023) == 1016) {  // flush to double every 1024 elements
      alignas(32) float t[8];
      _mm256_store_ps(t, acc);
      for (float v : t) total += v;
      acc = _mm256_setzero_ps();
    }
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, acc);
  for (float v : t) total += v;
  for (; i < n; i++) {
    float e = std::exp(float(load(x + i)) - m);
    if (out) out[i] = e;
    total += e;
  }
  return total;
}
#else
// out[i] = exp(x[i] - m) (out may be null) for float32 or bf16 rows, in f32; returns the sum in double.
template <typename T> inline double exp_shift_sum(const T* x, float m, float* out, int64_t n) {
  double total = 0;
  for (int64_t i = 0; i < n; i++) {
    float e = std::exp(float(load(x + i)) - m);
    if (out) out[i] = e;
    total += e;
  }
  return total;
}
#endif

// Element offset of linear index `i` of a view (row-major order over its shape).
inline int64_t strided_offset(const TensorArg& t, int64_t i) {
  int64_t off = 0;
  for (int d = t.ndim - 1; d >= 0; d--) {
    int64_t s = t.shape[d];
    off += (i % s) * t.strides[d];
    i /= s;
  }
  return off;
}

// Walks the elements [begin, end) of a shape in row-major order, keeping the element offsets of up
// to three strided operands in step without a division per element.
template <int N> struct StridedWalker {
  int ndim;
  const int64_t* shape;
  const int64_t* strides[N];
  int64_t idx[kMaxDims];
  int64_t off[N];

  StridedWalker(int nd, const int64_t* shp, const int64_t* const* strd, int64_t start) : ndim(nd), shape(shp) {
    for (int k = 0; k < N; k++) {
      strides[k] = strd[k];
      off[k] = 0;
    }
    for (int d = nd - 1; d >= 0; d--) {
      idx[d] = shp[d] ? start % shp[d] : 0;
      start = shp[d] ? start / shp[d] : 0;
      for (int k = 0; k < N; k++) off[k] += idx[d] * strides[k][d];
    }
  }
  inline void next() {
    for (int d = ndim - 1; d >= 0; d--) {
      idx[d]++;
      for (int k = 0; k < N; k++) off[k] += strides[k][d];
      if (idx[d] < shape[d]) return;
      for (int k = 0; k < N; k++) off[k] -= strides[k][d] * shape[d];
      idx[d] = 0;
    }
  }
};

}  // namespace isa_*
}  // namespace llava
