// cpu_attention.cc — fused scaled-dot-product attention, forward and backward, on the CPU (CUDA
// twins: cuda/attention_fwd.cu and cuda/attention_bwd.cu).
//
// Shapes: q[B,H,T,D], k/v[B,Hkv,S,D], out[B,H,T,D], lse[B,H,T]; H % Hkv == 0 (grouped-query: query
// head h reads kv head h / G, G = H/Hkv). The G query heads that share a kv head are one problem of
// G*T rows ordered t-major (row r = t*G + g), so a K/V tile loaded once serves the whole group (for
// T = 1 decode this is what makes GQA cheap) and a block of rows spans few positions (tight causal skips).
//
// Algorithm: FlashAttention-2. Forward: for a block of kBr rows, stream over key tiles of kBc with an
// online softmax (running max m and sum l per row); the T x S score matrix never exists, only one
// kBr x kBc tile per thread. lse = m + log(l) (natural log, scale included) is saved.
// Backward: delta = rowsum(dO * O) first; then one work item per (b, kv head, key range): for each key
// tile and each row block that can see it, recompute P = exp(S*scale - lse), dV += P^T dO,
// dP = dO V^T, dS = P (dP - delta) scale, dK += dS^T Q, dQ += dS K. An item owns its dK/dV rows (sums
// over the group included), so no races. Normally an item covers all keys of its (b, kv head) and owns
// those dQ rows too (accumulated in a per-thread f32/f64 buffer); only when B*Hkv is too small to feed
// the threads are the keys split, with per-split dQ partials summed in split order at the end.
// Deterministic for a given thread count; no atomics on data.
//
// Masking: causal is bottom-right aligned (key j visible to query i iff j <= i + S - T); the optional
// mask is a bool view [B,H,T,S] with any strides (0 = broadcast), true = attend. A row with no visible
// key gives out 0 and lse -inf, and 0 gradients (P is forced to 0 where lse = -inf, never exp(nan)).
// A visible NaN score makes the row's out, lse and gradients NaN (like the composite; CUDA agrees).
//
// Numerics: bf16/f16 are widened to f32 on load and rounded once on store; f64 computes in f64 (for
// the gradient checks). lse is f32 per the kernel table, or f64 (accepted so the f64 gradient check keeps
// full precision). The scale is applied to the raw dot products in both passes, identically, so the
// backward recomputes exactly the forward's scores: a positive scale inside exp_row's FMA (exp(s * scale - m),
// the row max taken on the raw scores), any other by a pass of its own before the max.
//
// Inner loops are two AVX2 register-blocked micro-kernels (f32): `qk` (C = A B^T: dot products along D,
// 3 rows x 4 keys, used for S = Q K^T and dP = dO V^T) and `pv` (C += A B: broadcast-FMA, 6 rows x 16
// columns, used for O += P V, dQ += dS K and, with A read transposed, dV += P^T dO, dK += dS^T Q).
// K/V rows are read in place when they are f32 with D % 8 == 0 (any row stride); otherwise a tile is
// widened into a zero-padded buffer of row length Dp = round8(D). f64 uses plain scalar loops.
// Work is handed out dynamically (an atomic item counter) because parallel_for gives fixed ranges and
// causal blocks differ in cost; heavy blocks go first.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "cpu_common.h"
#include "isa/isa_kernels.h"
#include "kernel_checks.h"

