// attention_fwd.cu — `attention_fwd` on CUDA:
//   out[B,H,T,D] = softmax(scale * q k^T, masked) v,  lse[B,H,T] = log-sum-exp of the scaled,
//   masked scores (natural log; -inf and out = 0 for a row that sees no key). A NaN among a row's
//   visible scores makes that row's out and lse NaN (as softmax of the composite would; the CPU agrees);
//   masked-out NaN scores are ignored.
// q[B,H,T,D], k/v[B,Hkv,S,D] (grouped-query: head h reads kv head h / (H/Hkv)), optional bool mask
// view [B,H,T,S], causal bottom-right aligned (key j visible to query i iff j <= i + S - T).
//
// bf16/f16 with D in {64, 80, 128} and 16-byte aligned rows: FlashAttention-2 on tensor cores.
//   * one block = one (query tile of BR = 16 * warps rows, head, batch); each warp owns 16 query rows
//     end to end, so the softmax needs no shared memory and no block-wide reductions. 8 warps (BR 128)
//     when that still gives every SM a block, else 4 (BR 64).
//   * the Q tile goes to registers once (ldmatrix); K/V tiles of 64 keys stream through shared memory
//     with cp.async in FA2's order: V_j is fetched while S = Q K_j^T and the softmax run, K_{j+1} while
//     O += P V_j runs; two barriers per key tile, one K and one V buffer (70 KB at D = 128, BR = 128).
//   * online softmax in registers on log2-scaled scores (exp2f; scale * log2 e folded into one
//     multiply); the running max of a row is shared by its quad with two shuffles. A row whose
//     maximum is still -inf uses 0 as its reference, so exp2(-inf - ref) = 0 and no NaN appears
//     from masking; a NaN score (fmaxf skips it in the max) turns its exp2, hence the row sum, NaN.
//   * P never leaves registers: the S accumulator of one 16x16 key step is exactly the A fragment of
//     the P V mma once packed to 16 bits (mma.cuh). V fragments come from ldmatrix.trans.
//   * causal: key tiles past the last visible key of the tile's last row are never loaded; masking
//     code runs only on tiles that straddle the diagonal or the end of S, or when a mask is given.
//     Blocks are issued heaviest (latest query tile) first.
//   * split-KV (flash-decoding) when B * H * query tiles would leave SMs idle (decode, T = 1, long
//     S): blockIdx.z also picks a range of key tiles, each block writes an unnormalised partial O with
//     its row max and sum to f32 scratch, and a combine kernel rescales and sums the partials.
// Everything else (f32, f64, other D, unaligned views): the same loop on CUDA cores (attention_simt.cuh):
// 32 query rows x 32 keys a tile, K/V tiles in shared memory in the accumulator type (f32, f64 for
// f64), D in chunks of 32 or 64 columns.
#include "attention_simt.cuh"

