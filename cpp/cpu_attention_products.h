// cpu_attention_products.h — how the attention loops of cpu_attention.cc get their matrix products.
// Included by cpu_attention.cc only, inside its anonymous namespace, after Attn and the row loaders.
//
// A row block of n <= kBr query rows meets a key tile of kc <= kBc keys. The forward needs
// S = Q K^T and O += P V; the backward S = Q K^T, dP = dO V^T, dV += P^T dO, dK += dS^T Q and
// dQ += dS K. Two policies provide them:
//   F32Fwd / F32Bwd    the f32 micro-kernels of cpu_attention_tiles.h (bf16/f16 widened on load);
//                      every dtype and ISA level.
//   Bf16Fwd / Bf16Bwd  bf16 tensors on AVX512-BF16: the bf16 GEMM tile of cpp/isa (12 x 32, f32
//                      accumulation). Q, dO, K and V are packed in k pairs as the product needs them;
//                      P and dS are rounded to bf16 when packed (their f32 values still feed the row sums
//                      and dS), as FlashAttention does on tensor cores.
#pragma once

// ------------------------------------------------------------------ f32 tiles
template <typename T> struct F32Fwd {
  using A = acc_t<T>;
  struct Shared {  // nothing: f32 K and V are read in place (or widened per tile)
    explicit Shared(const Attn&) {}
  };
  const Attn& p;
  std::vector<A> q, kb, vb;
  const A *K = nullptr, *V = nullptr;
  int64_t ldk = 0, ldv = 0;
  int n = 0;
  F32Fwd(const Attn& p_, const Shared&) : p(p_), q(kBr * p_.Dp), kb(kBc * p_.Dp), vb(kBc * p_.Dp) {}
  void rows(int64_t b, int64_t kvh, int64_t r0, int n_) {
    n = n_;
    load_rows<T>(p, *p.q, b, kvh, r0, n, q.data());
  }
  void scores(int64_t b, int64_t kvh, int64_t c0, int kc, A* S) {
    K = tile_rows<T>(p, *p.k, b, kvh, c0, kc, kb.data(), ldk);
    V = tile_rows<T>(p, *p.v, b, kvh, c0, kc, vb.data(), ldv);
    qk(q.data(), p.Dp, n, K, ldk, kc, (int)p.Dp, S, kBc);
  }
  void accumulate(const A* P, int kc, A* O) { pv(P, kBc, 1, n, V, ldv, kc, (int)p.Dp, O, p.Dp); }
};

template <typename T> struct F32Bwd {
  using A = acc_t<T>;
  const Attn& p;
  const TensorArg& dout;
  std::vector<A> q, dO, kb, vb;
  const A *K = nullptr, *V = nullptr;
  int64_t ldk = 0, ldv = 0;
  int n = 0, kc = 0;
  F32Bwd(const Attn& p_, const TensorArg& dout_)
      : p(p_), dout(dout_), q(kBr * p_.Dp), dO(kBr * p_.Dp), kb(kBc * p_.Dp), vb(kBc * p_.Dp) {}
  void keys(int64_t b, int64_t kvh, int64_t c0, int kc_) {
    kc = kc_;
    K = tile_rows<T>(p, *p.k, b, kvh, c0, kc, kb.data(), ldk);
    V = tile_rows<T>(p, *p.v, b, kvh, c0, kc, vb.data(), ldv);
  }
  void rows(int64_t b, int64_t kvh, int64_t r0, int n_) {
    n = n_;
    load_rows<T>(p, *p.q, b, kvh, r0, n, q.data());
    load_rows<T>(p, dout, b, kvh, r0, n, dO.data());
  }
  void scores(A* S, A* dP) {
    const int Dp = (int)p.Dp;
    qk(q.data(), Dp, n, K, ldk, kc, Dp, S, kBc);    // S = Q K^T
    qk(dO.data(), Dp, n, V, ldv, kc, Dp, dP, kBc);  // dP = dO V^T
  }
  void grads(const A* P, const A* dS, A* dV, A* dK, A* dQ) {
    const int Dp = (int)p.Dp;
    pv(P, 1, kBc, kc, dO.data(), Dp, n, Dp, dV, Dp);  // dV += P^T dO
    pv(dS, 1, kBc, kc, q.data(), Dp, n, Dp, dK, Dp);  // dK += dS^T Q
    pv(dS, kBc, 1, n, K, ldk, kc, Dp, dQ, Dp);        // dQ += dS K
  }
};

