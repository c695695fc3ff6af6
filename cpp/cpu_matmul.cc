// cpu_matmul.cc — the `matmul` kernel on the CPU: out[Bt,M,N] = a[Bt,M,K] @ b[Bt,K,N] (+ bias[N])
// (+ beta * out_old). CUDA twin: cuda/matmul.cu.
//
// Algorithm: Goto/BLIS blocking. C is cut into "units" (batch, row range, column range) that the
// thread pool shares out; each unit is an ordinary GEMM run by one thread with its own packing:
//
//   for pc in K step KC:                      B[pc:pc+KC, unit cols] -> NR-column panels (L3)
//     for ic in unit rows step MC:            A[ic:ic+MC, pc:pc+KC]  -> MR-row panels    (L2)
//       for jr in unit cols step NR:          one B micro-panel KC x NR stays in L1
//         for ir in MC step MR:               micro-kernel: MR x NR tile of C in registers
//
// Packing is where layouts and dtypes disappear: a and b are arbitrary strided views (a transposed
// matrix is a view with swapped strides, batch stride 0 is broadcast), and bf16/f16 are widened to
// f32 while packing, so the micro-kernels only ever see unit-stride f32 (or f64) panels. Both
// packings are the same operation ("W lanes x kc depth, lane stride sw, depth stride sk"), with
// AVX2 fast paths for unit lane stride (copy) and unit depth stride (8x8 transposes).
//
// Micro-kernels (row-major C tile, B row of NR floats times a broadcast A value per k):
//   avx512  12 x 32, 24 zmm accumulators (chosen at run time when the CPU has AVX-512F; the addon
//           is built with -mavx2, so this one function carries a target attribute)
//   avx2     6 x 16, 12 ymm accumulators
//   f64      4 x 8 plain C++ (f64 serves gradient checks: simple, not tuned)
// AVX-512 doubles the FMA width, and on the AVX-512 dev machine it is what reaches OpenBLAS (the
// AVX2 kernel tops out near 0.6 of it). N <= 16 uses the 6x16 tile; LLAVA_MATMUL_ISA=avx2 forces
// it everywhere (the tests run both).
//
// bf16 on AVX512-BF16 has tiles of its own (vdpbf16ps, isa/gemm_bf16_avx512.cc; operands packed in k
// pairs, any row and column count): a row-major A (depth stride 1, K even) goes to KernBf16Avx512, 6 x 64,
// which reads A in place with no A panels at all, its units chosen by split_in_place's cost model (which
// usually splits the columns, so each thread packs only its own part of B); any other A is packed for
// KernBf16Avx512Packed, 12 x 32, with the generic split. Where the CPU has AMX (cpu_isa() Amx), every bf16
// product goes to KernBf16Amx instead: 32 x 32 tiles of tdpbf16ps on row-major A panels, which hold the tile
// configuration for a unit of work (Kern::Scope).
// Accumulation is always f32 (f64 for f64). f32/f64 outputs are accumulated in place across K
// blocks; bias and beta*out_old are folded into the first K block's store. bf16/f16 outputs go
// through an f32 scratch per unit and are rounded once at the end (units are capped in size so the
// scratch stays small); the AVX512-BF16 tile rounds its last K block into a bf16 output itself, so
// there the scratch only carries sums between K blocks and is not used at all when K <= KC. beta == 0
// means "do not read out" (as in BLAS), so an uninitialised out never leaks NaNs.
//
// Epilogue 'gelu' / 'gelu_tanh' (optional 6th argument, same semantics as the CUDA kernel): out =
// act(a@b + bias) + beta*out_old, act applied to the f32 (f64) accumulator value, one rounding on
// store. beta has to come after act, and f32/f64 outputs fold beta*out_old into the first K block,
// so with an activation every output goes through the per-unit scratch like bf16/f16 do (bias in the
// first block, act and beta when the scratch is written out). The GEMV and K == 0 paths apply it in
// their single store. With epilogue 'none' nothing changes.
//
// M == 1 or N == 1 (decode, matrix-vector) skip packing: a GEMV streams the matrix once, as dot
// products when its K stride is 1 and as axpy over rows otherwise. So do 2..8 rows of a against a b whose
// K stride is 1 (x @ W^T in a batched decode step): each weight row is read once for all of them.
//
// Threads: units are (batch x row chunks x column chunks), split until there are enough of them to
// keep every core busy with even shares (parallel_for hands out contiguous ranges, no stealing).
// Each unit packs its own B panels, so threads never wait on each other; the duplicated packing
// costs about 1/(2 * unit rows) of the multiply-adds. Packing buffers are thread_local and only
// grow, so steady state makes no allocation.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <type_traits>

