// matmul_sm90.cu — the bf16 GEMM on Hopper's warpgroup tensor-core instructions (wgmma, sm_90a), the path
// cudaGemmTile("wgmma-...") selects on an sm_90 GPU (H100/H200). Same contract and epilogue as the mma.sync
// kernel of matmul.cu, for bf16 operands that can be staged with 16-byte copies.
//
// Why a second kernel: on sm_90, mma.sync reaches only part of the tensor cores' rate; wgmma lets a
// warpgroup (4 warps) multiply a 64 x N x 16 slice straight from shared memory, asynchronously, with no
// ldmatrix traffic through registers. This kernel keeps the multistage structure of the Ampere one and
// changes the inner loop (see wgmma.cuh for the primitives and the shared-memory layouts):
//   * block tile BM x BN x 64, BM = 128 = two warpgroups of 64 rows; each warpgroup issues one
//     m64nBNk16 wgmma per 16 k over the whole BN width (accumulators: BN / 2 floats a thread).
//   * a STAGES-deep cp.async ring, every thread loading (no producer warps, no TMA): operand tiles are
//     stored as the 128-byte-swizzled atoms wgmma reads — K-major [rows][64] for an operand whose K is
//     contiguous, MN-major [rows / 64][64 k][64] for one whose M or N is contiguous (the instruction's
//     transpose flag), so all four layouts of a training step run without a transpose pass.
//   * pipeline, per k tile kt: wait for tile kt's copies, fence them into the async proxy, one
//     __syncthreads, refill the slot of tile kt - 2, issue tile kt's wgmmas, commit, and wait until at
//     most one group (tile kt's) is in flight. The barrier is what makes the refill safe: every thread
//     passed it after its wait at tile kt - 1, which retired its warpgroup's reads of tile kt - 2. So
//     tiles kt + 1 .. kt + STAGES - 2 are in flight while tile kt multiplies.
//   * grid swizzle and fused epilogue (bias, GELU, beta * out_old) as in matmul.cu, from the registers.
// Not (yet) here: TMA loads, producer/consumer warp specialisation, thread-block clusters; they are the
// next steps if the GPU benchmark shows the cp.async feed is the limit.
#include <tuple>
#include <utility>

#include "cuda_common.cuh"
#include "gemm_common.cuh"
#include "mma.cuh"
#include "wgmma.cuh"

