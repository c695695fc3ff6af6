// attention_bwd.cu — `attention_bwd` on CUDA: dq, dk, dv from q, k, v, out, dout and the forward's
// lse (see attention_fwd.cu for shapes, masking and the grouped-query rule). dk/dv are shaped like
// k/v and sum over the G query heads that share a kv head. Rows that saw no key (lse = -inf) get
// zero gradients.
//
// bf16/f16 with D in {64, 80, 128} and 16-byte aligned rows: FlashAttention-2's backward.
//   1. delta = rowsum(dO * O) (f32), one warp per row.
//   2. one block = one tile of BC = 64 keys of one kv head (4 warps, warp w owns keys 16w..16w+15)
//      that loops over every (query head of the group, query tile of BR rows) that can see it, so
//      dK and dV accumulate in registers over the whole group and are written once (no atomics, no
//      scratch). Per query tile, all on tensor cores (mma.sync m16n8k16, f32 accumulate):
//        S^T = K Q^T                 P^T = exp2(S^T * scale log2 e - lse log2 e), masked -> 0
//        dV += P^T dO                dP^T = V dO^T
//        dS^T = P^T (dP^T - delta)   dK += dS^T Q
//        dQ += dS K  (f32 atomicAdd into a [B,H,T,D] scratch; on sm_90 one float2 atomic per
//                     adjacent pair of columns, half the atomic instructions)
//      P^T and dS^T feed their mmas straight from the accumulator registers (the C fragment of a
//      16x16 step is the A fragment of the next mma). dQ needs dS with queries as rows, i.e. a
//      transpose across warps: dS^T goes to shared memory once and comes back through ldmatrix.trans;
//      the dQ tile is then split over the 4 warps (16-row blocks x column groups).
//      Q/dO/lse/delta tiles are double-buffered with cp.async: tile i+1 loads while tile i computes.
//      BR = 64 for D <= 80 and 32 for D = 128, which keeps dK, dV (D/2 + D/2 f32 per thread), S^T and
//      dP^T in registers without spilling.
//   3. dq = scale * dQ scratch, cast. dk gets its scale in registers before the store.
// Causal: a key tile only visits query tiles from the first one that can see it; masking code runs
// only on tiles that straddle the diagonal or the end of S, or when a mask is given.
//
// Everything else (f32, f64, other D, unaligned views): the same FlashAttention-2 loop on CUDA cores in
// the accumulator type (attention_simt.cuh): delta as above, then one block per 32 keys x column chunk
// owns its dK/dV rows (registers, no atomics) and adds dQ with one atomicAdd per (query, column) per
// key tile into a compute-type scratch, cast with the scale at the end (step 3).
#include "attention_simt.cuh"

namespace llava {
namespace attn {
namespace {

// dst[0] += a and dst[1] += b, each atomically (dst 8-byte aligned): on sm_90 and later one vector atomic
// (the float2 overload, red.global.add.v2.f32), which halves the dQ atomics the review of this kernel
// counted (~554M at B4 H32 T2048 D128 causal); before sm_90 two scalar ones. The host emulator takes the
// second branch; both add the same values to the same addresses.
__device__ __forceinline__ void atomic_add_pair(float* dst, float a, float b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(dst), make_float2(a, b));
#else
  atomicAdd(dst, a);
  atomicAdd(dst + 1, b);
#endif
}

// delta[b,h,t] = sum_d dout * out, one warp per row.
template <typename T> __global__ void __launch_bounds__(128) attention_bwd_delta_kernel(AttnParams p, acc_t<T>* delta) {
  using C = acc_t<T>;
  const int64_t row = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= (int64_t)p.B * p.H * p.T) return;
  const int t = (int)(row % p.T), h = (int)((row / p.T) % p.H), b = (int)(row / ((int64_t)p.T * p.H));
  const T* o = static_cast<const T*>(p.o) + b * p.o_s[0] + h * p.o_s[1] + t * p.o_s[2];
  const T* d = static_cast<const T*>(p.dout) + b * p.do_s[0] + h * p.do_s[1] + t * p.do_s[2];
  C acc = C(0);
  for (int i = lane; i < p.D; i += 32) acc += gpu::to_acc<T>(o[i]) * gpu::to_acc<T>(d[i]);
  acc = gpu::warp_sum(acc);
  if (lane == 0) delta[row] = acc;
}

// out[i] = cast(in[i] * mul), grid-stride.
template <typename T, typename A> __global__ void attention_bwd_cast_kernel(T* out, const A* in, int64_t n, A mul) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    out[i] = gpu::from_acc<T>(in[i] * mul);
}

