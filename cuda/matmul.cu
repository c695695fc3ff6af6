// matmul.cu — the `matmul` kernel on CUDA:
//   out[Bt,M,N] = act(a[Bt,M,K] @ b[Bt,K,N] + bias[N]) + beta * out_old
// a and b are strided 3-D views (batch stride 0 = broadcast; a transpose is a view with swapped
// strides), out is contiguous. Optional args: bias (3), beta (4; 0 or absent = out is not read, as
// in BLAS and the CPU kernel), epilogue (5): 'none' | 'gelu' (erf form) | 'gelu_tanh'. Accumulation
// is f32 (f64 for f64); the result is rounded once on store.
//
// bf16 / f16: tensor cores, the classic Ampere "multistage" GEMM (CUTLASS sm80 style), written out:
//   * block tile BM x BN x BK, warps laid out WARPS_M x WARPS_N, each warp owns a (BM/WARPS_M) x
//     (BN/WARPS_N) tile of f32 accumulators and issues mma.sync.m16n8k16. By default:
//     big:   128 x 128 x 32, 8 warps (2 x 4), warp tile 64 x 32, 4 stages, 64 KB shared memory
//     small:  64 x  64 x 32, 4 warps (2 x 2), warp tile 32 x 32, 4 stages, 32 KB (used when the big
//             tile would not give every SM a block: decode, small layers)
//     and, forced through cudaGemmTile so the GPU benchmark can compare them (bf16, 16-byte-aligned
//     operands; anything else keeps the defaults): 128 x 128 x 64 (3 stages, 96 KB), each of the two
//     128 x 128 tiles with fragment prefetch (below), 128 x 256 x 32 (warp tile 64 x 64, 3 stages,
//     72 KB); on sm_90 also the two Hopper tiles of matmul_sm90.cu (wgmma).
//   * a STAGES-deep cp.async ring: tile kt+STAGES-1 is being fetched while tile kt is multiplied, one
//     __syncthreads per k tile (the wait+barrier both publishes the next tile and proves every warp
//     has finished reading the slot that the next fetch overwrites).
//   * optional fragment prefetch: the ldmatrix reads of k-step s+1 are issued before the mma of step s.
//   * operand layouts are template parameters. An operand whose K dimension is contiguous in global
//     memory is staged K-contiguous ([rows][BK]) and read with ldmatrix; one whose M (or N) dimension
//     is contiguous is staged that way ([BK][rows]) and read with ldmatrix.trans. Both give the same
//     fragments (see mma.cuh), so all four transpose combinations run at full speed without a
//     transpose pass.
//   * XOR swizzle on 16-byte chunks so that cp.async stores and ldmatrix reads are bank-conflict
//     free: [rows][32] rows are 64 B (4 chunks): chunk ^= (row >> 1) & 3; [rows][64] rows are 128 B:
//     chunk ^= row & 7; [BK][rows] rows are 128-512 B: chunk ^= k & 7 (proof next to smem_off).
//   * predicated cp.async with zero fill for M/N/K tails. The 16-byte path needs every row start
//     16-byte aligned (inner extent and leading stride multiples of 8, base aligned); otherwise
//     ("unaligned", e.g. K = 588 for the patch embedding) the same kernel stages the tiles with
//     element loads from arbitrary strides, which also covers views with no unit stride at all.
//   * grid swizzle: consecutive blocks walk down a group of 8 M-tiles before moving along N, so the
//     B columns they share stay in L2.
//   * fused epilogue straight from the accumulator registers: bias, GELU, beta * out_old, one
//     rounding, 2-element stores where the output is 4-byte aligned.
// f32 / f64: a plain shared-memory SIMT GEMM (128x128x8 tile, 8x8 outputs per thread for f32;
// 64x64x8, 4x4 for f64) over arbitrary strides — correctness first (f64 serves gradient checks).
// Every dtype: M <= 8 with b's K stride 1 (x @ W^T in decoding, one sequence or a batch of them) takes the
// skinny kernel instead, one warp per output column (below run_tc).
// Batches run on gridDim.z (chunks of 65535).
#include <cmath>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cuda_common.cuh"
#include "gemm_common.cuh"
#include "kernel_checks.h"
#include "mma.cuh"