#include "cpu_common.h"
#include "isa/isa_kernels.h"
#include "kernel_checks.h"

namespace llava {
namespace {

// ------------------------------------------------------------------ thread-local buffers
struct Scratch {
  void* p = nullptr;
  size_t cap = 0;
  ~Scratch() { std::free(p); }
  template <typename U> U* get(size_t n) {
    size_t bytes = (n + 32) * sizeof(U);  // + slack: the transposing packer overruns by < 8 lanes
    if (bytes > cap) {
      std::free(p);
      cap = (bytes + 4095) / 4096 * 4096;
      p = std::aligned_alloc(64, cap);
      if (!p) {
        cap = 0;
        throw KernelError("[matmul] out of host memory for packing buffers");
      }
    }
    return static_cast<U*>(p);
  }
};
thread_local Scratch tl_apack, tl_bpack, tl_cacc, tl_vec;
thread_local Scratch tl_bias;  // used on the calling thread only

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ------------------------------------------------------------------ epilogue activations
// act: 0 none, 1 gelu (erf), 2 gelu_tanh; evaluated in the accumulation type, as cuda/matmul.cu does.
template <typename Acc> inline Acc activate(int act, Acc v) {
  if (act == 1) return Acc(0.5) * v * (Acc(1) + std::erf(v * Acc(0.70710678118654752440)));
  if (act == 2) {
    const Acc k0 = Acc(0.79788456080286535588), k1 = Acc(0.044715);
    return Acc(0.5) * v * (Acc(1) + std::tanh(k0 * (v + k1 * v * v * v)));
  }
  return v;
}

#include "cpu_matmul_tiles.h"  // packing and micro-kernels

// ------------------------------------------------------------------ the problem, as seen by the drivers
struct Problem {
  int64_t Bt, M, N, K;
  const char* a;  // element pointers (typed by the driver)
  const char* b;
  char* out;
  int64_t as[3], bs[3];  // strides in elements
  const void* bias;      // gathered to the compute type (float or double), contiguous, or null
  double beta;           // 0 = do not read out
  int act;               // epilogue activation: 0 none, 1 gelu, 2 gelu_tanh (see activate)
};

// ------------------------------------------------------------------ blocked GEMM for one unit
// Whether a kernel has the bf16 tiles' extras (Kern::bf16_tile; see KernBf16Base): tiles of any size up to
// MR x NR, the bf16 output written by the tile itself, and (Kern::reads_a) A read in place.
template <typename K, typename = void> struct Bf16Tile : std::false_type {};
template <typename K> struct Bf16Tile<K, std::void_t<decltype(K::bf16_tile)>> : std::bool_constant<K::bf16_tile> {};

// Whether a unit sums into its f32 scratch: 16-bit outputs and epilogues do, except a bf16 product
// without an epilogue in one depth block, which the kernel rounds straight into the output.
template <typename Kern, typename T> bool uses_scratch(const Problem& p) {
  if (std::is_same_v<T, typename Kern::acc> && p.act == 0) return false;
  return !(Bf16Tile<Kern>::value && p.act == 0 && p.K <= Kern::KC);
}

// Whether a kernel reads A in place (Kern::reads_a), which run_typed picks only where A allows it: row-major
// (depth stride 1, rows apart) with whole k pairs, so that a row's last pair never reaches past it (K even).
template <typename Kern> constexpr bool kReadsA = [] {
  if constexpr (Bf16Tile<Kern>::value)
    return Kern::reads_a;
  else
    return false;
}();
inline bool a_readable_in_place(const Problem& p) { return p.as[2] == 1 && p.as[1] != 0 && p.K % 2 == 0; }

// What a kernel holds for one unit of work on its thread (Kern::Scope: the AMX tile configuration), if any.
template <typename K, typename = void> struct UnitScope {
  struct type {};
};
template <typename K> struct UnitScope<K, std::void_t<typename K::Scope>> { using type = typename K::Scope; };

// Unit: batch `bt`, rows [m0, m1), columns [n0, n1) of C.
template <typename Kern, typename T>
void gemm_unit(const Problem& p, int64_t bt, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  using Acc = typename Kern::acc;
  constexpr int MR = Kern::MR, NR = Kern::NR;
  // Accumulate in place in out, unless the output is 16-bit or an activation has to run before beta.
  const bool direct = std::is_same_v<T, Acc> && p.act == 0;
  // A bf16 output without an activation is written by the last depth block's tiles, rounded once from
  // registers (plus beta * out); the scratch then only carries sums between depth blocks.
  constexpr bool bf16_tile = Bf16Tile<Kern>::value;  // (so T is bf16)
  const bool fused = bf16_tile && p.act == 0;
  constexpr bool a_in_place = kReadsA<Kern>;  // such a kernel is run only where it can (run_typed)
  const T* A = reinterpret_cast<const T*>(p.a) + bt * p.as[0];
  const T* B = reinterpret_cast<const T*>(p.b) + bt * p.bs[0];
  T* O = reinterpret_cast<T*>(p.out) + bt * p.M * p.N;
  const Acc* bias = static_cast<const Acc*>(p.bias);
  const int64_t nu = n1 - n0, K = p.K;
  [[maybe_unused]] typename UnitScope<Kern>::type scope;

  Acc* C = nullptr;
  int64_t ldc = nu;
  if (direct) {
    C = reinterpret_cast<Acc*>(O) + m0 * p.N + n0;
    ldc = p.N;
  } else if (uses_scratch<Kern, T>(p)) {
    C = tl_cacc.get<Acc>((m1 - m0) * nu);
  }
  const Acc beta = direct ? Acc(p.beta) : Acc(0);  // the scratch path applies beta when storing

  const int64_t kc_max = std::min<int64_t>(Kern::KC, K);
  using P = typename Kern::packed;
  P* Bp = tl_bpack.get<P>(Kern::kpad(kc_max) * ceil_div(nu, NR) * NR);
  P* Ap = a_in_place ? nullptr
                     : tl_apack.get<P>(Kern::kpad(kc_max) * ceil_div(std::min<int64_t>(Kern::MC, m1 - m0), MR) * MR);

  for (int64_t pc = 0; pc < K; pc += Kern::KC) {
    const int64_t kc = std::min<int64_t>(Kern::KC, K - pc), kcp = Kern::kpad(kc);
    const bool first = pc == 0, to_out = fused && pc + kc == K;
    for (int64_t j = 0; j < nu; j += NR)
      Kern::template pack<T, NR>(B + pc * p.bs[1] + (n0 + j) * p.bs[2], p.bs[2], p.bs[1],
                                 int(std::min<int64_t>(NR, nu - j)), kc, Bp + j * kcp);
    for (int64_t ic = m0; ic < m1; ic += Kern::MC) {
      const int64_t mc = std::min<int64_t>(Kern::MC, m1 - ic);
      if constexpr (!a_in_place)
        for (int64_t i = 0; i < mc; i += MR)
          Kern::template pack_a<T, MR>(A + (ic + i) * p.as[1] + pc * p.as[2], p.as[1], p.as[2],
                                       int(std::min<int64_t>(MR, mc - i)), kc, Ap + i * kcp);
      for (int64_t j = 0; j < nu; j += NR) {
        const int nr = int(std::min<int64_t>(NR, nu - j));
        const Acc* bj = bias ? bias + n0 + j : nullptr;
        const P* b = Bp + j * kcp;
        for (int64_t i = 0; i < mc; i += MR) {
          const int mr = int(std::min<int64_t>(MR, mc - i));
          Acc* c = C ? C + (ic - m0 + i) * ldc + j : nullptr;  // null: one depth block into a bf16 out
          if constexpr (bf16_tile) {                           // any tile size
            const int64_t lda = a_in_place ? p.as[1] : 0;
            const P* a = a_in_place ? reinterpret_cast<const P*>(A + (ic + i) * lda + pc) : Ap + i * kcp;
            if (to_out)  // beta * out is added where the tile writes out
              Kern::ukr(kc, a, lda, b, mr, nr, c, ldc, first, float(p.beta), bj, O + (ic + i) * p.N + n0 + j, p.N);
            else
              Kern::ukr(kc, a, lda, b, mr, nr, c, ldc, first, beta, bj);
          } else {
            if (mr == MR && nr == NR) {
              Kern::ukr(kc, Ap + i * kcp, b, c, ldc, first, beta, bj);
              continue;
            }
            // Edge tile: full tile into a local buffer, then merge the valid part.
            alignas(64) Acc tile[MR * NR];
            Kern::ukr(kc, Ap + i * kcp, b, tile, NR, true, Acc(0), nullptr);
            for (int r = 0; r < mr; r++)
              for (int q = 0; q < nr; q++) {
                Acc* o = c + r * ldc + q;
                Acc v = tile[r * NR + q];
                *o = first ? v + (bj ? bj[q] : Acc(0)) + (beta != Acc(0) ? beta * *o : Acc(0)) : *o + v;
              }
          }
        }
      }
    }
  }
  if (!direct && !fused) {  // store the scratch into out once: act, then beta*old, one rounding
    const Acc bt_ = Acc(p.beta);
    const int act = p.act;
    for (int64_t r = m0; r < m1; r++) {
      T* o = O + r * p.N + n0;
      const Acc* c = C + (r - m0) * ldc;
      if (act == 0) {
        for (int64_t q = 0; q < nu; q++) store(o + q, bt_ != Acc(0) ? c[q] + bt_ * load(o + q) : c[q]);
      } else {
        for (int64_t q = 0; q < nu; q++) {
          Acc v = activate<Acc>(act, c[q]);
          if (bt_ != Acc(0)) v += bt_ * load(o + q);
          store(o + q, v);
        }
      }
    }
  }
}

// The split for a tile that reads A in place: the (row chunks, column chunks) whose busiest thread has the
// least work, counted in multiply-adds per depth step: its tiles (short tiles at their size) plus its
// operand traffic, about 30 per B element packed and 2 per A element read (each unit walks all of its
// rows of A once per depth block); the weights were read off profiles on Zen 4. With no A panels to pack,
// column splits are cheap: each thread packs only its own columns of B, where a row split has every
// thread pack all of B.
template <typename Kern> void split_in_place(const Problem& p, bool scratch, int64_t th, int64_t& mch, int64_t& nch) {
  constexpr int64_t MR = Kern::MR, NR = Kern::NR, kB = 30, kR = 2;
  // A unit's packed B stays within half of a 1 MiB L2 (Zen 4's per-core L2; 256K bf16), at least one panel wide:
  // at K 2048 that is 128 columns, where NC's 1024 had the packer spill to L3 and the tiles read it back from
  // there (x @ Wᵀ and dX = dY W at 256 x 2048 x 5504: 4-12% faster in interleaved runs).
  const int64_t kc = std::min(p.K, Kern::KC), fit = std::max<int64_t>(1, (int64_t(1) << 18) / (kc * NR));
  const int64_t panels = ceil_div(p.N, NR), max_width = std::min({panels, Kern::NC / NR, fit});  // in panels
  // The f32 scratch of a unit stays under 4 MiB (1M values): enough row chunks for that at one panel.
  const int64_t mu_min = scratch ? std::max<int64_t>(1, ceil_div(p.M * NR, int64_t(1) << 20)) : 1;
  const int64_t mu_max = std::max(mu_min, std::min(ceil_div(p.M, MR), mu_min + 4 * th));
  double best = -1;
  for (int64_t mu = mu_min; mu <= mu_max; mu++)
    for (int64_t w = 1; w <= max_width; w++) {
      const int64_t m = ceil_div(p.M, mu), n = w * NR;
      if (best >= 0 && scratch && m * n > (int64_t(1) << 20)) continue;
      const int64_t units = p.Bt * ceil_div(p.M, m) * ceil_div(panels, w), per_thread = ceil_div(units, th);
      const double cost = double(per_thread) * double(m * n + kB * n + kR * m);
      if (best < 0 || cost < best) {
        best = cost;
        mch = m;
        nch = n;
      }
    }
}

// Splits C into units and runs them on the pool.
template <typename Kern, typename T> void gemm(const Problem& p) {
  constexpr int MR = Kern::MR, NR = Kern::NR;
  const int64_t th = num_threads();
  int64_t mch = 0, nch = 0;
  if constexpr (kReadsA<Kern>) {  // (such a kernel runs only where it reads A in place)
    split_in_place<Kern>(p, uses_scratch<Kern, T>(p), th, mch, nch);
  } else {
    int64_t mu = 1, nu = ceil_div(p.N, Kern::NC);
    if (uses_scratch<Kern, T>(p))  // cap the scratch at ~4 MiB (f32) per unit
      mu = ceil_div(p.M * std::min<int64_t>(p.N, Kern::NC), int64_t(1) << 20);
    // Split further until every thread gets an equal share (or the shares are small enough that
    // imbalance stops mattering). Split the dimension that has more micro-tiles left.
    for (;;) {
      int64_t total = p.Bt * mu * nu;
      if (total >= th && (total % th == 0 || total >= 8 * th)) break;
      int64_t mt = ceil_div(p.M, mu * MR), nt = ceil_div(p.N, nu * NR);
      if (mt <= 1 && nt <= 1) break;
      if (mt >= nt)
        mu++;
      else
        nu++;
    }
    mch = ceil_div(ceil_div(p.M, mu), MR) * MR;
    nch = ceil_div(ceil_div(p.N, nu), NR) * NR;
  }
  const int64_t mu = ceil_div(p.M, mch), nu = ceil_div(p.N, nch);
  parallel_for(p.Bt * mu * nu, 1, [&](int64_t u0, int64_t u1) {
    for (int64_t u = u0; u < u1; u++) {
      int64_t bt = u / (mu * nu), r = u % (mu * nu), mi = r / nu, ni = r % nu;
      gemm_unit<Kern, T>(p, bt, mi * mch, std::min(p.M, (mi + 1) * mch), ni * nch, std::min(p.N, (ni + 1) * nch));
    }
  });
}

// The single-store epilogue of the GEMV and skinny paths: out = act(s) + beta * out_old (s with its bias),
// one rounding.
template <typename T, typename Acc> inline void store_out(const Problem& p, T* e, Acc s) {
  if (p.act) s = activate<Acc>(p.act, s);
  if (p.beta != 0.0) s += Acc(p.beta) * load(e);
  store(e, s);
}

// ------------------------------------------------------------------ dot products of one row with R vectors
// out[r] = sum_k x[k] * v[r * vstride + k] for r < R, x contiguous. The GEMV (R = 1) and the skinny path
// (a few rows of a) share this one summation order, so a row's result does not depend on how many rows
// were multiplied with it: batched decoding gives bit-for-bit what one-row decoding gives.
template <int R, typename T> void dot_rows(const T* x, const float* v, int64_t vstride, int64_t K, float* out) {
#if LLAVA_AVX2
  __m256 s[R][4];
  for (int r = 0; r < R; r++) s[r][0] = s[r][1] = s[r][2] = s[r][3] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m256 x0 = vload(x + k), x1 = vload(x + k + 8), x2 = vload(x + k + 16), x3 = vload(x + k + 24);
    for (int r = 0; r < R; r++) {
      const float* vr = v + r * vstride + k;
      s[r][0] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(vr), s[r][0]);
      s[r][1] = _mm256_fmadd_ps(x1, _mm256_loadu_ps(vr + 8), s[r][1]);
      s[r][2] = _mm256_fmadd_ps(x2, _mm256_loadu_ps(vr + 16), s[r][2]);
      s[r][3] = _mm256_fmadd_ps(x3, _mm256_loadu_ps(vr + 24), s[r][3]);
    }
  }
  for (; k + 8 <= K; k += 8) {
    const __m256 x0 = vload(x + k);
    for (int r = 0; r < R; r++) s[r][0] = _mm256_fmadd_ps(x0, _mm256_loadu_ps(v + r * vstride + k), s[r][0]);
  }
  for (int r = 0; r < R; r++) {
    const __m256 t = _mm256_add_ps(_mm256_add_ps(s[r][0], s[r][1]), _mm256_add_ps(s[r][2], s[r][3]));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    float acc = _mm_cvtss_f32(h);
    for (int64_t j = k; j < K; j++) acc += load(x + j) * v[r * vstride + j];
    out[r] = acc;
  }
#else
  for (int r = 0; r < R; r++) {
    float acc = 0.f;
    for (int64_t k = 0; k < K; k++) acc += float(load(x + k)) * v[r * vstride + k];
    out[r] = acc;
  }
#endif
}