#if LLAVA_AVX2 && LLAVA_X86_ISA
// ------------------------------------------------------------------ bf16 tiles (AVX512-BF16)
// What both bf16 policies share: the sizes, row copies and the tile call with its edges.
struct Bf16Base {
  const Attn& p;
  const int64_t Dk;   // D rounded up to whole pairs
  const int nd;       // 32-column panels of D
  const int64_t D32;  // nd * 32: the row length of the zero-padded row copies
  explicit Bf16Base(const Attn& p_) : p(p_), Dk((p_.D + 1) & ~int64_t(1)), nd(int((p_.D + 31) / 32)), D32(nd * 32) {}
  static int64_t pairs(int64_t k) { return (k + 1) & ~int64_t(1); }
  // C[rows x cols] (row stride ldc) = (first ? 0 : C) + A panel (kp pairs x 12) @ B panel (kp x 32).
  static void mm(int64_t kp, const uint16_t* A, const uint16_t* B, float* C, int64_t ldc, int rows, int cols,
                 bool first) {
    isa::bf16gemm_ukr_avx512_rows_x32(rows, cols, kp, A, B, C, ldc, first, 0.f, nullptr);
  }
  // Row copies are zero past D from their construction (copies write D values); rows past the n in use
  // are zeroed here, as the packers read whole panels.
  void zero_from(std::vector<uint16_t>& rows, int n) const {
    std::fill(rows.begin() + n * D32, rows.end(), uint16_t(0));
  }
  // Rows [r0, r0 + n) of a (b, kv head) problem of a [B,H,T,D] bf16 view into dst (row stride D32).
  void copy_rows(const TensorArg& t, int64_t b, int64_t kvh, int64_t r0, int n, uint16_t* dst) const {
    for (int i = 0; i < n; i++) {
      const int64_t r = r0 + i;
      std::memcpy(dst + i * D32, row_ptr<bf16>(t, b, kvh * p.G + r % p.G, r / p.G), p.D * 2);
    }
  }
  // Key rows [c0, c0 + kc) of a [B,Hkv,S,D] bf16 view into dst (row stride D32).
  void copy_keys(const TensorArg& t, int64_t b, int64_t kvh, int64_t c0, int kc, uint16_t* dst) const {
    for (int j = 0; j < kc; j++) std::memcpy(dst + j * D32, row_ptr<bf16>(t, b, kvh, c0 + j), p.D * 2);
  }
  // A panels of 12 rows in D pairs from n rows of row stride D32 (rows past n must be zero).
  void pack_rows_a(const uint16_t* rows, int n, uint16_t* dst) const {
    for (int i = 0; i < n; i += 12) isa::bf16_pack_cols12_avx512(rows + i * D32, D32, p.D, dst + i * Dk);
  }
  // B panels of 32 rows in D pairs (rows past kc must be zero).
  void pack_rows_b(const uint16_t* rows, int kc, uint16_t* dst) const {
    for (int j = 0; j < kc; j += 32) isa::bf16_pack_cols32_avx512(rows + j * D32, D32, p.D, dst + j * Dk);
  }
  // B panels of 32 columns of D, pairs along the n rows (the depth of P V, P^T dO and the like).
  void pack_cols_b(const uint16_t* rows, int n, uint16_t* dst) const {
    for (int d = 0; d < nd; d++) isa::bf16_pack_rows32_avx512(rows + d * 32, D32, n, dst + d * 32 * pairs(n));
  }
  // C[rows, D) (+)= A panels (rows in 12s, kp pairs deep) @ the D-column B panels of pack_cols_b, which were
  // packed bkp >= kp pairs deep (a causal row block reads the first kp pairs of a tile packed for all its keys).
  void mm_d(int64_t kp, const uint16_t* A, const uint16_t* B, float* C, int rows, bool first, int64_t bkp = 0) {
    const int64_t bstride = 32 * std::max(kp, bkp);
    for (int i = 0; i < rows; i += 12)
      for (int d = 0; d < nd; d++)
        mm(kp / 2, A + i * kp, B + d * bstride, C + i * p.Dp + 32 * d, p.Dp, std::min(12, rows - i),
           (int)std::min<int64_t>(32, p.D - 32 * d), first);
  }
};

