// attention_simt.cuh — the CUDA-core (SIMT) attention kernels: the fallback of attention_fwd.cu and
// attention_bwd.cu for f32/f64, head sizes without a tensor-core kernel (any D up to 1024) and views
// whose rows are not 16-byte aligned. FlashAttention's loops with the arithmetic on CUDA cores: K/V
// (and Q/dO) tiles in shared memory in the accumulator type, online softmax in registers, causal key
// tiles past the diagonal skipped; the backward owns dK/dV per key tile (no atomics) and adds dQ with
// one atomicAdd per (query, column) per key tile.
#pragma once

#include "attention_common.cuh"

namespace llava {
namespace attn {

using gpu::acc_t;

// ------------------------------------------------------------------ SIMT tiles
// Both kernels work in the accumulator type C on tiles of 32 query rows x 32 keys with 128 threads.
// Thread t owns rows (or keys) t / 8 and t / 8 + 16 and columns t % 8 + 8 c: the 8 threads of a row
// are 8 consecutive lanes of one warp, so a row's max and sum take three shuffles and a row of P
// written to shared memory is read back by the same warp. D is cut into chunks of DV = 8 NC columns
// (NC = 4 for D <= 32, else 8); shared tiles are [rows][DV + 1] (odd row stride: the 8 lanes reading 8
// rows at one column hit 8 banks). Shared memory, in elements of C: forward Q, K, V tiles + P
// [BR][BC + 1]; backward Q, dO, K, V tiles + P and dS. f64 at DV = 64: 58 KB / 83 KB (above 48 KB,
// gpu::launch raises the limit), f32 half of that.
template <int NC> struct SimtCfg {
  static constexpr int BR = 32, BC = 32, THREADS = 128, DV = 8 * NC, LD = DV + 1, LDP = BC + 1;
  static constexpr int FWD_SMEM = (BR + 2 * BC) * LD + BR * LDP, BWD_SMEM = (2 * BR + 2 * BC) * LD + 2 * BR * LDP;
  __host__ __device__ static int chunks(int D) { return D > DV ? (D + DV - 1) / DV : 1; }
};

__device__ __forceinline__ float exp_(float x) { return expf(x); }
__device__ __forceinline__ double exp_(double x) { return exp(x); }
__device__ __forceinline__ float log_(float x) { return logf(x); }
__device__ __forceinline__ double log_(double x) { return log(x); }

// Max / sum over the 8 lanes of a SIMT row (fmax skips a NaN, so every lane gets the same value).
template <typename C> __device__ __forceinline__ C row8_max(C v) {
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
template <typename C> __device__ __forceinline__ C row8_sum(C v) {
#pragma unroll
  for (int o = 1; o < 8; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// s[r][c] (row stride DV + 1) = g[row0 + r][c0 + c] in C for r < R, c < DV, from a [rows, D] view with
// row stride ld; out-of-range rows and columns are 0. Consecutive threads read consecutive columns.
template <typename T, int R, int DV, int THREADS>
__device__ __forceinline__ void stage_tile(gpu::acc_t<T>* s, const T* g, int64_t ld, int row0, int rows, int c0, int D,
                                           int tid) {
#pragma unroll 4
  for (int e = tid; e < R * DV; e += THREADS) {
    const int r = e / DV, c = e % DV;
    s[r * (DV + 1) + c] =
        row0 + r < rows && c0 + c < D ? gpu::to_acc<T>(g[(int64_t)(row0 + r) * ld + c0 + c]) : gpu::acc_t<T>(0);
  }
}

// s[r][c] += sum over d < dw of a[ty + 16 r][d] * b[tx + 8 c][d]: this thread's 2 x 4 block of the
// 32 x 32 product A B^T of two [32][LD] tiles over one chunk of columns.
template <typename C, int LD>
__device__ __forceinline__ void dot_tile(C (&s)[2][4], const C* a, const C* b, int dw, int ty, int tx) {
#pragma unroll 4
  for (int d = 0; d < dw; d++) {
    const C a0 = a[ty * LD + d], a1 = a[(ty + 16) * LD + d];
#pragma unroll
    for (int c = 0; c < 4; c++) {
      const C bd = b[(tx + 8 * c) * LD + d];
      s[0][c] += a0 * bd;
      s[1][c] += a1 * bd;
    }
  }
}

// ------------------------------------------------------------------ forward
// One block = 32 query rows of one (b, h) and one chunk of DV output columns; blockIdx.x = query
// tile x chunk, heaviest query tiles first. Per key tile of BC = 32 keys: S = Q K^T over all of D, a
// DV-column chunk of the Q and K tiles at a time in shared memory (the Q tile stays resident when D is
// one chunk); then the online softmax in registers, P to shared memory (rows stay within a warp:
// __syncwarp), and O_chunk += P V_chunk from a V tile staged with the first K chunk. Blocks of the
// same query tile and different chunks recompute the same S and softmax bit for bit, so lse (written
// by chunk 0) matches every chunk's normalisation. Key tiles past the tile's last visible key are
// never visited; no atomics, two barriers per chunk of a key tile. Masking and NaN rows as in the
// tensor-core kernel (a NaN score: fmax skips it, its exp makes l, hence out and lse, NaN).
template <typename T, int NC> __global__ void __launch_bounds__(128) attention_fwd_simt_kernel(AttnParams p) {
  using C = acc_t<T>;
  using Cfg = SimtCfg<NC>;
  constexpr int BR = Cfg::BR, BC = Cfg::BC, DV = Cfg::DV, LD = Cfg::LD, LDP = Cfg::LDP, TH = Cfg::THREADS;
  C* sQ = reinterpret_cast<C*>(mma::dyn_smem);
  C* sK = sQ + BR * LD;
  C* sV = sK + BC * LD;
  C* sP = sV + BC * LD;
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7, D = p.D;
  const int nch = Cfg::chunks(D), c0 = blockIdx.x % nch;
  const int q0 = (gridDim.x / nch - 1 - blockIdx.x / nch) * BR;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / p.G;
  const T* Qg = static_cast<const T*>(p.q) + b * p.q_s[0] + h * p.q_s[1];
  const T* Kg = static_cast<const T*>(p.k) + b * p.k_s[0] + hk * p.k_s[1];
  const T* Vg = static_cast<const T*>(p.v) + b * p.v_s[0] + hk * p.v_s[1];
  const int kv_end = p.causal ? min(p.S, q0 + BR + p.S - p.T) : p.S;
  const C scale = C(p.scale);
  C o[2][NC], m[2] = {C(-INFINITY), C(-INFINITY)}, l[2] = {C(0), C(0)};
#pragma unroll
  for (int c = 0; c < NC; c++) o[0][c] = o[1][c] = C(0);

  for (int k0 = 0; k0 < kv_end; k0 += BC) {
    C s[2][4] = {};
    for (int n = 0; n < nch; n++) {
      const int d0 = n * DV;
      __syncthreads();  // every thread is done with the previous tiles (sQ, sK; sV and sP of the last key tile)
      if (nch > 1 || k0 == 0) stage_tile<T, BR, DV, TH>(sQ, Qg, p.q_s[2], q0, p.T, d0, D, tid);
      stage_tile<T, BC, DV, TH>(sK, Kg, p.k_s[2], k0, p.S, d0, D, tid);
      if (n == 0) stage_tile<T, BC, DV, TH>(sV, Vg, p.v_s[2], k0, p.S, c0 * DV, D, tid);
      __syncthreads();  // the Q, K (and V) tiles are in place
      dot_tile<C, LD>(s, sQ, sK, min(DV, D - d0), ty, tx);
    }

    const bool need_mask = tile_needs_mask(p, q0, k0, BC);
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = q0 + ty + 16 * r;
      C mx = C(-INFINITY);
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int col = k0 + tx + 8 * c;
        C x = s[r][c] * scale;
        if (need_mask && (col >= p.S || row >= p.T || !visible(p, b, h, row, col))) x = C(-INFINITY);
        s[r][c] = x;
        mx = fmax(mx, x);
      }
      const C m_new = fmax(m[r], row8_max(mx));
      const C ref = m_new == C(-INFINITY) ? C(0) : m_new;  // nothing visible yet: exp(-inf - 0) = 0
      const C corr = exp_(m[r] - ref);
      m[r] = m_new;
      C sum = C(0);
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const C pc = exp_(s[r][c] - ref);
        sum += pc;
        sP[(ty + 16 * r) * LDP + tx + 8 * c] = pc;
      }
      l[r] = l[r] * corr + sum;  // this lane's partial; the row's 8 lanes add theirs at the end
#pragma unroll
      for (int c = 0; c < NC; c++) o[r][c] *= corr;
    }
    __syncwarp();  // a row of P is written and read by the lanes of one warp
#pragma unroll 4
    for (int k = 0; k < BC; k++) {
      const C p0 = sP[ty * LDP + k], p1 = sP[(ty + 16) * LDP + k];
#pragma unroll
      for (int c = 0; c < NC; c++) {
        const C vd = sV[k * LD + tx + 8 * c];
        o[0][c] += p0 * vd;
        o[1][c] += p1 * vd;
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; r++) {
    const C lt = row8_sum(l[r]);
    const int row = q0 + ty + 16 * r;
    if (row >= p.T) continue;
    const int64_t bhr = ((int64_t)b * p.H + h) * p.T + row;
    const C inv = lt == C(0) ? C(0) : C(1) / lt;  // NaN l (a NaN score): a NaN row
    T* orow = static_cast<T*>(p.out) + bhr * D;
#pragma unroll
    for (int c = 0; c < NC; c++) {
      const int col = c0 * DV + tx + 8 * c;
      if (col < D) orow[col] = gpu::from_acc<T>(o[r][c] * inv);
    }
    if (c0 == 0 && tx == 0) {
      const double v = lt == C(0) ? -INFINITY : double(m[r] + log_(lt));
      if (p.lse_f64)
        static_cast<double*>(p.lse)[bhr] = v;
      else
        static_cast<float*>(p.lse)[bhr] = float(v);
    }
  }
}

// ------------------------------------------------------------------ backward
// One block = 32 keys of one (b, kv head) and one chunk of DV columns; blockIdx.x = key tile x chunk.
// It loops over every (query head of the group, query tile of 32 rows) that can see its keys. Per
// item: S = Q K^T and dP = dO V^T over all of D, a DV-column chunk of the Q, dO, K, V tiles at a time
// in shared memory, the block's own chunk last so that its Q, dO and K tiles are still in place
// afterwards; P = exp(S scale - lse) (0 where masked or lse = -inf) and dS = P (dP - delta) go to
// shared memory; then for the block's columns dV += P^T dO and dK += dS^T Q accumulate in registers
// over all items (no atomics; written once, dK scaled), and dQ += dS K is added with one atomicAdd per
// (query, column) into the accumulator-type scratch (cast with the scale afterwards). With D <= DV
// there is one chunk and the K/V tiles are staged once for all items.
template <typename T, int NC> __global__ void __launch_bounds__(128)
    attention_bwd_simt_kernel(AttnParams p, BwdOut bo) {
  using C = acc_t<T>;
  using Cfg = SimtCfg<NC>;
  constexpr int BR = Cfg::BR, BC = Cfg::BC, DV = Cfg::DV, LD = Cfg::LD, LDP = Cfg::LDP, TH = Cfg::THREADS;
  C* sQ = reinterpret_cast<C*>(mma::dyn_smem);
  C* sdO = sQ + BR * LD;
  C* sK = sdO + BR * LD;
  C* sV = sK + BC * LD;
  C* sP = sV + BC * LD;
  C* sdS = sP + BR * LDP;
  const int tid = threadIdx.x, ty = tid >> 3, tx = tid & 7, D = p.D;
  const int nch = Cfg::chunks(D), c0 = blockIdx.x % nch, col0 = c0 * DV;
  const int k0 = blockIdx.x / nch * BC, hk = blockIdx.y, b = blockIdx.z;
  const T* Kg = static_cast<const T*>(p.k) + b * p.k_s[0] + hk * p.k_s[1];
  const T* Vg = static_cast<const T*>(p.v) + b * p.v_s[0] + hk * p.v_s[1];
  const int nqt = (p.T + BR - 1) / BR;
  const int qt_begin = p.causal ? max(0, k0 - (p.S - p.T)) / BR : 0;  // the first tile that sees key k0
  const int nq = max(0, nqt - qt_begin), n_items = p.G * nq;
  const C scale = C(p.scale);
  C dk[2][NC], dv[2][NC];
#pragma unroll
  for (int c = 0; c < NC; c++) dk[0][c] = dk[1][c] = dv[0][c] = dv[1][c] = C(0);

  for (int it = 0; it < n_items; it++) {
    const int h = hk * p.G + it / nq, q0 = (qt_begin + it % nq) * BR;
    const T* Qg = static_cast<const T*>(p.q) + b * p.q_s[0] + h * p.q_s[1];
    const T* dOg = static_cast<const T*>(p.dout) + b * p.do_s[0] + h * p.do_s[1];
    C s[2][4] = {}, dp[2][4] = {};
    for (int n = 0; n < nch; n++) {
      const int d0 = (c0 + 1 + n) % nch * DV;  // ends with the block's own chunk
      __syncthreads();                         // every thread is done with the previous tiles (all six)
      stage_tile<T, BR, DV, TH>(sQ, Qg, p.q_s[2], q0, p.T, d0, D, tid);
      stage_tile<T, BR, DV, TH>(sdO, dOg, p.do_s[2], q0, p.T, d0, D, tid);
      if (nch > 1 || it == 0) {
        stage_tile<T, BC, DV, TH>(sK, Kg, p.k_s[2], k0, p.S, d0, D, tid);
        stage_tile<T, BC, DV, TH>(sV, Vg, p.v_s[2], k0, p.S, d0, D, tid);
      }
      __syncthreads();  // the Q, dO, K, V tiles are in place
      dot_tile<C, LD>(s, sQ, sK, min(DV, D - d0), ty, tx);
      dot_tile<C, LD>(dp, sdO, sV, min(DV, D - d0), ty, tx);
    }

    // P and dS for rows ty, ty + 16 and keys tx + 8c. A NaN row (lse NaN) gets NaN P and dS.
    const bool need_mask = tile_needs_mask(p, q0, k0, BC);
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int row = q0 + ty + 16 * r;
      C lse = C(-INFINITY), delta = C(0);
      if (row < p.T) {
        const int64_t bhr = ((int64_t)b * p.H + h) * p.T + row;
        lse = C(load_lse(p, bhr));
        delta = static_cast<const C*>(bo.delta)[bhr];
      }
#pragma unroll
      for (int c = 0; c < 4; c++) {
        const int col = k0 + tx + 8 * c;
        C pv = C(0);
        if (lse != C(-INFINITY) && (!need_mask || (col < p.S && row < p.T && visible(p, b, h, row, col))))
          pv = exp_(s[r][c] * scale - lse);
        sP[(ty + 16 * r) * LDP + tx + 8 * c] = pv;
        sdS[(ty + 16 * r) * LDP + tx + 8 * c] = pv * (dp[r][c] - delta);
      }
    }
    __syncthreads();  // P and dS are complete (read across warps below)

    // dV += P^T dO, dK += dS^T Q: keys ty, ty + 16, columns col0 + tx + 8c.
#pragma unroll 2
    for (int i = 0; i < BR; i++) {
      const C p0 = sP[i * LDP + ty], p1 = sP[i * LDP + ty + 16];
      const C s0 = sdS[i * LDP + ty], s1 = sdS[i * LDP + ty + 16];
#pragma unroll
      for (int c = 0; c < NC; c++) {
        const C od = sdO[i * LD + tx + 8 * c], qd = sQ[i * LD + tx + 8 * c];
        dv[0][c] += p0 * od;
        dv[1][c] += p1 * od;
        dk[0][c] += s0 * qd;
        dk[1][c] += s1 * qd;
      }
    }
    // dQ += dS K: queries ty, ty + 16, the same columns.
    C* dq_rows = static_cast<C*>(bo.dq_acc) + (((int64_t)b * p.H + h) * p.T + q0) * D;
#pragma unroll
    for (int r = 0; r < 2; r++) {
      const int i = ty + 16 * r;
      C acc[NC];
#pragma unroll
      for (int c = 0; c < NC; c++) acc[c] = C(0);
#pragma unroll 4
      for (int j = 0; j < BC; j++) {
        const C ds = sdS[i * LDP + j];
#pragma unroll
        for (int c = 0; c < NC; c++) acc[c] += ds * sK[j * LD + tx + 8 * c];
      }
      if (q0 + i >= p.T) continue;
#pragma unroll
      for (int c = 0; c < NC; c++)
        if (col0 + tx + 8 * c < D) atomicAdd(dq_rows + (int64_t)i * D + col0 + tx + 8 * c, acc[c]);
    }
  }

  // dK (scaled) and dV rows of this key tile's columns; keys no query saw get zeros.
#pragma unroll
  for (int r = 0; r < 2; r++) {
    const int key = k0 + ty + 16 * r;
    if (key >= p.S) continue;
    const int64_t off = (((int64_t)b * p.Hkv + hk) * p.S + key) * D;
#pragma unroll
    for (int c = 0; c < NC; c++) {
      const int col = col0 + tx + 8 * c;
      if (col >= D) continue;
      static_cast<T*>(bo.dk)[off + col] = gpu::from_acc<T>(dk[r][c] * scale);
      static_cast<T*>(bo.dv)[off + col] = gpu::from_acc<T>(dv[r][c]);
    }
  }
}

}  // namespace attn
}  // namespace llava