// ------------------------------------------------------------------ GEMV (M == 1 or N == 1)
// y[i] = sum_k X[i*xi + k*xk] * v[k*vs] for i < L, per batch; y is contiguous in out.
struct Gemv {
  int64_t L, K;
  int64_t xi, xk, xb;  // X strides (rows, depth, batch)
  int64_t vs, vb;      // v strides (depth, batch)
  bool bias_per_row;   // M == 1: bias[i]; N == 1: bias[0]
};

template <typename T> void gemv(const Problem& p, const Gemv& g, const T* X, const T* V) {
  using Acc = acc_t<T>;
  const Acc* bias = static_cast<const Acc*>(p.bias);
  T* Y = reinterpret_cast<T*>(p.out);
  const int64_t L = g.L, K = g.K;
  // Tasks of `rows` outputs: at least ~32k multiply-adds each (worth a task), but no more than an
  // even share per thread. The axpy path works on 64 columns at a time, so its tasks are multiples
  // of 64 (full cache lines of every row of X).
  const int64_t quantum = (g.xk != 1 && g.xi == 1) ? 64 : 8;
  const int64_t want = ceil_div(32768, std::max<int64_t>(K, 1)), share = ceil_div(L, num_threads());
  const int64_t rows = ceil_div(std::max<int64_t>(1, std::min(want, share)), quantum) * quantum;
  const int64_t nch = ceil_div(L, rows);
  parallel_for(p.Bt * nch, 1, [&](int64_t u0, int64_t u1) {
    int64_t have_bt = -1;
    Acc* v = tl_vec.get<Acc>(K);
    for (int64_t u = u0; u < u1; u++) {
      const int64_t bt = u / nch, i0 = (u % nch) * rows, i1 = std::min(L, i0 + rows);
      if (bt != have_bt) {  // gather v once per batch: unit stride, compute type
        const T* vp = V + bt * g.vb;
        for (int64_t k = 0; k < K; k++) v[k] = Acc(load(vp + k * g.vs));
        have_bt = bt;
      }
      const T* x = X + bt * g.xb;
      T* y = Y + bt * L;
      auto finish = [&](int64_t i, Acc s) { store_out(p, y + i, bias ? s + bias[g.bias_per_row ? i : 0] : s); };
#if LLAVA_AVX2
      if constexpr (!std::is_same_v<Acc, double>) {
        if (g.xk == 1) {  // dot products along contiguous rows
          for (int64_t i = i0; i < i1; i++) {
            float acc;
            dot_rows<1>(x + i * g.xi, v, K, K, &acc);
            finish(i, acc);
          }
          continue;
        }
        if (g.xi == 1) {  // axpy: 64 (then 8) rows in registers, walk down the depth
          int64_t i = i0;
          for (; i + 64 <= i1; i += 64) {
            __m256 s[8];
            for (int j = 0; j < 8; j++) s[j] = _mm256_setzero_ps();
            for (int64_t k = 0; k < K; k++) {
              const T* xr = x + k * g.xk + i;
              __m256 vk = _mm256_set1_ps(v[k]);
              for (int j = 0; j < 8; j++) s[j] = _mm256_fmadd_ps(vload(xr + 8 * j), vk, s[j]);
            }
            alignas(32) float tmp[64];
            for (int j = 0; j < 8; j++) _mm256_store_ps(tmp + 8 * j, s[j]);
            for (int j = 0; j < 64; j++) finish(i + j, tmp[j]);
          }
          for (; i + 8 <= i1; i += 8) {
            __m256 s = _mm256_setzero_ps();
            for (int64_t k = 0; k < K; k++) s = _mm256_fmadd_ps(vload(x + k * g.xk + i), _mm256_set1_ps(v[k]), s);
            alignas(32) float tmp[8];
            _mm256_store_ps(tmp, s);
            for (int j = 0; j < 8; j++) finish(i + j, tmp[j]);
          }
          for (; i < i1; i++) {
            float acc = 0.f;
            for (int64_t k = 0; k < K; k++) acc += load(x + k * g.xk + i) * v[k];
            finish(i, acc);
          }
          continue;
        }
      }
#endif
      for (int64_t i = i0; i < i1; i++) {  // f64 and general strides
        Acc acc = 0;
        const T* xr = x + i * g.xi;
        for (int64_t k = 0; k < K; k++) acc += Acc(load(xr + k * g.xk)) * v[k];
        finish(i, acc);
      }
    }
  });
}