namespace llava {
namespace attn {
namespace {

template <int D, int NW> struct FwdCfg {
  static constexpr int BR = 16 * NW, BC = 64, LDS = D + 8, THREADS = 32 * NW;
  static constexpr size_t SMEM = size_t(BR + 2 * BC) * LDS * 2;
};

// Split-KV scratch: partial rows [nsplit][B][H][T] (o: x D), null when nsplit == 1.
struct SplitOut {
  float* o;
  float* m;  // row max of the log2-scaled scores
  float* l;  // row sum of exp2(score - m)
  int nsplit;
};

__device__ __forceinline__ void store_lse(const AttnParams& p, int64_t row, float v) {
  if (p.lse_f64)
    static_cast<double*>(p.lse)[row] = v;
  else
    static_cast<float*>(p.lse)[row] = v;
}

template <typename T, int D, int NW> __global__ void __launch_bounds__(NW * 32)
    attention_fwd_tc_kernel(AttnParams p, SplitOut so) {
  using Cfg = FwdCfg<D, NW>;
  constexpr int BR = Cfg::BR, BC = Cfg::BC, LDS = Cfg::LDS, THREADS = Cfg::THREADS;
  uint16_t* sQ = reinterpret_cast<uint16_t*>(mma::dyn_smem);
  uint16_t* sK = sQ + BR * LDS;
  uint16_t* sV = sK + BC * LDS;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int qt = gridDim.x - 1 - blockIdx.x;  // latest (for causal: heaviest) query tiles first
  const int h = blockIdx.y, b = blockIdx.z / so.nsplit, split = blockIdx.z % so.nsplit;
  const int q0 = qt * BR, hk = h / p.G;
  const uint16_t* Qg = static_cast<const uint16_t*>(p.q) + b * p.q_s[0] + h * p.q_s[1];
  const uint16_t* Kg = static_cast<const uint16_t*>(p.k) + b * p.k_s[0] + hk * p.k_s[1];
  const uint16_t* Vg = static_cast<const uint16_t*>(p.v) + b * p.v_s[0] + hk * p.v_s[1];

  // Key tiles this block visits: all up to the last key the tile's last row can see, cut into
  // nsplit equal ranges for split-KV.
  const int kv_end = p.causal ? min(p.S, q0 + BR + p.S - p.T) : p.S;
  const int n_all = kv_end > 0 ? (kv_end + BC - 1) / BC : 0;
  const int per = (n_all + so.nsplit - 1) / so.nsplit;
  const int t_begin = min(split * per, n_all), t_end = min(t_begin + per, n_all);

  float o[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) o[i][e] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  uint32_t qf[D / 16][4];

  if (t_begin < t_end) {
    load_rows_async<BR, D, THREADS>(sQ, Qg, p.q_s[2], q0, p.T, tid);
    load_rows_async<BC, D, THREADS>(sK, Kg, p.k_s[2], t_begin * BC, p.S, tid);
    mma::cp_async_commit();
  }
  for (int j = t_begin; j < t_end; j++) {
    const int k0 = j * BC;
    mma::cp_async_wait<0>();  // K_j (and Q) landed for this thread ...
    __syncthreads();          // ... for all threads; and every warp is done reading V_{j-1}
    load_rows_async<BC, D, THREADS>(sV, Vg, p.v_s[2], k0, p.S, tid);
    mma::cp_async_commit();
    if (j == t_begin) {
#pragma unroll
      for (int ks = 0; ks < D / 16; ks++) ldsm_k(qf[ks], sQ, LDS, warp * 16, ks * 16, lane);
    }

    // S = Q K_j^T: 16 rows x 64 keys per warp.
    float s[BC / 8][4];
#pragma unroll
    for (int i = 0; i < BC / 8; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) s[i][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
#pragma unroll
      for (int jp = 0; jp < BC / 16; jp++) {
        uint32_t r[4];
        ldsm_k(r, sK, LDS, jp * 16, ks * 16, lane);
        mma::mma_16816<T>(s[2 * jp], qf[ks], r[0], r[2]);
        mma::mma_16816<T>(s[2 * jp + 1], qf[ks], r[1], r[3]);
      }
    }

    // Scale into log2 units; hide invisible keys. The first row of the tile (q0) has the tightest
    // causal limit, so a tile whose last key it can see needs no causal masking at all.
    const bool need_mask = tile_needs_mask(p, q0, k0, BC);
#pragma unroll
    for (int nt = 0; nt < BC / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float x = s[nt][e] * p.scale_log2;
        if (need_mask) {
          const int row = q0 + warp * 16 + g + (e >> 1) * 8, col = k0 + nt * 8 + 2 * t4 + (e & 1);
          if (col >= p.S || row >= p.T || !visible(p, b, h, row, col)) x = -INFINITY;
        }
        s[nt][e] = x;
      }
    }

    // Online softmax: rows g (r = 0) and g + 8 (r = 1) of this warp's 16.
#pragma unroll
    for (int r = 0; r < 2; r++) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < BC / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      const float m_new = fmaxf(m[r], quad_max(mx));
      const float ref = m_new == -INFINITY ? 0.f : m_new;
      const float corr = exp2f(m[r] - ref);  // 0 while the row had nothing visible
      m[r] = m_new;
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < BC / 8; nt++) {
        const float p0 = exp2f(s[nt][2 * r] - ref), p1 = exp2f(s[nt][2 * r + 1] - ref);
        s[nt][2 * r] = p0;
        s[nt][2 * r + 1] = p1;
        sum += p0 + p1;
      }
      l[r] = l[r] * corr + sum;  // per-thread partial; the quad sums it once at the end
#pragma unroll
      for (int dt = 0; dt < D / 8; dt++) {
        o[dt][2 * r] *= corr;
        o[dt][2 * r + 1] *= corr;
      }
    }