namespace llava {
namespace gemm {
namespace {

template <int BN_, int STAGES_> struct WgCfg {
  static constexpr int BM = 128, BN = BN_, BK = 64, STAGES = STAGES_;
  static constexpr int THREADS = 128 * (BM / 64);             // one warpgroup per 64 rows
  static constexpr int A_STAGE = BM * BK, B_STAGE = BN * BK;  // elements
  // + 1 KB: the 128-byte-swizzle atoms must start on 1 KB boundaries (the base is aligned up in the kernel).
  static constexpr size_t SMEM = size_t(STAGES) * (A_STAGE + B_STAGE) * 2 + 1024;
  static_assert(BN % 64 == 0 && BN <= 256, "wgmma N is at most 256; the MN-major layout needs 64-row blocks");
  static_assert(STAGES >= 3, "tile kt - 2 is refilled while tile kt - 1 may still be read");
  static_assert((A_STAGE / 8) % THREADS == 0 && (B_STAGE / 8) % THREADS == 0, "whole chunks per thread");
  static_assert(SMEM <= 227 * 1024, "more shared memory than an sm_90 block can have");
};
using Wg128x128 = WgCfg<128, 6>;  // 32 KB a stage, 192 KB
using Wg128x256 = WgCfg<256, 4>;  // 48 KB a stage, 192 KB
// In the order of their names at the end of kCudaGemmTiles.
using WgmmaTiles = std::tuple<Wg128x128, Wg128x256>;
constexpr int kFirstWgmmaTile = kNumCudaGemmTiles - kNumWgmmaTiles;

constexpr bool wgmma_named(const char* s, int bm, int bn, int bk) {
  const char prefix[] = "wgmma-";
  for (int i = 0; i < 6; i++)
    if (s[i] != prefix[i]) return false;
  return tile_named(s + 6, bm, bn, bk, false);
}
template <size_t... I> constexpr bool wgmma_tiles_named(std::index_sequence<I...>) {
  return sizeof...(I) == size_t(kNumWgmmaTiles) &&
         (wgmma_named(kCudaGemmTiles[kFirstWgmmaTile + I], std::tuple_element_t<I, WgmmaTiles>::BM,
                      std::tuple_element_t<I, WgmmaTiles>::BN, std::tuple_element_t<I, WgmmaTiles>::BK) &&
          ...);
}
static_assert(wgmma_tiles_named(std::make_index_sequence<std::tuple_size_v<WgmmaTiles>>()),
              "WgmmaTiles must match the last kNumWgmmaTiles names of kCudaGemmTiles (cpp/kernel_api.h)");

// Element offset, in one stage of an operand tile, of the 16-byte chunk holding (row, k .. k + 7) (KC) or
// (row .. row + 7, k) (!KC, row a multiple of 8). The XOR is the 128-byte swizzle wgmma expects.
template <int BK, bool KC> __device__ __forceinline__ int wg_off(int row, int k) {
  if constexpr (KC)
    return row * BK + ((((k >> 3) ^ row) & 7) << 3);
  else
    return (row >> 6) * (BK * 64) + k * 64 + (((((row & 63) >> 3) ^ k) & 7) << 3);
}

// Stage the ROWS x BK tile (rows row0.., depth k0..) of the matrix at g, element (row, k) at
// g[row * s_row + k * s_k], into slot s with 16-byte cp.async; out-of-range chunks are zero-filled.
template <int ROWS, int BK, int THREADS, bool KC>
__device__ __forceinline__ void wg_load(uint16_t* s, const uint16_t* g, int row0, int rows, int k0, int K,
                                        int64_t s_row, int64_t s_k, int tid) {
#pragma unroll
  for (int i = 0; i < ROWS * BK / 8 / THREADS; i++) {
    const int c = tid + i * THREADS;
    if constexpr (KC) {
      const int r = c / (BK / 8), kc = (c % (BK / 8)) * 8;
      const int gr = row0 + r, gk = k0 + kc;
      const bool ok = gr < rows && gk < K;
      mma::cp_async16(s + wg_off<BK, true>(r, kc), ok ? g + (int64_t)gr * s_row + gk : g, ok ? 16 : 0);
    } else {
      const int k = c / (ROWS / 8), rc = (c % (ROWS / 8)) * 8;
      const int gr = row0 + rc, gk = k0 + k;
      const bool ok = gr < rows && gk < K;
      mma::cp_async16(s + wg_off<BK, false>(rc, k), ok ? g + (int64_t)gk * s_k + gr : g, ok ? 16 : 0);
    }
  }
}

// wgmma's matrix descriptor of a 128-byte-swizzled operand at shared address `addr` (bytes, 16-byte
// aligned); lbo and sbo in bytes (multiples of 16, below 256 KB). Fields as in wgmma.cuh.
__device__ __forceinline__ uint64_t desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr >> 4) & 0x3fff) | (uint64_t((lbo >> 4) & 0x3fff) << 16) |
         (uint64_t((sbo >> 4) & 0x3fff) << 32) | (uint64_t(1) << 62);
}

// Descriptor of the 64-or-more rows x 16 k slice starting at row block `rows0` (a multiple of 64) and k
// step ks of the operand tile at shared address `tile` (see wgmma.cuh for the two layouts).
template <int BK, bool KC> __device__ __forceinline__ uint64_t wg_desc(uint32_t tile, int rows0, int ks) {
  if constexpr (KC)
    return desc_sw128(tile + rows0 * BK * 2 + ks * 32, 16, 1024);
  else
    return desc_sw128(tile + (rows0 / 64) * BK * 128 + ks * 2048, BK * 128, 1024);
}