struct Bf16Fwd : Bf16Base {
  // K and V of every key tile of every (b, kv head), packed once before the row blocks start, when several row
  // blocks read each tile and the copy stays under kMaxBytes (about the size of K and V themselves); else
  // each row block packs the tiles it visits (one row block: a decode step, a short prompt).
  struct Shared {
    static constexpr double kMaxBytes = 128.0 * (1 << 20);
    const int64_t nkt;  // key tiles per (b, kv head); 0: not packed here
    const int64_t ktile, vtile;
    const HostScratch<uint16_t> k, v;  // [b, kv head][key tile][ktile or vtile]
    static int64_t tiles(const Attn& p, const Bf16Base& base) {
      const int64_t n = (p.S + kBc - 1) / kBc;
      return p.R() > kBr && 2.0 * p.B * p.Hkv * n * kBc * (base.Dk + base.D32) <= kMaxBytes ? n : 0;
    }
    explicit Shared(const Attn& p) : Shared(p, Bf16Base(p)) {}
    Shared(const Attn& p, const Bf16Base& base)
        : nkt(tiles(p, base)),
          ktile(kBc * base.Dk),
          vtile(kBc * base.D32),
          k(p.B * p.Hkv * nkt * ktile),
          v(p.B * p.Hkv * nkt * vtile) {
      parallel_for(p.B * p.Hkv * nkt, 1, [&](int64_t i0, int64_t i1) {
        std::vector<uint16_t> rows(kBc * base.D32, 0);
        for (int64_t i = i0; i < i1; i++) {
          const int64_t bk = i / nkt, c0 = i % nkt * kBc, b = bk / p.Hkv, kvh = bk % p.Hkv;
          const int kc = (int)std::min<int64_t>(kBc, p.S - c0);
          base.zero_from(rows, kc);
          base.copy_keys(*p.k, b, kvh, c0, kc, rows.data());
          base.pack_rows_b(rows.data(), kc, &k[i * ktile]);
          base.copy_keys(*p.v, b, kvh, c0, kc, rows.data());
          base.pack_cols_b(rows.data(), kc, &v[i * vtile]);
        }
      });
    }
  };
  const Shared& sh;
  std::vector<uint16_t> qrows, q, krows, k, vrows, v, pp;
  const uint16_t *kt = nullptr, *vt = nullptr;  // this key tile's packed K and V
  int64_t vpairs = 0;                           // the depth vt was packed to (its panel stride / 32)
  int n = 0, kc = 0;
  Bf16Fwd(const Attn& p_, const Shared& sh_)
      : Bf16Base(p_),
        sh(sh_),
        qrows(kBr * D32),
        q(kBr * Dk),
        krows(sh.nkt ? 0 : kBc * D32),
        k(sh.nkt ? 0 : kBc * Dk),
        vrows(sh.nkt ? 0 : kBc * D32),
        v(sh.nkt ? 0 : kBc * D32),
        pp(kBr * kBc) {}
  void rows(int64_t b, int64_t kvh, int64_t r0, int n_) {
    n = n_;
    zero_from(qrows, n);
    copy_rows(*p.q, b, kvh, r0, n, qrows.data());
    pack_rows_a(qrows.data(), n, q.data());
  }
  void scores(int64_t b, int64_t kvh, int64_t c0, int kc_, float* S) {
    kc = kc_;
    if (sh.nkt) {
      const int64_t i = (b * p.Hkv + kvh) * sh.nkt + c0 / kBc;
      kt = &sh.k[i * sh.ktile], vt = &sh.v[i * sh.vtile];
      vpairs = pairs(std::min<int64_t>(kBc, p.S - c0));  // packed for every key of the tile, kc or more
    } else {
      zero_from(krows, kc);
      zero_from(vrows, kc);
      copy_keys(*p.k, b, kvh, c0, kc, krows.data());
      copy_keys(*p.v, b, kvh, c0, kc, vrows.data());
      pack_rows_b(krows.data(), kc, k.data());
      pack_cols_b(vrows.data(), kc, v.data());
      kt = k.data(), vt = v.data();
      vpairs = pairs(kc);
    }
    for (int i = 0; i < n; i += 12)  // whole panels: S has kBr x kBc room, columns past kc are ignored
      for (int j = 0; j < kc; j += 32) mm(Dk / 2, &q[i * Dk], kt + j * Dk, S + i * kBc + j, kBc, 12, 32, true);
  }
  void accumulate(const float* P, int, float* O) {
    const int64_t kk = pairs(kc);
    for (int i = 0; i < n; i += 12) isa::bf16_pack_f32_cols12_avx512(P + i * kBc, kBc, kc, &pp[i * kk]);
    mm_d(kk, pp.data(), vt, O, n, false, vpairs);  // O += P V
  }
};