namespace llava {
namespace {

using gpu::acc_t;
using namespace gemm;

// ===================================================================== tensor-core GEMM (bf16/f16)
template <int BM_, int BN_, int BK_, int WARPS_M_, int WARPS_N_, int STAGES_, bool PREFETCH_> struct TcCfg {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_;
  static constexpr bool PREFETCH = PREFETCH_;  // double-buffered fragments (see gemm_tc_kernel)
  static constexpr int THREADS = 32 * WARPS_M * WARPS_N;
  static constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;  // warp tile
  static constexpr int MI = WTM / 16, NI = WTN / 8;             // mma tiles per warp
  static constexpr int KS = BK / 16;                            // mma k-steps per k tile
  static constexpr size_t SMEM = size_t(STAGES) * (BM + BN) * BK * 2;
  static_assert(WTM % 16 == 0 && WTN % 16 == 0, "warp tile must be a multiple of 16x16");
  static_assert(BK == 32 || BK == 64, "the [rows][BK] swizzle covers 4 or 8 chunks a row");
  static_assert(KS % 2 == 0, "fragment double buffering pairs the k-steps of a tile");
  static_assert(STAGES >= 3, "the ring refills the slot read one tile earlier");
  static_assert(BM % 64 == 0 && BN % 64 == 0, "the [BK][rows] swizzle needs rows/8 to be a multiple of 8");
  static_assert((BM * BK / 8) % THREADS == 0 && (BN * BK / 8) % THREADS == 0, "whole chunks per thread");
};
// The tiles, named as in kCudaGemmTiles (cpp/kernel_api.h). "auto" uses the first two: the big one when
// it gives every SM at least one block, the small one otherwise (decode, small layers).
using Cfg128x128x32 = TcCfg<128, 128, 32, 2, 4, 4, false>;   // 8 warps of 64 x 32, 4 stages, 64 KB
using Cfg64x64x32 = TcCfg<64, 64, 32, 2, 2, 4, false>;       // 4 warps of 32 x 32, 4 stages, 32 KB
using Cfg128x128x64 = TcCfg<128, 128, 64, 2, 4, 3, false>;   // 3 stages, 96 KB
using Cfg128x128x32pf = TcCfg<128, 128, 32, 2, 4, 4, true>;  // the big tile with fragment prefetch
using Cfg128x128x64pf = TcCfg<128, 128, 64, 2, 4, 3, true>;
using Cfg128x256x32 = TcCfg<128, 256, 32, 2, 4, 3, false>;  // 8 warps of 64 x 64, 3 stages, 72 KB
// The tiles cudaGemmTile can force, in the order of their names in kCudaGemmTiles (after "auto").
using ForcedTiles =
    std::tuple<Cfg128x128x32, Cfg64x64x32, Cfg128x128x64, Cfg128x128x32pf, Cfg128x128x64pf, Cfg128x256x32>;

template <size_t... I> constexpr bool forced_tiles_named(std::index_sequence<I...>) {
  return sizeof...(I) + 1 + kNumWgmmaTiles == size_t(kNumCudaGemmTiles) &&
         (tile_named(kCudaGemmTiles[I + 1], std::tuple_element_t<I, ForcedTiles>::BM,
                     std::tuple_element_t<I, ForcedTiles>::BN, std::tuple_element_t<I, ForcedTiles>::BK,
                     std::tuple_element_t<I, ForcedTiles>::PREFETCH) &&
          ...);
}
static_assert(forced_tiles_named(std::make_index_sequence<std::tuple_size_v<ForcedTiles>>()),
              "ForcedTiles must match kCudaGemmTiles (cpp/kernel_api.h) one for one, before the wgmma tiles");

// Element offset, inside one stage of an operand tile, of the 16-byte chunk that starts at (row, k).
// KC ([ROWS][BK]): a row is BK / 8 chunks (4: 64 B, 8: 128 B). Physical chunk = c ^ (row / (8 / CPR)
//   mod CPR): for CPR 4, c ^ ((r >> 1) & 3), the slot within a 128-byte bank line is 4 * (r & 1) + ...;
//   for CPR 8, c ^ (r & 7). Either way ldmatrix's eight rows r..r+7 at one logical chunk hit eight
//   distinct 16-byte bank slots, and cp.async's eight consecutive chunks (2 rows or 1 row) do too.
// !KC ([BK][ROWS], ROWS/8 >= 8 chunks a row): ldmatrix.trans reads k rows k..k+7 at one logical chunk
//   c; physical chunk c ^ (k & 7) differs in its low three bits, i.e. in its bank slot, for all eight.
template <int ROWS, int BK, bool KC> __device__ __forceinline__ int smem_off(int row, int k) {
  if constexpr (KC) {
    constexpr int CPR = BK / 8;
    return row * BK + ((((k >> 3) ^ (row / (8 / CPR))) & (CPR - 1)) << 3);
  } else {
    return k * ROWS + (((row >> 3) ^ (k & 7)) << 3);
  }
}

// One 16 (rows) x 16 (k) ldmatrix.x4 at (row0, k0): r0 = rows 0-7/k 0-7, r1 = rows 8-15/k 0-7,
// r2 = rows 0-7/k 8-15, r3 = rows 8-15/k 8-15 (see mma.cuh).
template <int ROWS, int BK, bool KC, typename T>
__device__ __forceinline__ void ldsm_rows_k16(uint32_t (&r)[4], const T* s, int row0, int k0, int lane) {
  if constexpr (KC) {
    mma::ldsm_x4(r, s + smem_off<ROWS, BK, true>(row0 + (lane & 15), k0 + ((lane >> 4) << 3)));
  } else {
    mma::ldsm_x4_trans(
        r, s + smem_off<ROWS, BK, false>(row0 + (((lane >> 3) & 1) << 3), k0 + ((lane >> 4) << 3) + (lane & 7)));
  }
}

// Stage one ROWS x BK operand tile (rows row0.., depth k0..) of the matrix at g, whose element
// (row, k) lives at g[row * s_row + k * s_k], into the shared slot s. Out-of-range elements are zero.
// ALIGNED: 16-byte cp.async (KC: s_k == 1; !KC: s_row == 1; chunks never straddle an edge).
// Otherwise: element loads from any strides, KC layout.
template <int ROWS, int BK, int THREADS, bool KC, bool ALIGNED>
__device__ __forceinline__ void load_tile(uint16_t* s, const uint16_t* g, int row0, int rows, int k0, int K,
                                          int64_t s_row, int64_t s_k, int tid) {
  constexpr int kChunks = ROWS * BK / 8, CPR = BK / 8;
#pragma unroll
  for (int i = 0; i < kChunks / THREADS; i++) {
    const int c = tid + i * THREADS;
    if constexpr (ALIGNED && KC) {
      const int r = c / CPR, kc = (c % CPR) * 8;
      const int gr = row0 + r, gk = k0 + kc;
      const bool ok = gr < rows && gk < K;
      mma::cp_async16(s + smem_off<ROWS, BK, true>(r, kc), ok ? g + (int64_t)gr * s_row + gk : g, ok ? 16 : 0);
    } else if constexpr (ALIGNED) {
      const int k = c / (ROWS / 8), rc = (c % (ROWS / 8)) * 8;
      const int gr = row0 + rc, gk = k0 + k;
      const bool ok = gr < rows && gk < K;
      mma::cp_async16(s + smem_off<ROWS, BK, false>(rc, k), ok ? g + (int64_t)gk * s_k + gr : g, ok ? 16 : 0);
    } else {
      static_assert(KC, "the unaligned path stages K-contiguous tiles");
      const int r = c / CPR, kc = (c % CPR) * 8;
      const int gr = row0 + r;
      union {
        uint4 v;
        uint16_t h[8];
      } u;
#pragma unroll
      for (int e = 0; e < 8; e++) {
        const int gk = k0 + kc + e;
        u.h[e] = (gr < rows && gk < K) ? g[(int64_t)gr * s_row + (int64_t)gk * s_k] : uint16_t(0);
      }
      *reinterpret_cast<uint4*>(s + smem_off<ROWS, BK, true>(r, kc)) = u.v;
    }
  }
}

// PREFETCH: the main loop keeps two sets of mma fragments, and while the tensor cores work on k-step
// s the ldmatrix reads for step s + 1 are already issued (the asm statements are volatile, so the
// compiler keeps this order). The step after a tile's last is step 0 of the next tile, so the wait
// and barrier that publish tile kt + 1 sit at the last step of tile kt, before those fragments are
// read. The price is registers: ~175 instead of ~125 for the big tile, i.e. one block per SM, not two.
// Without PREFETCH each step reads its own fragments, and the wait and barrier open each tile.
template <typename T, typename Cfg, bool A_KC, bool B_KC, bool ALIGNED> __global__ void __launch_bounds__(Cfg::THREADS)
    gemm_tc_kernel(GemmParams p) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES, THREADS = Cfg::THREADS;
  constexpr int MI = Cfg::MI, NI = Cfg::NI, KS = Cfg::KS;
  constexpr bool PF = Cfg::PREFETCH;
  uint16_t* sA = reinterpret_cast<uint16_t*>(mma::dyn_smem);
  uint16_t* sB = sA + STAGES * BM * BK;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp % Cfg::WARPS_M, wn = warp / Cfg::WARPS_M;
  const int M = p.M, N = p.N, K = p.K;
  const BlockTile bt = block_tile<BM, BN>(p);
  const int m0 = bt.m0, n0 = bt.n0;
  const int64_t bz = bt.bz;
  const uint16_t *A = bt.A, *B = bt.B;