template <typename Cfg, bool A_KC, bool B_KC> __global__ void __launch_bounds__(Cfg::THREADS, 1)
    gemm_wgmma_kernel(GemmParams p) {
  constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES, THREADS = Cfg::THREADS;
  const uint32_t base0 = mma::smem_u32(mma::dyn_smem);
  const uint32_t pad = (1024 - (base0 & 1023)) & 1023;
  uint16_t* sA = reinterpret_cast<uint16_t*>(mma::dyn_smem + pad);
  uint16_t* sB = sA + STAGES * Cfg::A_STAGE;
  const uint32_t sA_u32 = base0 + pad, sB_u32 = sA_u32 + STAGES * Cfg::A_STAGE * 2;

  const int tid = threadIdx.x, wg = tid / 128, lane = tid & 31, warp = (tid & 127) >> 5;
  const int M = p.M, N = p.N, K = p.K;
  const BlockTile bt = block_tile<BM, BN>(p);
  const int m0 = bt.m0, n0 = bt.n0;
  const int64_t bz = bt.bz;
  const uint16_t *A = bt.A, *B = bt.B;
  auto load_stage = [&](int stage, int kt) {
    wg_load<BM, BK, THREADS, A_KC>(sA + stage * Cfg::A_STAGE, A, m0, M, kt * BK, K, p.sam, p.sak, tid);
    wg_load<BN, BK, THREADS, B_KC>(sB + stage * Cfg::B_STAGE, B, n0, N, kt * BK, K, p.sbn, p.sbk, tid);
  };

  float acc[BN / 2];
#pragma unroll
  for (int i = 0; i < BN / 2; i++) acc[i] = 0.f;

  const int KT = (K + BK - 1) / BK;
#pragma unroll
  for (int s = 0; s < STAGES - 2; s++) {
    if (s < KT) load_stage(s, s);
    mma::cp_async_commit();  // always commit: group i <-> k tile i keeps the wait count exact
  }
  for (int kt = 0; kt < KT; kt++) {
    // Groups committed so far: tiles 0 .. kt + STAGES - 3, so at most STAGES - 3 may still be in flight.
    mma::cp_async_wait<STAGES - 3>();
    wgmma::fence_proxy_async();  // this thread's copies of tile kt, visible to the async proxy ...
    __syncthreads();             // ... for every thread's; and every warpgroup is done with tile kt - 2
    const int nk = kt + STAGES - 2;
    if (nk < KT) load_stage(nk % STAGES, nk);
    mma::cp_async_commit();

    const int stage = kt % STAGES;
    const uint32_t a_t = sA_u32 + stage * Cfg::A_STAGE * 2, b_t = sB_u32 + stage * Cfg::B_STAGE * 2;
    wgmma::fence_regs(acc);
    wgmma::fence();
#pragma unroll
    for (int ks = 0; ks < BK / 16; ks++)
      wgmma::Wgmma<BN>::template run<A_KC ? 0 : 1, B_KC ? 0 : 1>(acc, wg_desc<BK, A_KC>(a_t, wg * 64, ks),
                                                                 wg_desc<BK, B_KC>(b_t, 0, ks));
    wgmma::commit();
    wgmma::wait<1>();
    wgmma::fence_regs(acc);
  }
  wgmma::wait<0>();
  wgmma::fence_regs(acc);
  mma::cp_async_wait<0>();

  // Epilogue: d[4j + 2h + e] = (row 16 warp + g + 8h, column 8j + 2t + e) of this warpgroup's 64 rows.
  __nv_bfloat16* O = static_cast<__nv_bfloat16*>(p.out) + bz * (int64_t)M * N;
  const int g = lane >> 2, t4 = lane & 3, row0 = m0 + wg * 64 + warp * 16 + g;
#pragma unroll
  for (int j = 0; j < BN / 8; j++)
#pragma unroll
    for (int h = 0; h < 2; h++)
      store_pair(p, O, row0 + 8 * h, n0 + 8 * j + 2 * t4, acc[4 * j + 2 * h], acc[4 * j + 2 * h + 1]);
}

template <typename Cfg> void run_cfg(const KernelArgs& args, const GemmParams& p, int64_t Bt, const Layouts& l) {
  const int64_t tiles = int64_t((p.M + Cfg::BM - 1) / Cfg::BM) * ((p.N + Cfg::BN - 1) / Cfg::BN);
  auto go = [&](auto kernel) { launch_batches(args, kernel, p, Bt, tiles, Cfg::THREADS, Cfg::SMEM); };
  if (l.a_kc && l.b_kc)
    go(gemm_wgmma_kernel<Cfg, true, true>);  // x @ W^T (nn.Linear)
  else if (l.a_kc)
    go(gemm_wgmma_kernel<Cfg, true, false>);  // x @ W
  else if (l.b_kc)
    go(gemm_wgmma_kernel<Cfg, false, true>);  // x^T @ W^T
  else
    go(gemm_wgmma_kernel<Cfg, false, false>);  // x^T @ W (weight grads)
}

template <size_t... I> void run_index(int i, const KernelArgs& args, const GemmParams& p, int64_t Bt, const Layouts& l,
                                      std::index_sequence<I...>) {
  ((i == int(I) ? run_cfg<std::tuple_element_t<I, WgmmaTiles>>(args, p, Bt, l) : void()), ...);
}

}  // namespace

bool run_wgmma(int tile, const KernelArgs& args, const GemmParams& p, int64_t Bt) {
  if (tile < kFirstWgmmaTile || gpu::sm_version() != 90) return false;
  const Layouts l(p);
  if (!l.aligned()) return false;
  run_index(tile - kFirstWgmmaTile, args, p, Bt, l, std::make_index_sequence<std::tuple_size_v<WgmmaTiles>>());
  return true;
}

}  // namespace gemm
}  // namespace llava