// ------------------------------------------------------------------ tensor-core kernel
template <int D, int BR> struct BwdCfg {
  static constexpr int BC = 64, NW = 4, THREADS = 128, LDS = D + 8, LDDS = BR + 8;
  // shared memory in 16-bit units: K [BC][LDS], V [BC][LDS], Q [2][BR][LDS], dO [2][BR][LDS],
  // dS^T [BC][LDDS]; then f32 lse [2][BR] and delta [2][BR]. Every offset is a multiple of 8 units.
  static constexpr int V_OFF = BC * LDS, Q_OFF = 2 * BC * LDS, DO_OFF = Q_OFF + 2 * BR * LDS,
                       DS_OFF = DO_OFF + 2 * BR * LDS, END16 = DS_OFF + BC * LDDS;
  static constexpr size_t SMEM = size_t(END16) * 2 + 4 * BR * sizeof(float);
  // dQ (BR x D) over the 4 warps: RB blocks of 16 rows x CS column groups of NCOL; GP column pairs
  // (16 columns) per pass bounds the live accumulators.
  static constexpr int RB = BR / 16, CS = NW / RB, NCOL = D / CS, NPAIR = NCOL / 16, GP = NPAIR % 4 == 0 ? 4 : NPAIR;
  static_assert(NW % RB == 0 && NCOL % 16 == 0 && NPAIR % GP == 0, "dQ split must tile the block");
};

template <typename T, int D, int BR> __global__ void __launch_bounds__(128)
    attention_bwd_tc_kernel(AttnParams p, BwdOut bo) {
  using Cfg = BwdCfg<D, BR>;
  constexpr int BC = Cfg::BC, LDS = Cfg::LDS, LDDS = Cfg::LDDS, THREADS = Cfg::THREADS;
  uint16_t* sm = reinterpret_cast<uint16_t*>(mma::dyn_smem);
  uint16_t* sK = sm;
  uint16_t* sV = sm + Cfg::V_OFF;
  uint16_t* sQ = sm + Cfg::Q_OFF;
  uint16_t* sdO = sm + Cfg::DO_OFF;
  uint16_t* sdS = sm + Cfg::DS_OFF;
  float* sLse = reinterpret_cast<float*>(sm + Cfg::END16);
  float* sDelta = sLse + 2 * BR;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int kt = blockIdx.x, hk = blockIdx.y, b = blockIdx.z, k0 = kt * BC;
  const uint16_t* Kg = static_cast<const uint16_t*>(p.k) + b * p.k_s[0] + hk * p.k_s[1];
  const uint16_t* Vg = static_cast<const uint16_t*>(p.v) + b * p.v_s[0] + hk * p.v_s[1];
  load_rows_async<BC, D, THREADS>(sK, Kg, p.k_s[2], k0, p.S, tid);
  load_rows_async<BC, D, THREADS>(sV, Vg, p.v_s[2], k0, p.S, tid);
  mma::cp_async_commit();

  // Work items: (query head gi of the group, query tile qt), from the first tile that sees key k0.
  const int nqt = (p.T + BR - 1) / BR;
  const int qt_begin = p.causal ? max(0, k0 - (p.S - p.T)) / BR : 0;
  const int nq = max(0, nqt - qt_begin), n_items = p.G * nq;
  auto load_item = [&](int it, int buf) {
    const int h = hk * p.G + it / nq, q0 = (qt_begin + it % nq) * BR;
    const uint16_t* Qg = static_cast<const uint16_t*>(p.q) + b * p.q_s[0] + h * p.q_s[1];
    const uint16_t* dOg = static_cast<const uint16_t*>(p.dout) + b * p.do_s[0] + h * p.do_s[1];
    load_rows_async<BR, D, THREADS>(sQ + buf * BR * LDS, Qg, p.q_s[2], q0, p.T, tid);
    load_rows_async<BR, D, THREADS>(sdO + buf * BR * LDS, dOg, p.do_s[2], q0, p.T, tid);
    for (int r = tid; r < BR; r += THREADS) {
      const int q = q0 + r;
      const int64_t bhr = ((int64_t)b * p.H + h) * p.T + q;
      const float lv = q < p.T ? (float)load_lse(p, bhr) : -INFINITY;
      // lse = -inf (no visible key, or a padding row) -> +inf here, so every P of the row is exp2(-inf) = 0.
      sLse[buf * BR + r] = lv == -INFINITY ? INFINITY : lv * kLog2e;
      sDelta[buf * BR + r] = q < p.T ? static_cast<const float*>(bo.delta)[bhr] : 0.f;
    }
  };
  if (n_items > 0) load_item(0, 0);
  mma::cp_async_commit();

  float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++)