  // B is staged as an N x K operand: its "row" stride is sbn, its depth stride sbk.
  auto load_stage = [&](int stage, int kt) {
    load_tile<BM, BK, THREADS, A_KC, ALIGNED>(sA + stage * BM * BK, A, m0, M, kt * BK, K, p.sam, p.sak, tid);
    load_tile<BN, BK, THREADS, B_KC, ALIGNED>(sB + stage * BN * BK, B, n0, N, kt * BK, K, p.sbn, p.sbk, tid);
  };
  uint32_t af[PF ? 2 : 1][MI][4], bf[PF ? 2 : 1][NI][2];
  // The fragments of k-step ks of the tile in `stage` into set `buf`.
  auto load_frags = [&](int buf, int stage, int ks) {
    const uint16_t* a_s = sA + stage * BM * BK;
    const uint16_t* b_s = sB + stage * BN * BK;
#pragma unroll
    for (int i = 0; i < MI; i++) ldsm_rows_k16<BM, BK, A_KC>(af[buf][i], a_s, wm * Cfg::WTM + i * 16, ks * 16, lane);
#pragma unroll
    for (int j = 0; j < NI / 2; j++) {
      uint32_t r[4];
      ldsm_rows_k16<BN, BK, B_KC>(r, b_s, wn * Cfg::WTN + j * 16, ks * 16, lane);
      bf[buf][2 * j][0] = r[0];
      bf[buf][2 * j][1] = r[2];
      bf[buf][2 * j + 1][0] = r[1];
      bf[buf][2 * j + 1][1] = r[3];
    }
  };