    mma::cp_async_wait<0>();  // V_j landed ...
    __syncthreads();          // ... everywhere, and every warp is done reading K_j
    if (j + 1 < t_end) {
      load_rows_async<BC, D, THREADS>(sK, Kg, p.k_s[2], k0 + BC, p.S, tid);
      mma::cp_async_commit();
    }

    // O += P V_j, P straight from the S registers.
#pragma unroll
    for (int kk = 0; kk < BC / 16; kk++) {
      uint32_t a[4];
      a[0] = mma::pack2<T>(s[2 * kk][0], s[2 * kk][1]);
      a[1] = mma::pack2<T>(s[2 * kk][2], s[2 * kk][3]);
      a[2] = mma::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = mma::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t r[4];
        ldsm_t(r, sV, LDS, dp * 16, kk * 16, lane);
        mma::mma_16816<T>(o[2 * dp], a, r[0], r[2]);
        mma::mma_16816<T>(o[2 * dp + 1], a, r[1], r[3]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; r++) {
    l[r] = quad_sum(l[r]);
    const int row = q0 + warp * 16 + g + r * 8;
    if (row >= p.T) continue;
    const int64_t bhr = ((int64_t)b * p.H + h) * p.T + row;
    if (so.nsplit == 1) {
      const float inv = l[r] == 0.f ? 0.f : 1.f / l[r];  // NaN l (a NaN score): NaN row
      T* orow = static_cast<T*>(p.out) + bhr * D;
#pragma unroll
      for (int dt = 0; dt < D / 8; dt++)
        *reinterpret_cast<uint32_t*>(orow + dt * 8 + 2 * t4) =
            mma::pack2<T>(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
      if (t4 == 0) store_lse(p, bhr, l[r] == 0.f ? -INFINITY : m[r] * kLn2 + logf(l[r]));
    } else {
      const int64_t prow = (int64_t)split * p.B * p.H * p.T + bhr;
      float* orow = so.o + prow * D;
#pragma unroll
      for (int dt = 0; dt < D / 8; dt++)
        *reinterpret_cast<float2*>(orow + dt * 8 + 2 * t4) = make_float2(o[dt][2 * r], o[dt][2 * r + 1]);
      if (t4 == 0) {
        so.m[prow] = m[r];
        so.l[prow] = l[r];
      }
    }
  }
}

// Split-KV combine: one warp per (b, h, t) row.
template <typename T> __global__ void __launch_bounds__(128) attention_fwd_combine_kernel(AttnParams p, SplitOut so) {
  const int64_t rows = (int64_t)p.B * p.H * p.T;
  const int64_t row = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float M = -INFINITY;
  for (int s = 0; s < so.nsplit; s++) M = fmaxf(M, so.m[s * rows + row]);
  T* orow = static_cast<T*>(p.out) + row * p.D;
  if (M == -INFINITY) {  // no split saw a finite score: each l is 0 (nothing visible) or NaN (NaN scores)
    float z = 0.f;
    for (int s = 0; s < so.nsplit; s++) z += so.l[s * rows + row];
    for (int d = lane; d < p.D; d += 32) orow[d] = gpu::from_acc<T>(z);
    if (lane == 0) store_lse(p, row, z == 0.f ? -INFINITY : z);
    return;
  }
  float L = 0.f;
  for (int s = 0; s < so.nsplit; s++) L += so.l[s * rows + row] * exp2f(so.m[s * rows + row] - M);
  const float inv = 1.f / L;  // L >= 1: the split holding the max contributes exp2(0)
  for (int d = lane; d < p.D; d += 32) {
    float acc = 0.f;
    for (int s = 0; s < so.nsplit; s++) acc += so.o[(s * rows + row) * p.D + d] * exp2f(so.m[s * rows + row] - M);
    orow[d] = gpu::from_acc<T>(acc * inv);
  }
  if (lane == 0) store_lse(p, row, M * kLn2 + logf(L));
}

// ------------------------------------------------------------------ launchers
template <typename T, int D, int NW> void run_tc(const KernelArgs& a, AttnParams p) {
  using Cfg = FwdCfg<D, NW>;
  const int sms = gpu::num_sms();
  const int qtiles = (p.T + Cfg::BR - 1) / Cfg::BR, ktiles = (p.S + Cfg::BC - 1) / Cfg::BC;
  const int64_t blocks = (int64_t)p.B * p.H * qtiles;
  SplitOut so{nullptr, nullptr, nullptr, 1};
  if (blocks < sms && ktiles >= 4) {
    int64_t ns = std::min<int64_t>((2 * sms + blocks - 1) / blocks, (ktiles + 1) / 2);
    ns = std::min<int64_t>(ns, 65535 / p.B);
    so.nsplit = (int)std::max<int64_t>(1, ns);
  }
  const size_t part_rows = (size_t)so.nsplit * p.B * p.H * p.T;
  gpu::Scratch scratch(so.nsplit > 1 ? part_rows * (p.D + 2) * sizeof(float) : 0);
  if (so.nsplit > 1) {
    const size_t rows = part_rows;
    so.o = scratch.as<float>();
    so.m = so.o + rows * p.D;
    so.l = so.m + rows;
  }
  const dim3 grid(qtiles, p.H, p.B * so.nsplit);
  gpu::launch(attention_fwd_tc_kernel<T, D, NW>, grid, dim3(Cfg::THREADS), Cfg::SMEM, gpu::stream(), p, so);
  gpu::check_launch(a);
  if (so.nsplit > 1) {
    const int64_t rows = (int64_t)p.B * p.H * p.T;
    gpu::launch(attention_fwd_combine_kernel<T>, dim3((unsigned)((rows + 3) / 4)), dim3(128), 0, gpu::stream(), p, so);
    gpu::check_launch(a);
  }
}

template <typename T, int D> void run_tc_d(const KernelArgs& a, const AttnParams& p) {
  // 8 warps (BR 128) halve the K/V traffic per query row, but only when blocks still cover the SMs.
  const int64_t blocks8 = (int64_t)p.B * p.H * ((p.T + 127) / 128);
  if (blocks8 >= gpu::num_sms())
    run_tc<T, D, 8>(a, p);
  else
    run_tc<T, D, 4>(a, p);
}

template <typename T, int NC> void run_simt(const KernelArgs& a, const AttnParams& p) {
  using Cfg = SimtCfg<NC>;
  const dim3 grid((unsigned)((p.T + Cfg::BR - 1) / Cfg::BR * Cfg::chunks(p.D)), p.H, p.B);
  const size_t smem = size_t(Cfg::FWD_SMEM) * sizeof(acc_t<T>);
  gpu::launch(attention_fwd_simt_kernel<T, NC>, grid, dim3(Cfg::THREADS), smem, gpu::stream(), p);
  gpu::check_launch(a);
}

template <typename T> void run_typed(const KernelArgs& a, const AttnParams& p, bool tc_ok) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
    if (tc_ok) {
      switch (p.D) {
        case 64:
          return run_tc_d<T, 64>(a, p);
        case 80:
          return run_tc_d<T, 80>(a, p);
        case 128:
          return run_tc_d<T, 128>(a, p);
        default:
          break;
      }
    }
  }
  if (p.D <= 32)
    run_simt<T, 4>(a, p);
  else
    run_simt<T, 8>(a, p);
}

// attention_fwd(out, lse, q, k, v, mask?, causal, scale)
void attention_fwd_cuda(const KernelArgs& a) {
  const TensorArg &out = a.tensor(0), &lse = a.tensor(1);
  const Inputs in = check_inputs(a, 2, 5, 6);
  a.check_same_dtype(out, *in.q, "out");
  a.check_contiguous(out, "out");
  a.check_shape(out, {in.B, in.H, in.T, in.D}, "out");
  if (out.device() != Device::CUDA) a.fail("out must be on the CUDA device");
  check_lse(a, lse, in);
  check_no_overlaps(a, {&out, &lse}, {in.q, in.k, in.v, in.mask});
  if (in.B * in.H * in.T == 0) return;
  if (in.D > 1024) a.fail("head dim D above 1024 is not supported on CUDA");
  AttnParams p = make_params(in, lse);
  p.out = out.bytes();
  const bool tc_ok = rows_chunkable(p.q, p.q_s) && rows_chunkable(p.k, p.k_s) && rows_chunkable(p.v, p.v_s) &&
                     gpu::aligned_to(p.out, 4);
  GPU_DISPATCH_FLOAT(a, in.q->dtype, T, run_typed<T>(a, p, tc_ok));
}

}  // namespace
}  // namespace attn

REGISTER_KERNEL("attention_fwd", Device::CUDA, attn::attention_fwd_cuda);

}  // namespace llava