#pragma unroll
    for (int e = 0; e < 4; e++) dk[i][e] = dv[i][e] = 0.f;

  for (int it = 0; it < n_items; it++) {
    const int buf = it & 1;
    mma::cp_async_wait<0>();  // item it (and K/V) landed for this thread ...
    __syncthreads();          // ... for all; every warp is done with item it-1 (its buffers, sdS)
    if (it + 1 < n_items) load_item(it + 1, buf ^ 1);
    mma::cp_async_commit();
    const int h = hk * p.G + it / nq, q0 = (qt_begin + it % nq) * BR;
    const uint16_t* Qs = sQ + buf * BR * LDS;
    const uint16_t* dOs = sdO + buf * BR * LDS;
    const float* lse_s = sLse + buf * BR;
    const float* delta_s = sDelta + buf * BR;

    // S^T = K_w Q^T: this warp's 16 keys x BR queries.
    float st[BR / 8][4];
#pragma unroll
    for (int i = 0; i < BR / 8; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) st[i][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t kf[4];
      ldsm_k(kf, sK, LDS, warp * 16, ks * 16, lane);
#pragma unroll
      for (int jp = 0; jp < BR / 16; jp++) {
        uint32_t r[4];
        ldsm_k(r, Qs, LDS, jp * 16, ks * 16, lane);
        mma::mma_16816<T>(st[2 * jp], kf, r[0], r[2]);
        mma::mma_16816<T>(st[2 * jp + 1], kf, r[1], r[3]);
      }
    }

    // P^T. Keys past S must be zeroed explicitly: their zero K rows give S = 0, and exp2(0 - lse) can
    // overflow. Queries past T already give 0 through lse_s = +inf.
    const bool need_mask = tile_needs_mask(p, q0, k0, BC);
#pragma unroll
    for (int nt = 0; nt < BR / 8; nt++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int ql = nt * 8 + 2 * t4 + (e & 1);
        float pv = exp2f(st[nt][e] * p.scale_log2 - lse_s[ql]);
        if (need_mask) {
          const int key = k0 + warp * 16 + g + (e >> 1) * 8, q = q0 + ql;
          if (key >= p.S || q >= p.T || !visible(p, b, h, q, key)) pv = 0.f;
        }
        st[nt][e] = pv;
      }
    }

    // dV += P^T dO.
#pragma unroll
    for (int kk = 0; kk < BR / 16; kk++) {
      uint32_t a[4];
      a[0] = mma::pack2<T>(st[2 * kk][0], st[2 * kk][1]);
      a[1] = mma::pack2<T>(st[2 * kk][2], st[2 * kk][3]);
      a[2] = mma::pack2<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]);
      a[3] = mma::pack2<T>(st[2 * kk + 1][2], st[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t r[4];
        ldsm_t(r, dOs, LDS, dp * 16, kk * 16, lane);
        mma::mma_16816<T>(dv[2 * dp], a, r[0], r[2]);
        mma::mma_16816<T>(dv[2 * dp + 1], a, r[1], r[3]);
      }
    }

    // dP^T = V_w dO^T.
    float dpt[BR / 8][4];