  float acc[MI][NI][4];
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < NI; j++)
#pragma unroll
      for (int e = 0; e < 4; e++) acc[i][j][e] = 0.f;

  const int KT = (K + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < KT) load_stage(s, s);
    mma::cp_async_commit();  // always commit: group i <-> k tile i keeps the wait count exact
  }
  if constexpr (PF) {
    mma::cp_async_wait<STAGES - 2>();  // tile 0 has landed, for this thread ...
    __syncthreads();                   // ... and for everyone
    if (KT > 0) load_frags(0, 0, 0);
  }

  for (int kt = 0; kt < KT; kt++) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++) {
      if (ks == (PF ? KS - 1 : 0)) {
        // Publish tile kt + 1 (PF) or kt: the groups committed so far are tiles 0 .. kt + STAGES - 1
        // (PF) or 0 .. kt + STAGES - 2, so at most STAGES - 2 may still be in flight.
        mma::cp_async_wait<STAGES - 2>();
        __syncthreads();
      }
      if (ks == 0) {
        // Refill the slot of tile kt - 1. Every warp read its last fragment there (step KS - 2 of tile
        // kt - 1 with PF, KS - 1 without) before a barrier that all threads have passed: the one at
        // step KS - 1 of tile kt - 1 (PF) or the one just above.
        const int nk = kt + STAGES - 1;
        if (nk < KT) load_stage(nk % STAGES, nk);
        mma::cp_async_commit();
      }
      if constexpr (PF) {
        if (ks < KS - 1)
          load_frags((ks + 1) & 1, kt % STAGES, ks + 1);
        else if (kt + 1 < KT)
          load_frags(0, (kt + 1) % STAGES, 0);  // KS is even: step 0 of the next tile uses set 0
      } else {
        load_frags(0, kt % STAGES, ks);
      }
      const int buf = PF ? (ks & 1) : 0;
#pragma unroll
      for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NI; j++) mma::mma_16816<T>(acc[i][j], af[buf][i], bf[buf][j][0], bf[buf][j][1]);
    }
  }
  mma::cp_async_wait<0>();

  // Epilogue from registers: c0,c1 = (row g, cols 2t, 2t+1), c2,c3 = (row g+8, same cols).
  T* O = static_cast<T*>(p.out) + bz * (int64_t)M * N;
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
      for (int j = 0; j < NI; j++)
        store_pair(p, O, m0 + wm * Cfg::WTM + i * 16 + g + h * 8, n0 + wn * Cfg::WTN + j * 8 + 2 * t4, acc[i][j][2 * h],
                   acc[i][j][2 * h + 1]);
}