namespace llava {
namespace {

// Tile sizes: Br 30..120 and Bc 32..128 measured within noise of each other (2-core AVX2 host);
// 60 x 64 keeps a D = 128 block (Q, O, S, K, V tiles: ~140 KB) well inside L2.
constexpr int kBr = 60;  // rows per block: a multiple of both micro-tile heights (3 and 6)
constexpr int kBc = 64;  // keys per tile
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t round8(int64_t n) { return (n + 7) & ~int64_t(7); }

#include "cpu_attention_tiles.h"  // row conversion, micro-kernels, row operations

// ------------------------------------------------------------------ problem description
struct Attn {
  int64_t B, H, Hkv, G, T, S, D, Dp;
  bool causal;
  double scale;
  const TensorArg *q, *k, *v, *mask;
  int64_t R() const { return G * T; }  // rows of one (b, kv head) problem
};

template <typename T> inline const T* row_ptr(const TensorArg& t, int64_t b, int64_t h, int64_t i) {
  return t.data<T>() + b * t.strides[0] + h * t.strides[1] + i * t.strides[2];
}

// The factor exp_row applies to a row that scale_mask_row left raw: a positive scale is folded into exp_row's
// FMA (max(s) * scale is then the max of the scaled row); any other is applied by scale_mask_row.
template <typename A> inline A exp_scale(const Attn& p) { return p.scale > 0 ? A(p.scale) : A(1); }

// Sets invisible keys of a row of raw scores (and the padding up to n8) to -inf, and scales the row unless
// exp_row will (exp_scale). Keys of this tile are c0 + [0, kc); query position t of head h.
template <typename A>
inline void scale_mask_row(const Attn& p, A* s, int kc, int n8, int64_t b, int64_t h, int64_t t, int64_t c0) {
  const A ninf = -std::numeric_limits<A>::infinity();
  if (!(p.scale > 0)) scale_row(s, n8, A(p.scale));
  int64_t vis = kc;  // keys [vis, kc) are hidden by causality
  if (p.causal) vis = std::clamp<int64_t>(t + p.S - p.T + 1 - c0, 0, kc);
  for (int64_t j = vis; j < n8; j++) s[j] = ninf;
  if (p.mask) {
    const TensorArg& m = *p.mask;
    const uint8_t* mr = reinterpret_cast<const uint8_t*>(m.bytes()) + b * m.strides[0] + h * m.strides[1] +
                        t * m.strides[2] + c0 * m.strides[3];
    const int64_t ms = m.strides[3];
    for (int64_t j = 0; j < vis; j++)
      if (!mr[j * ms]) s[j] = ninf;
  }
}

// K (or V) rows of one tile, in place when possible, otherwise widened into buf (kBc x Dp).
template <typename T, typename A> inline const A* tile_rows(const Attn& p, const TensorArg& t, int64_t b, int64_t kvh,
                                                            int64_t c0, int kc, A* buf, int64_t& ld) {
  const T* src = row_ptr<T>(t, b, kvh, c0);
  if constexpr (std::is_same_v<T, A>) {
    if (p.D == p.Dp) {
      ld = t.strides[2];
      return reinterpret_cast<const A*>(src);
    }
  }
  for (int j = 0; j < kc; j++) load_row(src + j * t.strides[2], p.D, buf + j * p.Dp, p.Dp);
  ld = p.Dp;
  return buf;
}

// Loads rows [r0, r0 + n) of a (b, kv head) problem from a [B,H,T,D] view into buf (n x Dp).
template <typename T, typename A>
inline void load_rows(const Attn& p, const TensorArg& t, int64_t b, int64_t kvh, int64_t r0, int n, A* buf) {
  for (int i = 0; i < n; i++) {
    int64_t r = r0 + i, tt = r / p.G, h = kvh * p.G + r % p.G;
    load_row(row_ptr<T>(t, b, h, tt), p.D, buf + i * p.Dp, p.Dp);
  }
}

// Runs fn(item) for item in [0, n) on all threads, handing items out one at a time.
template <typename F> void for_items(int64_t n, F&& make_worker) {
  std::atomic<int64_t> next{0};
  int64_t parts = std::max<int64_t>(1, std::min<int64_t>(num_threads(), n));
  parallel_for(parts, 1, [&](int64_t, int64_t) {
    auto work = make_worker();  // per-thread scratch lives in the worker
    for (int64_t it; (it = next.fetch_add(1, std::memory_order_relaxed)) < n;) work(it);
  });
}

#include "cpu_attention_products.h"  // S = Q K^T, O += P V, ... on f32 or bf16 tiles

// ------------------------------------------------------------------ forward
template <typename T, typename Prod> void attention_fwd_run(const Attn& p, const TensorArg& out, const TensorArg& lse) {
  using A = acc_t<T>;
  const int64_t R = p.R(), BK = p.B * p.Hkv, nrb = (R + kBr - 1) / kBr, Dp = p.Dp, D = p.D;
  const A ninf = -std::numeric_limits<A>::infinity(), es = exp_scale<A>(p);
  T* outp = out.data<T>();
  const typename Prod::Shared shared(p);  // what every row block reads (the bf16 policy's packed K and V)
  for_items(BK * nrb, [&] {
    struct W {
      Prod prod;
      std::vector<A> o, s, m, l;
      W(const Attn& p_, const typename Prod::Shared& sh) : prod(p_, sh), o(kBr * p_.Dp), s(kBr * kBc), m(kBr), l(kBr) {}
    };
    auto w = std::make_shared<W>(p, shared);
    return [&, w](int64_t item) {
      // Largest causal blocks first: the block index runs backwards over the item order.
      const int64_t rb = nrb - 1 - item / BK, bk = item % BK, b = bk / p.Hkv, kvh = bk % p.Hkv;
      const int64_t r0 = rb * kBr;
      const int n = (int)std::min<int64_t>(kBr, R - r0);
      A *O = w->o.data(), *S = w->s.data(), *M = w->m.data(), *L = w->l.data();
      w->prod.rows(b, kvh, r0, n);
      std::fill(O, O + n * Dp, A(0));
      std::fill(M, M + n, ninf);
      std::fill(L, L + n, A(0));
      const int64_t tmax = (r0 + n - 1) / p.G;
      const int64_t kend = p.causal ? std::min(p.S, tmax + p.S - p.T + 1) : p.S;
      for (int64_t c0 = 0; c0 < kend; c0 += kBc) {
        const int kc = (int)std::min<int64_t>(kBc, kend - c0), n8 = (int)round8(kc);
        w->prod.scores(b, kvh, c0, kc, S);
        for (int i = 0; i < n; i++) {
          const int64_t r = r0 + i, t = r / p.G, h = kvh * p.G + r % p.G;
          A* s = S + i * kBc;
          scale_mask_row(p, s, kc, n8, b, h, t, c0);
          const A rmax = M[i] != M[i] ? M[i] : row_max(s, n8) * es;  // NaN: a visible NaN score (M keeps it)
          const A mnew = rmax != rmax ? rmax : std::max(M[i], rmax);
          if (mnew == ninf || mnew != mnew) {  // nothing visible yet (P = 0, O and l stay 0), or a NaN row
            M[i] = mnew;
            std::fill(s, s + n8, A(0));
            continue;
          }
          const A alpha = M[i] == mnew ? A(1) : std::exp(M[i] - mnew);  // 0 when M was -inf
          L[i] = L[i] * alpha + exp_row(s, n8, mnew, es);
          M[i] = mnew;
          if (alpha != A(1)) scale_row(O + i * Dp, (int)Dp, alpha);
        }
        w->prod.accumulate(S, kc, O);
      }
      for (int i = 0; i < n; i++) {
        const int64_t r = r0 + i, t = r / p.G, h = kvh * p.G + r % p.G;
        const int64_t row = (b * p.H + h) * p.T + t;
        const bool any = L[i] > A(0), nan_row = M[i] != M[i];
        store_row(outp + row * D, O + i * Dp, D, nan_row ? M[i] : any ? A(1) / L[i] : A(0));
        const double l = nan_row ? double(M[i])
                         : any   ? double(M[i]) + std::log(double(L[i]))
                                 : -std::numeric_limits<double>::infinity();
        if (lse.dtype == DType::F64)
          lse.data<double>()[row] = l;
        else
          lse.data<float>()[row] = float(l);
      }
    };
  });
}

template <typename T> void attention_fwd_impl(const Attn& p, const TensorArg& out, const TensorArg& lse) {
#if LLAVA_AVX2 && LLAVA_X86_ISA
  if constexpr (std::is_same_v<T, bf16>)
    if (cpu_has_avx512_bf16()) return attention_fwd_run<T, Bf16Fwd>(p, out, lse);
#endif
  attention_fwd_run<T, F32Fwd<T>>(p, out, lse);
}

// ------------------------------------------------------------------ backward
template <typename T, typename Prod> void attention_bwd_run(const Attn& p, const TensorArg& dq, const TensorArg& dk,
                                                            const TensorArg& dv, const TensorArg& out,
                                                            const TensorArg& dout, const TensorArg& lse) {
  using A = acc_t<T>;
  const int64_t R = p.R(), BK = p.B * p.Hkv, Dp = p.Dp, D = p.D, BHT = p.B * p.H * p.T;
  const int64_t nkb = (p.S + kBc - 1) / kBc;
  const A ninf = -std::numeric_limits<A>::infinity(), es = exp_scale<A>(p);

  // delta = rowsum(dO * O) and lse, per (b, h, t), in the compute type.
  std::vector<A> delta(BHT), lsev(BHT);
  parallel_for(BHT, 256, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      int64_t t = i % p.T, bh = i / p.T, h = bh % p.H, b = bh / p.H;
      delta[i] = dot_row(row_ptr<T>(dout, b, h, t), row_ptr<T>(out, b, h, t), D);
      lsev[i] = lse.dtype == DType::F64 ? A(lse.data<double>()[i]) : A(lse.data<float>()[i]);
    }
  });