#pragma unroll
    for (int i = 0; i < BR / 8; i++)
#pragma unroll
      for (int e = 0; e < 4; e++) dpt[i][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++) {
      uint32_t vf[4];
      ldsm_k(vf, sV, LDS, warp * 16, ks * 16, lane);
#pragma unroll
      for (int jp = 0; jp < BR / 16; jp++) {
        uint32_t r[4];
        ldsm_k(r, dOs, LDS, jp * 16, ks * 16, lane);
        mma::mma_16816<T>(dpt[2 * jp], vf, r[0], r[2]);
        mma::mma_16816<T>(dpt[2 * jp + 1], vf, r[1], r[3]);
      }
    }

    // dS^T = P^T (dP^T - delta) (unscaled; the scale goes on dK and dQ at the end).
#pragma unroll
    for (int nt = 0; nt < BR / 8; nt++)
#pragma unroll
      for (int e = 0; e < 4; e++) dpt[nt][e] = st[nt][e] * (dpt[nt][e] - delta_s[nt * 8 + 2 * t4 + (e & 1)]);

        // dK += dS^T Q, and dS^T to shared memory for the dQ product.
#pragma unroll
    for (int kk = 0; kk < BR / 16; kk++) {
      uint32_t a[4];
      a[0] = mma::pack2<T>(dpt[2 * kk][0], dpt[2 * kk][1]);
      a[1] = mma::pack2<T>(dpt[2 * kk][2], dpt[2 * kk][3]);
      a[2] = mma::pack2<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
      a[3] = mma::pack2<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; dp++) {
        uint32_t r[4];
        ldsm_t(r, Qs, LDS, dp * 16, kk * 16, lane);
        mma::mma_16816<T>(dk[2 * dp], a, r[0], r[2]);
        mma::mma_16816<T>(dk[2 * dp + 1], a, r[1], r[3]);
      }
      uint16_t* row0 = sdS + (warp * 16 + g) * LDDS + kk * 16 + 2 * t4;
      *reinterpret_cast<uint32_t*>(row0) = a[0];
      *reinterpret_cast<uint32_t*>(row0 + 8 * LDDS) = a[1];
      *reinterpret_cast<uint32_t*>(row0 + 8) = a[2];
      *reinterpret_cast<uint32_t*>(row0 + 8 * LDDS + 8) = a[3];
    }
    __syncthreads();  // all of dS^T is in shared memory

    // dQ[q0 + 16 rb.., cols of group cs] += dS K, straight into the f32 scratch.
    {
      const int rb = warp % Cfg::RB, cs = warp / Cfg::RB;
      float* dq_rows = static_cast<float*>(bo.dq_acc) + (((int64_t)b * p.H + h) * p.T + q0 + rb * 16) * D;
#pragma unroll
      for (int grp = 0; grp < Cfg::NPAIR / Cfg::GP; grp++) {
        const int c0 = cs * Cfg::NCOL + grp * Cfg::GP * 16;
        float dq[2 * Cfg::GP][4];
#pragma unroll
        for (int i = 0; i < 2 * Cfg::GP; i++)
#pragma unroll
          for (int e = 0; e < 4; e++) dq[i][e] = 0.f;
#pragma unroll
        for (int kk = 0; kk < BC / 16; kk++) {
          uint32_t a[4];
          ldsm_t(a, sdS, LDDS, rb * 16, kk * 16, lane);  // A = dS (queries x keys) from dS^T
#pragma unroll
          for (int pp = 0; pp < Cfg::GP; pp++) {
            uint32_t r[4];
            ldsm_t(r, sK, LDS, c0 + pp * 16, kk * 16, lane);
            mma::mma_16816<T>(dq[2 * pp], a, r[0], r[2]);
            mma::mma_16816<T>(dq[2 * pp + 1], a, r[1], r[3]);
          }
        }
#pragma unroll
        for (int hh = 0; hh < 2; hh++) {
          if (q0 + rb * 16 + g + hh * 8 >= p.T) continue;
          // Even offsets (D, c0 and 2 * t4 are even) from a 256-byte aligned scratch: 8-byte aligned pairs.
          float* dst = dq_rows + (g + hh * 8) * D + c0 + 2 * t4;
#pragma unroll
          for (int nt = 0; nt < 2 * Cfg::GP; nt++) atomic_add_pair(dst + nt * 8, dq[nt][2 * hh], dq[nt][2 * hh + 1]);
        }
      }
    }
  }
  mma::cp_async_wait<0>();

  // dK (scaled) and dV rows of this key tile; a tile no query saw writes zeros.
  const float scale = (float)p.scale;