// ===================================================================== SIMT GEMM (f32/f64)
template <typename T, int BM, int BN, int TM, int TN> struct SimtCfg {
  static constexpr int BK = 8, TX = BN / TN, TY = BM / TM, THREADS = TX * TY;
  static constexpr int LDA = BM + 4, LDB = BN + 4;  // +4: the [k][m] stores of a k-inner A hit distinct banks
  static constexpr size_t SMEM = size_t(BK) * (LDA + LDB) * sizeof(acc_t<T>);
};

template <typename T, int BM, int BN, int TM, int TN> __global__ void __launch_bounds__((BM / TM) * (BN / TN))
    gemm_simt_kernel(GemmParams p) {
  using C = acc_t<T>;
  using Cfg = SimtCfg<T, BM, BN, TM, TN>;
  constexpr int BK = Cfg::BK, TX = Cfg::TX, TY = Cfg::TY, THREADS = Cfg::THREADS, LDA = Cfg::LDA, LDB = Cfg::LDB;
  C* As = reinterpret_cast<C*>(mma::dyn_smem);  // [BK][LDA]
  C* Bs = As + BK * LDA;                        // [BK][LDB]

  const int tid = threadIdx.x, tx = tid % TX, ty = tid / TX;
  const int M = p.M, N = p.N, K = p.K;
  int tm, tn;
  tile_coords(blockIdx.x, (M + BM - 1) / BM, (N + BN - 1) / BN, tm, tn);
  const int m0 = tm * BM, n0 = tn * BN;
  const int64_t bz = (int64_t)blockIdx.z + p.batch0;
  const T* A = static_cast<const T*>(p.a) + bz * p.sab;
  const T* B = static_cast<const T*>(p.b) + bz * p.sbb;
  // Walk the tile along whichever global dimension is contiguous, so the loads coalesce.
  const bool a_k_inner = p.sak == 1, b_n_inner = p.sbn == 1;

  C acc[TM][TN];
#pragma unroll
  for (int i = 0; i < TM; i++)
#pragma unroll
    for (int j = 0; j < TN; j++) acc[i][j] = C(0);

  for (int k0 = 0; k0 < K; k0 += BK) {
    for (int e = tid; e < BM * BK; e += THREADS) {
      const int m = a_k_inner ? e / BK : e % BM, k = a_k_inner ? e % BK : e / BM;
      const int gm = m0 + m, gk = k0 + k;
      As[k * LDA + m] = (gm < M && gk < K) ? gpu::to_acc<T>(A[gm * p.sam + gk * p.sak]) : C(0);
    }
    for (int e = tid; e < BN * BK; e += THREADS) {
      const int n = b_n_inner ? e % BN : e / BK, k = b_n_inner ? e / BN : e % BK;
      const int gn = n0 + n, gk = k0 + k;
      Bs[k * LDB + n] = (gn < N && gk < K) ? gpu::to_acc<T>(B[gk * p.sbk + gn * p.sbn]) : C(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < BK; k++) {
      C av[TM], bv[TN];
#pragma unroll
      for (int i = 0; i < TM; i++) av[i] = As[k * LDA + ty + i * TY];
#pragma unroll
      for (int j = 0; j < TN; j++) bv[j] = Bs[k * LDB + tx + j * TX];
#pragma unroll
      for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
    __syncthreads();
  }

  T* O = static_cast<T*>(p.out) + bz * (int64_t)M * N;
#pragma unroll
  for (int i = 0; i < TM; i++) {
    const int row = m0 + ty + i * TY;
    if (row >= M) continue;
#pragma unroll
    for (int j = 0; j < TN; j++) {
      const int col = n0 + tx + j * TX;
      if (col >= N) continue;
      T* o = O + (int64_t)row * N + col;
      *o = gpu::from_acc<T>(epilogue<T, C>(p, acc[i][j], col, o));
    }
  }
}

// ===================================================================== launchers
template <typename T> void run_tc(const KernelArgs& args, const GemmParams& p, int64_t Bt, bool force = true);

template <typename T, typename Cfg> void run_tc_cfg(const KernelArgs& args, const GemmParams& p, int64_t Bt) {
  const int64_t tiles = int64_t((p.M + Cfg::BM - 1) / Cfg::BM) * ((p.N + Cfg::BN - 1) / Cfg::BN);
  const Layouts l(p);
  const bool a_kc = l.a_kc, b_kc = l.b_kc;
  auto go = [&](auto kernel) { launch_batches(args, kernel, p, Bt, tiles, Cfg::THREADS, Cfg::SMEM); };
  if (l.aligned()) {
    if (a_kc && b_kc)
      go(gemm_tc_kernel<T, Cfg, true, true, true>);  // x @ W^T (nn.Linear)
    else if (a_kc)
      go(gemm_tc_kernel<T, Cfg, true, false, true>);  // x @ W
    else if (b_kc)
      go(gemm_tc_kernel<T, Cfg, false, true, true>);  // x^T @ W^T
    else
      go(gemm_tc_kernel<T, Cfg, false, false, true>);  // x^T @ W (weight grads)
  } else if constexpr (std::is_same_v<Cfg, Cfg128x128x32> || std::is_same_v<Cfg, Cfg64x64x32>) {
    go(gemm_tc_kernel<T, Cfg, true, true, false>);
  } else {
    run_tc<T>(args, p, Bt, false);  // a forced tile covers the 16-byte-aligned layouts; the rest as auto
  }
}

// Runs the tile cudaGemmTile forces (`tile` indexes kCudaGemmTiles); false for "auto".
template <typename T, size_t... I>
bool run_forced(int tile, const KernelArgs& args, const GemmParams& p, int64_t Bt, std::index_sequence<I...>) {
  return ((tile == int(I) + 1 ? (run_tc_cfg<T, std::tuple_element_t<I, ForcedTiles>>(args, p, Bt), true) : false) ||
          ...);
}

template <typename T> void run_tc(const KernelArgs& args, const GemmParams& p, int64_t Bt, bool force) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    if (force &&
        (run_forced<T>(cuda_gemm_tile(), args, p, Bt, std::make_index_sequence<std::tuple_size_v<ForcedTiles>>()) ||
         run_wgmma(cuda_gemm_tile(), args, p, Bt)))
      return;
  // auto: the big tile only when it still gives every SM at least one block.
  const int64_t big_tiles = int64_t((p.M + 127) / 128) * ((p.N + 127) / 128) * Bt;
  if (big_tiles >= gpu::num_sms())
    run_tc_cfg<T, Cfg128x128x32>(args, p, Bt);
  else
    run_tc_cfg<T, Cfg64x64x32>(args, p, Bt);
}

// ---------------------------------------------------------------- skinny: M <= 8, b's K stride 1
// x @ W^T for the few rows of a decode step (M = the sequences of a batch, 1 for one): one warp per output
// column n, i.e. per row of W, which is contiguous in k. A 64- or 128-row tile would leave all but M of
// its rows idle and, at N = 4096, put 64 blocks on a 132-SM GPU; here N = 4096 makes 512 blocks of 8
// warps, every weight is read once (16-byte loads where the layout allows: V elements a lane per step)
// and the M rows of a, read by every warp, stay in L1/L2. f32 (f64) sums, a warp-shuffle reduction and the
// epilogue of the other kernels.
constexpr int kSkinnyMaxM = 8, kSkinnyWarps = 8;

template <typename T, int V> __global__ void __launch_bounds__(32 * kSkinnyWarps) gemm_skinny_kernel(GemmParams p) {
  using C = gpu::acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int n = blockIdx.x * kSkinnyWarps + (threadIdx.x >> 5);
  if (n >= p.N) return;
  const int64_t bz = (int64_t)blockIdx.z + p.batch0;
  const T* A = static_cast<const T*>(p.a) + bz * p.sab;
  const T* W = static_cast<const T*>(p.b) + bz * p.sbb + (int64_t)n * p.sbn;
  C acc[kSkinnyMaxM];
#pragma unroll
  for (int m = 0; m < kSkinnyMaxM; m++) acc[m] = C(0);
  for (int k = lane * V; k < p.K; k += 32 * V) {
    T w[V];
    if constexpr (V > 1)  // V elements are 16 bytes, 16-byte aligned (checked by the launcher)
      *reinterpret_cast<uint4*>(w) = *reinterpret_cast<const uint4*>(W + k);
    else
      w[0] = W[k];
#pragma unroll
    for (int m = 0; m < kSkinnyMaxM; m++) {
      if (m >= p.M) break;
      T x[V];
      if constexpr (V > 1)
        *reinterpret_cast<uint4*>(x) = *reinterpret_cast<const uint4*>(A + m * p.sam + k);
      else
        x[0] = A[m * p.sam + (int64_t)k * p.sak];
#pragma unroll
      for (int j = 0; j < V; j++) acc[m] += gpu::to_acc<T>(w[j]) * gpu::to_acc<T>(x[j]);
    }
  }
  T* O = static_cast<T*>(p.out) + bz * (int64_t)p.M * p.N;
#pragma unroll
  for (int m = 0; m < kSkinnyMaxM; m++) {
    if (m >= p.M) break;
    C v = acc[m];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) O[(int64_t)m * p.N + n] = gpu::from_acc<T>(epilogue<T, C>(p, v, n, O + (int64_t)m * p.N + n));
  }
}