  // Split the keys of each (b, kv head) only when there are too few of those to feed the threads.
  // One split: an item sees every key, so it accumulates dQ for its rows in a per-thread buffer and
  // writes it out at the end. Several: dQ partials go to shared scratch [split][b, kvh][row][Dp]
  // (rows t-major like the items), summed in split order afterwards.
  const int64_t want = 4 * num_threads();
  const int64_t nsplit = std::max<int64_t>(1, std::min<int64_t>(nkb, BK > 0 ? (want + BK - 1) / BK : 1));
  const int64_t per_split = BK * R * Dp;
  std::vector<A> dqacc(nsplit > 1 ? nsplit * per_split : 0, A(0));
  T *dkp = dk.data<T>(), *dvp = dv.data<T>(), *dqp = dq.data<T>();
  auto store_dq_row = [&](int64_t b, int64_t kvh, int64_t r, const A* src) {
    const int64_t h = kvh * p.G + r % p.G, t = r / p.G;
    store_row(dqp + ((b * p.H + h) * p.T + t) * D, src, D, A(1));
  };

  for_items(BK * nsplit, [&] {
    struct W {
      Prod prod;
      std::vector<A> s, dp, dK, dV, dq;
      // s and dp keep 16 spare values past the last row (the bf16 packers read 12-column pieces).
      W(const Attn& p_, const TensorArg& dout_, int64_t dq_n)
          : prod(p_, dout_), s(kBr * kBc + 16), dp(kBr * kBc + 16), dK(kBc * p_.Dp), dV(kBc * p_.Dp), dq(dq_n) {}
    };
    auto w = std::make_shared<W>(p, dout, nsplit == 1 ? R * Dp : 0);
    return [&, w](int64_t item) {
      const int64_t split = item / BK, bk = item % BK, b = bk / p.Hkv, kvh = bk % p.Hkv;
      const int64_t kb0 = nkb * split / nsplit, kb1 = nkb * (split + 1) / nsplit;
      A* dQ = nsplit == 1 ? w->dq.data() : dqacc.data() + split * per_split + bk * R * Dp;
      if (nsplit == 1) std::fill(dQ, dQ + R * Dp, A(0));
      A *S = w->s.data(), *dP = w->dp.data(), *dK = w->dK.data(), *dV = w->dV.data();
      for (int64_t kbi = kb0; kbi < kb1; kbi++) {
        const int64_t c0 = kbi * kBc;
        const int kc = (int)std::min<int64_t>(kBc, p.S - c0), n8 = (int)round8(kc);
        w->prod.keys(b, kvh, c0, kc);
        std::fill(dK, dK + kc * Dp, A(0));
        std::fill(dV, dV + kc * Dp, A(0));
        // Causal: rows before position c0 - (S - T) see none of this tile; blocks still start at multiples
        // of kBr (the bf16 policy keeps its packed row blocks), the rows before rstart being fully masked.
        const int64_t rstart = p.causal ? std::max<int64_t>(0, c0 - (p.S - p.T)) * p.G / kBr * kBr : 0;
        for (int64_t r0 = rstart; r0 < R; r0 += kBr) {
          const int n = (int)std::min<int64_t>(kBr, R - r0);
          w->prod.rows(b, kvh, r0, n);
          w->prod.scores(S, dP);  // S = Q K^T, dP = dO V^T
          for (int i = 0; i < n; i++) {
            const int64_t r = r0 + i, t = r / p.G, h = kvh * p.G + r % p.G;
            const int64_t row = (b * p.H + h) * p.T + t;
            A* s = S + i * kBc;
            if (lsev[row] == ninf) {  // a row that saw no key: no gradient (and no exp(-inf + inf))
              std::fill(s, s + n8, A(0));
            } else if (lsev[row] != lsev[row]) {  // a NaN row (forward): NaN reaches every key it saw
              std::fill(s, s + n8, lsev[row]);
            } else {
              scale_mask_row(p, s, kc, n8, b, h, t, c0);
              exp_row(s, n8, lsev[row], es);  // P
            }
            ds_row(s, dP + i * kBc, n8, delta[row], A(p.scale));  // dS (scaled)
          }
          w->prod.grads(S, dP, dV, dK, dQ + r0 * Dp);  // dV += P^T dO, dK += dS^T Q, dQ += dS K
        }
        const int64_t krow = (b * p.Hkv + kvh) * p.S + c0;
        for (int j = 0; j < kc; j++) {
          store_row(dkp + (krow + j) * D, dK + j * Dp, D, A(1));
          store_row(dvp + (krow + j) * D, dV + j * Dp, D, A(1));
        }
      }
      if (nsplit == 1)
        for (int64_t r = 0; r < R; r++) store_dq_row(b, kvh, r, dQ + r * Dp);
    };
  });
  if (nsplit == 1) return;

