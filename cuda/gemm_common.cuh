// gemm_common.cuh — what the GEMM kernels of matmul.cu (mma.sync, SIMT) and matmul_sm90.cu (wgmma) share:
// the launch parameters, the fused epilogue, the block order, the 16-byte staging test and the batched
// launcher.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda_common.cuh"
#include "mma.cuh"

namespace llava {
namespace gemm {

enum Act : int { kActNone = 0, kActGelu = 1, kActGeluTanh = 2 };

struct GemmParams {
  const void* a;
  const void* b;
  void* out;
  const void* bias;  // null = none
  int M, N, K;
  int64_t sab, sam, sak;  // a strides: batch, row (M), depth (K)
  int64_t sbb, sbk, sbn;  // b strides: batch, depth (K), column (N)
  int64_t bias_stride;
  double beta;  // 0 = out is not read
  int act;
  int batch0;      // first batch of this launch (batches run in chunks of 65535 on gridDim.z)
  bool out_pairs;  // out is 4-byte aligned and N even: store two 16-bit values at once
};

__device__ __forceinline__ float erf_(float x) { return erff(x); }
__device__ __forceinline__ double erf_(double x) { return erf(x); }
__device__ __forceinline__ float tanh_(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_(double x) { return tanh(x); }

// The epilogue in the compute type C: act(acc + bias) + beta * old.
template <typename T, typename C>
__device__ __forceinline__ C epilogue(const GemmParams& p, C v, int col, const T* old) {
  if (p.bias) v += gpu::to_acc<T>(static_cast<const T*>(p.bias)[(int64_t)col * p.bias_stride]);
  if (p.act == kActGelu) {
    v = C(0.5) * v * (C(1) + erf_(v * C(0.70710678118654752440)));
  } else if (p.act == kActGeluTanh) {
    const C k0 = C(0.79788456080286535588), k1 = C(0.044715);
    v = C(0.5) * v * (C(1) + tanh_(k0 * (v + k1 * v * v * v)));
  }
  if (p.beta != 0.0) v += C(p.beta) * gpu::to_acc<T>(*old);
  return v;
}

// Stores the f32 accumulators of out[row][col] and out[row][col + 1] (a tensor-core fragment pair)
// through the epilogue; rows and columns past the edge are skipped.
template <typename T>
__device__ __forceinline__ void store_pair(const GemmParams& p, T* O, int row, int col, float a0, float a1) {
  if (row >= p.M || col >= p.N) return;
  T* orow = O + (int64_t)row * p.N;
  const float v0 = epilogue<T, float>(p, a0, col, orow + col);
  if (p.out_pairs) {  // N even, so col + 1 < N too
    const float v1 = epilogue<T, float>(p, a1, col + 1, orow + col + 1);
    *reinterpret_cast<uint32_t*>(orow + col) = mma::pack2<T>(v0, v1);
  } else {
    orow[col] = gpu::from_acc<T>(v0);
    if (col + 1 < p.N) orow[col + 1] = gpu::from_acc<T>(epilogue<T, float>(p, a1, col + 1, orow + col + 1));
  }
}

// Block tile -> (m tile, n tile) in groups of 8 M-tiles (L2 reuse of the shared B columns).
__device__ __forceinline__ void tile_coords(int pid, int tiles_m, int tiles_n, int& tm, int& tn) {
  constexpr int kGroup = 8;
  const int per_group = kGroup * tiles_n;
  const int first_m = (pid / per_group) * kGroup;
  const int gm = min(tiles_m - first_m, kGroup);
  const int r = pid % per_group;
  tm = first_m + r % gm;
  tn = r / gm;
}

// Where a block of a 16-bit GEMM works: its tile's first row and column, its batch, and that batch's
// operands.
struct BlockTile {
  int m0, n0;
  int64_t bz;
  const uint16_t* A;
  const uint16_t* B;
};
template <int BM, int BN> __device__ __forceinline__ BlockTile block_tile(const GemmParams& p) {
  int tm, tn;
  tile_coords(blockIdx.x, (p.M + BM - 1) / BM, (p.N + BN - 1) / BN, tm, tn);
  const int64_t bz = (int64_t)blockIdx.z + p.batch0;
  return {tm * BM, tn * BN, bz, static_cast<const uint16_t*>(p.a) + bz * p.sab,
          static_cast<const uint16_t*>(p.b) + bz * p.sbb};
}

// Can an operand with `rows` x K extent be staged with 16-byte copies? `inner` = its unit-stride
// extent (must be a multiple of `per16`, the elements in 16 bytes: 8 for the 16-bit types), `lead` = the
// other stride (must keep row starts 16-byte aligned, irrelevant when that dimension has extent 1),
// `batch` = batch stride.
inline bool chunkable(const void* base, int64_t inner_extent, int64_t lead, int64_t lead_extent, int64_t batch,
                      int per16 = 8) {
  return gpu::aligned_to(base, 16) && inner_extent % per16 == 0 && (lead_extent == 1 || lead % per16 == 0) &&
         batch % per16 == 0;
}

// The operand layouts a 16-byte-staged kernel can take: K contiguous (kc) or M / N contiguous (mc, nc).
struct Layouts {
  bool a_kc, a_mc, b_kc, b_nc;
  explicit Layouts(const GemmParams& p)
      : a_kc(p.sak == 1 && chunkable(p.a, p.K, p.sam, p.M, p.sab)),
        a_mc(p.sam == 1 && chunkable(p.a, p.M, p.sak, p.K, p.sab)),
        b_kc(p.sbk == 1 && chunkable(p.b, p.K, p.sbn, p.N, p.sbb)),
        b_nc(p.sbn == 1 && chunkable(p.b, p.N, p.sbk, p.K, p.sbb)) {}
  bool aligned() const { return (a_kc || a_mc) && (b_kc || b_nc); }
};

// Launches `kernel` over `tiles` blocks for every batch (gridDim.z, chunks of 65535).
template <typename Kernel> void launch_batches(const KernelArgs& args, Kernel kernel, GemmParams p, int64_t Bt,
                                               int64_t tiles, int threads, size_t smem) {
  if (tiles > INT32_MAX) args.fail("problem too large for the CUDA grid");
  for (int64_t b0 = 0; b0 < Bt; b0 += 65535) {
    p.batch0 = static_cast<int>(b0);
    const dim3 grid(static_cast<unsigned>(tiles), 1, static_cast<unsigned>(std::min<int64_t>(65535, Bt - b0)));
    gpu::launch(kernel, grid, dim3(threads), smem, gpu::stream(), p);
    gpu::check_launch(args);
  }
}

// Does the name "BMxBNxBK" (with "-pf" for fragment prefetch) describe this tile? The tile lists of
// matmul.cu and matmul_sm90.cu are checked against kCudaGemmTiles with it at compile time.
constexpr bool tile_named(const char* s, int bm, int bn, int bk, bool pf) {
  int v[3] = {0, 0, 0}, i = 0;
  for (; *s && *s != '-'; s++) {
    if (*s == 'x') {
      if (++i > 2) return false;
    } else if (*s >= '0' && *s <= '9') {
      v[i] = v[i] * 10 + (*s - '0');
    } else {
      return false;
    }
  }
  return i == 2 && v[0] == bm && v[1] == bn && v[2] == bk && (*s == '-') == pf;
}

// The last kNumWgmmaTiles names of kCudaGemmTiles are the wgmma GEMM's tiles ("wgmma-BMxBNxBK").
constexpr int kNumWgmmaTiles = 2;

// The wgmma GEMM (matmul_sm90.cu) for bf16 when `tile` (an index into kCudaGemmTiles) names one of its
// tiles, the device is sm_90 and both operands can be staged with 16-byte copies; false otherwise (the
// caller then runs its own kernels).
bool run_wgmma(int tile, const KernelArgs& args, const GemmParams& p, int64_t Bt);

}  // namespace gemm
}  // namespace llava