struct Bf16Bwd : Bf16Base {
  const TensorArg& dout;
  std::vector<uint16_t> qrows, dorows, krows, vrows, kb, vb, kr, pt, dst, dsa;
  // Q and dO of each row block, in the four layouts the products read: A panels (qa, doa) and the
  // D-column B panels (qb, dob). Every key tile visits the same row blocks of its (b, kv head), so they
  // are packed once per block and kept (row blocks start at multiples of kBr; up to kKeptRows rows of
  // a head, beyond which one block's worth is packed per visit, in block slot 0).
  static constexpr int64_t kKeptRows = 4096;
  const int64_t nkept;  // row blocks kept
  std::vector<uint16_t> qa, doa, qb, dob;
  std::vector<char> have;  // per kept block: packed for (at_b, at_kvh)
  int64_t at_b = -1, at_kvh = -1, blk = 0;
  int n = 0, kc = 0;
  Bf16Bwd(const Attn& p_, const TensorArg& dout_)
      : Bf16Base(p_),
        dout(dout_),
        qrows(kBr * D32),
        dorows(kBr * D32),
        krows(kBc * D32),
        vrows(kBc * D32),
        kb(kBc * Dk),
        vb(kBc * Dk),
        kr(kBc * D32),
        pt((kBc + 11) / 12 * 12 * kBr),
        dst((kBc + 11) / 12 * 12 * kBr),
        dsa(kBr * kBc),
        nkept(p_.R() <= kKeptRows ? (p_.R() + kBr - 1) / kBr : 1),
        qa(nkept * kBr * Dk),
        doa(nkept * kBr * Dk),
        qb(nkept * kBr * D32),
        dob(nkept * kBr * D32),
        have(nkept, 0) {}
  void keys(int64_t b, int64_t kvh, int64_t c0, int kc_) {
    kc = kc_;
    zero_from(krows, kc);
    zero_from(vrows, kc);
    copy_keys(*p.k, b, kvh, c0, kc, krows.data());
    copy_keys(*p.v, b, kvh, c0, kc, vrows.data());
    pack_rows_b(krows.data(), kc, kb.data());  // for S = Q K^T
    pack_rows_b(vrows.data(), kc, vb.data());  // for dP = dO V^T
    pack_cols_b(krows.data(), kc, kr.data());  // for dQ += dS K
  }
  void rows(int64_t b, int64_t kvh, int64_t r0, int n_) {
    n = n_;
    const bool keep = (nkept > 1 || p.R() <= kBr) && r0 % kBr == 0;
    if (b != at_b || kvh != at_kvh || !keep) std::fill(have.begin(), have.end(), 0);
    at_b = b, at_kvh = kvh;
    blk = keep ? r0 / kBr : 0;
    if (have[blk]) return;
    zero_from(qrows, n);
    zero_from(dorows, n);
    copy_rows(*p.q, b, kvh, r0, n, qrows.data());
    copy_rows(dout, b, kvh, r0, n, dorows.data());
    pack_rows_a(qrows.data(), n, &qa[blk * kBr * Dk]);     // for S
    pack_rows_a(dorows.data(), n, &doa[blk * kBr * Dk]);   // for dP
    pack_cols_b(qrows.data(), n, &qb[blk * kBr * D32]);    // for dK += dS^T Q
    pack_cols_b(dorows.data(), n, &dob[blk * kBr * D32]);  // for dV += P^T dO
    have[blk] = 1;
  }
  void scores(float* S, float* dP) {
    const uint16_t *q = &qa[blk * kBr * Dk], *o = &doa[blk * kBr * Dk];
    for (int i = 0; i < n; i += 12)
      for (int j = 0; j < kc; j += 32) {
        mm(Dk / 2, &q[i * Dk], &kb[j * Dk], S + i * kBc + j, kBc, 12, 32, true);
        mm(Dk / 2, &o[i * Dk], &vb[j * Dk], dP + i * kBc + j, kBc, 12, 32, true);
      }
  }
  // P and dS are [n x kBc] f32 with room for 16 more floats past the last row (the 12-column loads).
  void grads(const float* P, const float* dS, float* dV, float* dK, float* dQ) {
    const int64_t kn = pairs(n), kk = pairs(kc);
    for (int j = 0; j < kc; j += 12) {
      isa::bf16_pack_f32_rows12_avx512(P + j, kBc, n, &pt[j * kn]);
      isa::bf16_pack_f32_rows12_avx512(dS + j, kBc, n, &dst[j * kn]);
    }
    mm_d(kn, pt.data(), &dob[blk * kBr * D32], dV, kc, false);  // dV += P^T dO
    mm_d(kn, dst.data(), &qb[blk * kBr * D32], dK, kc, false);  // dK += dS^T Q
    for (int i = 0; i < n; i += 12) isa::bf16_pack_f32_cols12_avx512(dS + i * kBc, kBc, kc, &dsa[i * kk]);
    mm_d(kk, dsa.data(), kr.data(), dQ, n, false);  // dQ += dS K
  }
};
#endif