  // dq = sum of the split partials, in split order.
  parallel_for(BK * R, 64, [&](int64_t i0, int64_t i1) {
    std::vector<A> acc(Dp);
    for (int64_t i = i0; i < i1; i++) {
      const A* src = dqacc.data() + i * Dp;
      std::copy(src, src + Dp, acc.begin());
      for (int64_t s = 1; s < nsplit; s++)
        for (int64_t d = 0; d < Dp; d++) acc[d] += src[s * per_split + d];
      store_dq_row(i / R / p.Hkv, (i / R) % p.Hkv, i % R, acc.data());
    }
  });
}

template <typename T> void attention_bwd_impl(const Attn& p, const TensorArg& dq, const TensorArg& dk,
                                              const TensorArg& dv, const TensorArg& out, const TensorArg& dout,
                                              const TensorArg& lse) {
#if LLAVA_AVX2 && LLAVA_X86_ISA
  if constexpr (std::is_same_v<T, bf16>)
    if (cpu_has_avx512_bf16()) return attention_bwd_run<T, Bf16Bwd>(p, dq, dk, dv, out, dout, lse);
#endif
  attention_bwd_run<T, F32Bwd<T>>(p, dq, dk, dv, out, dout, lse);
}

// ------------------------------------------------------------------ validation
// Validation is shared with the CUDA kernels (kernel_checks.h); these adapt it to Attn.
void check_head_view(const KernelArgs& a, const TensorArg& t, const char* what) {
  checks::attn_head_view(a, t, what, Device::CPU);
}