// The skinny kernel when M <= kSkinnyMaxM and b's K stride is 1; false otherwise. 16-byte loads when both
// operands' rows start 16-byte aligned and K fills whole vectors (a's K stride 1 too), else one element.
template <typename T> bool run_skinny(const KernelArgs& args, const GemmParams& p, int64_t Bt) {
  if (p.M > kSkinnyMaxM || p.sbk != 1) return false;
  constexpr int V = 16 / sizeof(T);
  const bool vec = p.sak == 1 && chunkable(p.a, p.K, p.sam, p.M, p.sab, V) && chunkable(p.b, p.K, p.sbn, p.N, p.sbb, V);
  const int64_t blocks = (p.N + kSkinnyWarps - 1) / kSkinnyWarps;
  if (vec)
    launch_batches(args, gemm_skinny_kernel<T, V>, p, Bt, blocks, 32 * kSkinnyWarps, 0);
  else
    launch_batches(args, gemm_skinny_kernel<T, 1>, p, Bt, blocks, 32 * kSkinnyWarps, 0);
  return true;
}

template <typename T, int BM, int BN, int TM, int TN>
void run_simt(const KernelArgs& args, const GemmParams& p, int64_t Bt) {
  using Cfg = SimtCfg<T, BM, BN, TM, TN>;
  const int64_t tiles = int64_t((p.M + BM - 1) / BM) * ((p.N + BN - 1) / BN);
  launch_batches(args, gemm_simt_kernel<T, BM, BN, TM, TN>, p, Bt, tiles, Cfg::THREADS, Cfg::SMEM);
}