#pragma unroll
  for (int hh = 0; hh < 2; hh++) {
    const int key = k0 + warp * 16 + g + hh * 8;
    if (key >= p.S) continue;
    const int64_t off = (((int64_t)b * p.Hkv + hk) * p.S + key) * D + 2 * t4;
    T* dkr = static_cast<T*>(bo.dk) + off;
    T* dvr = static_cast<T*>(bo.dv) + off;
#pragma unroll
    for (int dt = 0; dt < D / 8; dt++) {
      *reinterpret_cast<uint32_t*>(dkr + dt * 8) = mma::pack2<T>(dk[dt][2 * hh] * scale, dk[dt][2 * hh + 1] * scale);
      *reinterpret_cast<uint32_t*>(dvr + dt * 8) = mma::pack2<T>(dv[dt][2 * hh], dv[dt][2 * hh + 1]);
    }
  }
}

// ------------------------------------------------------------------ launchers
template <typename T> void launch_delta(const KernelArgs& a, const AttnParams& p, acc_t<T>* delta) {
  const int64_t rows = (int64_t)p.B * p.H * p.T;
  if (rows == 0) return;
  gpu::launch(attention_bwd_delta_kernel<T>, dim3((unsigned)((rows + 3) / 4)), dim3(128), 0, gpu::stream(), p, delta);
  gpu::check_launch(a);
}

template <typename T, typename A> void launch_cast(const KernelArgs& a, T* out, const A* in, int64_t n, A mul) {
  if (n == 0) return;
  gpu::launch(attention_bwd_cast_kernel<T, A>, dim3(gpu::grid_for(n)), dim3(256), 0, gpu::stream(), out, in, n, mul);
  gpu::check_launch(a);
}

template <typename T, int D, int BR> void run_tc(const KernelArgs& a, const AttnParams& p, BwdOut bo) {
  using Cfg = BwdCfg<D, BR>;
  const int64_t rows = (int64_t)p.B * p.H * p.T;
  gpu::Scratch delta(rows * sizeof(float)), dq_acc(rows * D * sizeof(float));
  bo.delta = delta.get();
  bo.dq_acc = dq_acc.get();
  if (rows > 0) CUDA_CHECK(cudaMemsetAsync(bo.dq_acc, 0, rows * D * sizeof(float), gpu::stream()));
  launch_delta<T>(a, p, delta.as<float>());
  if (p.S > 0) {
    const dim3 grid((p.S + Cfg::BC - 1) / Cfg::BC, p.Hkv, p.B);
    gpu::launch(attention_bwd_tc_kernel<T, D, BR>, grid, dim3(Cfg::THREADS), Cfg::SMEM, gpu::stream(), p, bo);
    gpu::check_launch(a);
  }
  launch_cast<T, float>(a, static_cast<T*>(bo.dq), dq_acc.as<float>(), rows * D, (float)p.scale);
}