// Checks q/k/v/mask/causal/scale at the given positions and fills the problem description.
Attn check_inputs(const KernelArgs& a, size_t iq, size_t imask, size_t icausal) {
  const AttnInputs in = parse_attention_inputs(a, iq, imask, icausal, Device::CPU);
  Attn p;
  p.B = in.B, p.H = in.H, p.Hkv = in.Hkv, p.T = in.T, p.S = in.S, p.D = in.D;
  p.causal = in.causal;
  p.scale = in.scale;
  p.G = p.H / p.Hkv;
  p.Dp = round8(p.D);
  p.q = in.q, p.k = in.k, p.v = in.v, p.mask = in.mask;
  return p;
}

void check_no_overlaps(const KernelArgs& a, std::initializer_list<const TensorArg*> outs,
                       std::initializer_list<const TensorArg*> ins) {
  checks::no_overlaps(a, outs, ins, "attention");
}

void check_lse(const KernelArgs& a, const TensorArg& lse, const Attn& p) {
  check_attention_lse(a, lse, p.B, p.H, p.T, Device::CPU);
}

// attention_fwd(out, lse, q, k, v, mask?, causal, scale)
void attention_fwd_kernel(const KernelArgs& a) {
  const TensorArg &out = a.tensor(0), &lse = a.tensor(1);
  Attn p = check_inputs(a, 2, 5, 6);
  a.check_same_dtype(out, *p.q, "out");
  a.check_contiguous(out, "out");
  a.check_shape(out, {p.B, p.H, p.T, p.D}, "out");
  check_lse(a, lse, p);
  check_no_overlaps(a, {&out, &lse}, {p.q, p.k, p.v, p.mask});
  if (p.B * p.H * p.T == 0) return;
  LLAVA_DISPATCH_FLOAT(a, p.q->dtype, T, attention_fwd_impl<T>(p, out, lse));
}