template <typename T> void run_gemv(const Problem& p) {
  const T* a = reinterpret_cast<const T*>(p.a);
  const T* b = reinterpret_cast<const T*>(p.b);
  if (p.M == 1)  // out row = a_row @ b: X = b^T (rows n), v = a[0, :]
    gemv<T>(p, Gemv{p.N, p.K, p.bs[2], p.bs[1], p.bs[0], p.as[2], p.as[0], true}, b, a);
  else  // N == 1: X = a (rows m), v = b[:, 0]
    gemv<T>(p, Gemv{p.M, p.K, p.as[1], p.as[2], p.as[0], p.bs[1], p.bs[0], false}, a, b);
}

// ------------------------------------------------------------------ skinny: 2 <= M <= 8, b's K stride 1
// out[m, n] = a[m, :] . b[:, n] for the few rows of a batched decode step (x @ W^T with W's rows
// contiguous): every weight row is read once for all M rows, as dot_rows in pairs, instead of being packed
// as the GEMM would pack it (a read and a write of every weight, which at small M costs more than the
// multiply itself). f32 accumulation; tasks are runs of output columns, as in the GEMV.
constexpr int64_t kSkinnyMaxM = 8;

template <typename T> void run_skinny(const Problem& p) {
  const float* bias = static_cast<const float*>(p.bias);
  const T* A = reinterpret_cast<const T*>(p.a);
  const T* Bm = reinterpret_cast<const T*>(p.b);
  T* Y = reinterpret_cast<T*>(p.out);
  const int64_t M = p.M, N = p.N, K = p.K;
  const int64_t want = ceil_div(32768, std::max<int64_t>(K * M, 1)), share = ceil_div(N, num_threads());
  const int64_t cols = ceil_div(std::max<int64_t>(1, std::min(want, share)), 8) * 8;
  const int64_t nch = ceil_div(N, cols);
  parallel_for(p.Bt * nch, 1, [&](int64_t u0, int64_t u1) {
    int64_t have_bt = -1;
    float* v = tl_vec.get<float>(M * K);
    for (int64_t u = u0; u < u1; u++) {
      const int64_t bt = u / nch, n0 = (u % nch) * cols, n1 = std::min(N, n0 + cols);
      if (bt != have_bt) {  // gather a's rows once per batch: contiguous, f32
        for (int64_t m = 0; m < M; m++)
          for (int64_t k = 0; k < K; k++) v[m * K + k] = float(load(A + bt * p.as[0] + m * p.as[1] + k * p.as[2]));
        have_bt = bt;
      }
      T* y = Y + bt * M * N;
      for (int64_t n = n0; n < n1; n++) {
        const T* w = Bm + bt * p.bs[0] + n * p.bs[2];
        float acc[kSkinnyMaxM];
        int64_t m = 0;
        for (; m + 2 <= M; m += 2) dot_rows<2>(w, v + m * K, K, K, acc + m);
        if (m < M) dot_rows<1>(w, v + m * K, K, K, acc + m);
        for (m = 0; m < M; m++) store_out(p, y + m * N + n, bias ? acc[m] + bias[n] : acc[m]);
      }
    }
  });
}