void matmul_cuda(const KernelArgs& args) {
  const MatmulArgs P = parse_matmul(args, Device::CUDA);
  const TensorArg &out = *P.out, &a = *P.a, &b = *P.b;
  const TensorArg* bias = P.bias;
  const double beta = P.beta;
  const int64_t Bt = P.Bt, M = P.M, K = P.K, N = P.N;
  const int act = P.epilogue == MatmulEpilogue::Gelu       ? kActGelu
                  : P.epilogue == MatmulEpilogue::GeluTanh ? kActGeluTanh
                                                           : kActNone;
  if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) args.fail("M, N and K must each be below 2^31");
  if (Bt == 0 || M == 0 || N == 0) return;

  GemmParams p{};
  p.a = a.bytes();
  p.b = b.bytes();
  p.out = out.bytes();
  p.bias = bias ? bias->bytes() : nullptr;
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  // A size-1 dimension's stride is arbitrary; give it a harmless value so the layout tests see
  // only the strides that matter.
  p.sab = Bt == 1 ? 0 : a.strides[0];
  p.sam = M == 1 ? K : a.strides[1];
  p.sak = K == 1 ? 1 : a.strides[2];
  p.sbb = Bt == 1 ? 0 : b.strides[0];
  p.sbk = K == 1 ? N : b.strides[1];
  p.sbn = N == 1 ? 1 : b.strides[2];
  p.bias_stride = bias ? bias->strides[0] : 0;
  p.beta = beta;
  p.act = act;
  p.out_pairs = gpu::aligned_to(p.out, 4) && N % 2 == 0;

  switch (out.dtype) {
    case DType::BF16:
      // A forced tile (cudaGemmTile, bf16 only) asks for that kernel: the skinny path stands aside.
      if (!(cuda_gemm_tile() == 0 && run_skinny<__nv_bfloat16>(args, p, Bt))) run_tc<__nv_bfloat16>(args, p, Bt);
      break;
    case DType::F16:
      if (!run_skinny<__half>(args, p, Bt)) run_tc<__half>(args, p, Bt);
      break;
    case DType::F32:
      if (!run_skinny<float>(args, p, Bt)) run_simt<float, 128, 128, 8, 8>(args, p, Bt);
      break;
    case DType::F64:
      if (!run_skinny<double>(args, p, Bt)) run_simt<double, 64, 64, 4, 4>(args, p, Bt);
      break;
    default:
      args.fail(std::string("unsupported dtype ") + dtype_name(out.dtype));
  }
}

}  // namespace

REGISTER_KERNEL("matmul", Device::CUDA, matmul_cuda);

}  // namespace llava