template <typename T, int NC> void run_simt(const KernelArgs& a, const AttnParams& p, BwdOut bo) {
  using C = acc_t<T>;
  using Cfg = SimtCfg<NC>;
  const int64_t rows = (int64_t)p.B * p.H * p.T;
  gpu::Scratch delta(rows * sizeof(C)), dq_acc(rows * p.D * sizeof(C));
  bo.delta = delta.get();
  bo.dq_acc = dq_acc.get();
  if (rows * p.D > 0) CUDA_CHECK(cudaMemsetAsync(bo.dq_acc, 0, rows * p.D * sizeof(C), gpu::stream()));
  launch_delta<T>(a, p, delta.as<C>());
  if (p.S > 0) {
    const dim3 grid((unsigned)((p.S + Cfg::BC - 1) / Cfg::BC * Cfg::chunks(p.D)), p.Hkv, p.B);
    const size_t smem = size_t(Cfg::BWD_SMEM) * sizeof(C);
    gpu::launch(attention_bwd_simt_kernel<T, NC>, grid, dim3(Cfg::THREADS), smem, gpu::stream(), p, bo);
    gpu::check_launch(a);
  }
  launch_cast<T, C>(a, static_cast<T*>(bo.dq), dq_acc.as<C>(), rows * p.D, C(p.scale));
}

template <typename T> void run_typed(const KernelArgs& a, const AttnParams& p, const BwdOut& bo, bool tc_ok) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
    if (tc_ok) {
      switch (p.D) {
        case 64:
          return run_tc<T, 64, 64>(a, p, bo);
        case 80:
          return run_tc<T, 80, 64>(a, p, bo);
        case 128:
          return run_tc<T, 128, 32>(a, p, bo);
        default:
          break;
      }
    }
  }
  if (p.D <= 32)
    run_simt<T, 4>(a, p, bo);
  else
    run_simt<T, 8>(a, p, bo);
}

// attention_bwd(dq, dk, dv, q, k, v, out, dout, lse, mask?, causal, scale)
void attention_bwd_cuda(const KernelArgs& a) {
  const TensorArg &dq = a.tensor(0), &dk = a.tensor(1), &dv = a.tensor(2);
  const Inputs in = check_inputs(a, 3, 9, 10);
  const TensorArg &out = a.tensor(6), &dout = a.tensor(7), &lse = a.tensor(8);
  const std::pair<const TensorArg*, const char*> grads[] = {{&dq, "dq"}, {&dk, "dk"}, {&dv, "dv"}};
  const TensorArg* like[] = {in.q, in.k, in.v};
  for (int i = 0; i < 3; i++) {
    const TensorArg& gr = *grads[i].first;
    a.check_same_dtype(gr, *in.q, grads[i].second);
    a.check_contiguous(gr, grads[i].second);
    a.check_shape(gr, std::vector<int64_t>(like[i]->shape, like[i]->shape + 4), grads[i].second);
    if (gr.device() != Device::CUDA) a.fail(std::string(grads[i].second) + " must be on the CUDA device");
  }
  for (auto [t, what] : {std::pair<const TensorArg*, const char*>{&out, "out"}, {&dout, "dout"}}) {
    a.check_same_dtype(*t, *in.q, what);
    check_head_view(a, *t, what);
    a.check_shape(*t, {in.B, in.H, in.T, in.D}, what);
  }
  check_lse(a, lse, in);
  check_no_overlaps(a, {&dq, &dk, &dv}, {in.q, in.k, in.v, &out, &dout, &lse, in.mask});
  if (in.B * in.Hkv == 0) return;
  if (in.D > 1024) a.fail("head dim D above 1024 is not supported on CUDA");
  AttnParams p = make_params(in, lse);
  p.o = out.bytes();
  p.dout = dout.bytes();
  head_strides(out, p.o_s);
  head_strides(dout, p.do_s);
  BwdOut bo{dq.bytes(), dk.bytes(), dv.bytes(), nullptr, nullptr};
  const bool tc_ok = rows_chunkable(p.q, p.q_s) && rows_chunkable(p.k, p.k_s) && rows_chunkable(p.v, p.v_s) &&
                     rows_chunkable(p.dout, p.do_s) && gpu::aligned_to(bo.dk, 4) && gpu::aligned_to(bo.dv, 4);
  GPU_DISPATCH_FLOAT(a, in.q->dtype, T, run_typed<T>(a, p, bo, tc_ok));
}

}  // namespace
}  // namespace attn

REGISTER_KERNEL("attention_bwd", Device::CUDA, attn::attention_bwd_cuda);

}  // namespace llava