// ------------------------------------------------------------------ entry point
template <typename T> void run_typed(const Problem& p) {
  using Acc = acc_t<T>;
  if (p.K == 0) {  // empty sum: out = act(bias) + beta*out
    T* o = reinterpret_cast<T*>(p.out);
    const Acc* bias = static_cast<const Acc*>(p.bias);
    for (int64_t i = 0; i < p.Bt * p.M; i++)
      for (int64_t j = 0; j < p.N; j++) {
        T* e = o + i * p.N + j;
        const Acc v = activate<Acc>(p.act, bias ? bias[j] : Acc(0));
        store(e, v + (p.beta != 0.0 ? Acc(p.beta) * load(e) : Acc(0)));
      }
    return;
  }
  if (p.M == 1 || p.N == 1) return run_gemv<T>(p);
  if constexpr (!std::is_same_v<Acc, double>)
    if (p.M <= kSkinnyMaxM && p.bs[1] == 1) return run_skinny<T>(p);
  if constexpr (std::is_same_v<Acc, double>) {
    gemm<KernF64, T>(p);
  } else {
#if LLAVA_AVX2
#if LLAVA_X86_ISA
    // N <= 16 would leave half of every 32-wide AVX-512 tile empty; the 6x16 tile fits it better.
    if constexpr (std::is_same_v<T, bf16>) {
      if (cpu_isa() >= CpuIsa::Amx && p.N > 16) return gemm<KernBf16Amx, T>(p);
      if (cpu_has_avx512_bf16() && p.N > 16)
        return a_readable_in_place(p) ? gemm<KernBf16Avx512, T>(p) : gemm<KernBf16Avx512Packed, T>(p);
    }
    if (cpu_isa() >= CpuIsa::Avx512 && p.N > 16) return gemm<KernAvx512, T>(p);
#endif
    gemm<KernAvx2, T>(p);
#else
    gemm<KernPortable, T>(p);
#endif
  }
}