// attention_bwd(dq, dk, dv, q, k, v, out, dout, lse, mask?, causal, scale)
void attention_bwd_kernel(const KernelArgs& a) {
  const TensorArg &dq = a.tensor(0), &dk = a.tensor(1), &dv = a.tensor(2);
  Attn p = check_inputs(a, 3, 9, 10);
  const TensorArg &out = a.tensor(6), &dout = a.tensor(7), &lse = a.tensor(8);
  const std::pair<const TensorArg*, const char*> grads[] = {{&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}};
  const TensorArg* like[] = {p.q, p.k, p.v};
  for (int i = 0; i < 3; i++) {
    const TensorArg& g = *grads[i].first;
    a.check_same_dtype(g, *p.q, grads[i].second);
    a.check_contiguous(g, grads[i].second);
    a.check_shape(g, std::vector<int64_t>(like[i]->shape, like[i]->shape + 4), grads[i].second);
  }
  for (auto [t, what] : {std::pair<const TensorArg*, const char*>{&out, "out"}, {&dout, "dout"}}) {
    a.check_same_dtype(*t, *p.q, what);
    check_head_view(a, *t, what);
    a.check_shape(*t, {p.B, p.H, p.T, p.D}, what);
  }
  check_lse(a, lse, p);
  check_no_overlaps(a, {&dq, &dk, &dv}, {p.q, p.k, p.v, &out, &dout, &lse, p.mask});
  if (p.B * p.Hkv == 0) return;
  LLAVA_DISPATCH_FLOAT(a, p.q->dtype, T, attention_bwd_impl<T>(p, dq, dk, dv, out, dout, lse));
}

}  // namespace

LLAVA_CPU_KERNEL("attention_fwd", attention_fwd_kernel, cpu_attention_fwd);
LLAVA_CPU_KERNEL("attention_bwd", attention_bwd_kernel, cpu_attention_bwd);

}  // namespace llava