void matmul_kernel(const KernelArgs& args) {
  const MatmulArgs P = parse_matmul(args, Device::CPU);
  const TensorArg &out = *P.out, &a = *P.a, &b = *P.b;
  const TensorArg* bias = P.bias;
  const double beta = P.beta;
  const int64_t Bt = P.Bt, M = P.M, K = P.K, N = P.N;
  const int act = P.epilogue == MatmulEpilogue::Gelu ? 1 : P.epilogue == MatmulEpilogue::GeluTanh ? 2 : 0;
  if (Bt == 0 || M == 0 || N == 0) return;

  Problem p{Bt,
            M,
            N,
            K,
            a.bytes(),
            b.bytes(),
            out.bytes(),
            {a.strides[0], a.strides[1], a.strides[2]},
            {b.strides[0], b.strides[1], b.strides[2]},
            nullptr,
            beta,
            act};
  LLAVA_DISPATCH_FLOAT(args, out.dtype, T, {
    using Acc = acc_t<T>;
    if (bias) {  // gather once: contiguous, compute type, read by every thread
      Acc* bb = tl_bias.get<Acc>(N);
      const T* src = bias->data<T>();
      for (int64_t j = 0; j < N; j++) bb[j] = Acc(load(src + j * bias->strides[0]));
      p.bias = bb;
    }
    run_typed<T>(p);
  });
}

}  // namespace

LLAVA_CPU_KERNEL("matmul", matmul_kernel, cpu_matmul);

}  // namespace llava
