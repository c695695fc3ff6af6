// norm.cu — LayerNorm and RMSNorm, forward and backward, on the GPU; same names, arguments,
// checks and formulas as cpp/cpu_norm.cc (x contiguous [N, C], any leading shape; mean/rstd f32
// or f64 with N elements; w/b [C] in x's dtype; dw/db [C] any float dtype, optional).
//
// One kernel per direction serves both norms (a uniform `rms` flag): RMSNorm is LayerNorm with
// mean 0, no bias and HF Llama's roundings (h = x * rstd rounded to the input dtype before * w;
// in backward g = dy * w rounded, dw = sum dy * rounded(h)).
// Layout: a group of G threads per row, G the smallest of 32/64/128/256 with C <= 32 * G, so for
// C <= 8192 (4096 for f64) each thread holds its <= 32 (16) elements of the row in registers (x, and dy in backward)
// and the row is read from memory once (the backward uses 16 per thread, so twice the threads, up to
// C = 4096: see kBwdNarrow); loads are 16-byte vectors (Pack<T,V>) when every row is
// aligned. Larger C falls back to a 256-thread group that re-reads the row (L1/L2 hits).
// Statistics are two-pass (mean, then sum of squared deviations) in f32 (f64 for f64), reduced
// with warp shuffles and, for groups of several warps, shared memory summed in a fixed order.
// dw/db: null = frozen weight, no work spent. Otherwise the grid is sized to what fits on the GPU
// at once (occupancy query) and each thread keeps partial sums for its fixed columns in registers
// across all the rows its group handles; the groups of a block add theirs in shared memory and the
// block writes one row of a [blocks, C] f32/f64 scratch buffer (from the caching allocator); a
// second small kernel sums those rows per column in a fixed order: deterministic, no atomics.
// (The fallback path accumulates into its block's scratch row in place: one owner per column.)
#include <cmath>
#include <type_traits>
#include <vector>

#include "cuda_common.cuh"
#include "kernel_checks.h"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;
// Row elements a thread keeps in registers: 32 (16 for f64, whose backward would spill otherwise).
template <typename T> constexpr int per_thread() { return sizeof(acc_t<T>) == 8 ? 16 : 32; }
// The backward keeps four values per element (x, dy and the dw/db partial sums), so at 32 elements a
// thread needs ~190 registers and an SM runs one 256-thread block. Rows up to 16 * kBlock elements
// (every LLaMA-7B / CLIP width) take 16 per thread instead, i.e. twice the threads per row and about
// half the registers; wider rows keep per_thread<T>().
constexpr int kBwdNarrow = 16;

// Rounding through the storage type (identity for f32/f64).
template <typename T> __device__ __forceinline__ acc_t<T> round_t(acc_t<T> v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>)
    return to_acc<T>(from_acc<T>(v));
  else
    return v;
}

// Sums a and b over the G threads of a group (every thread of the group gets the sums; warps are
// added in a fixed order). Must be reached by every thread of the block.
template <int G, typename F> __device__ __forceinline__ void group_sum2(F& a, F& b, F* smem /* [2][kBlock / 32] */) {
  a = warp_sum(a);
  b = warp_sum(b);
  if constexpr (G > 32) {
    constexpr int W = G / 32;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, first = (warp / W) * W;
    __syncthreads();
    if (lane == 0) {
      smem[warp] = a;
      smem[kBlock / 32 + warp] = b;
    }
    __syncthreads();
    a = F(0);
    b = F(0);
#pragma unroll
    for (int k = 0; k < W; k++) {
      a += smem[first + k];
      b += smem[kBlock / 32 + first + k];
    }
  }
}

// Calls fn(q, j) for the packs j this thread owns in a row of nv packs: j = lane + q * G. With
// CACHE the loop is unrolled over q < NP so register arrays are indexed by constants.
template <bool CACHE, int NP, int G, typename Fn>
__device__ __forceinline__ void for_packs(int lane, int64_t nv, Fn&& fn) {
  if constexpr (CACHE) {
#pragma unroll
    for (int q = 0; q < NP; q++) {
      const int64_t j = lane + (int64_t)q * G;
      if (j < nv) fn(q, j);
    }
  } else {
    for (int64_t j = lane; j < nv; j += G) fn(0, j);
  }
}

template <typename T, int V> __device__ __forceinline__ Pack<T, V> ldp(const T* row, int64_t j) {
  return reinterpret_cast<const Pack<T, V>*>(row)[j];
}

// ---------------------------------------------------------------- forward
template <typename T, int G, int V, bool CACHE> __global__ void __launch_bounds__(kBlock)
    norm_fwd_kernel(T* y, Stat mean, Stat rstd, const T* x, const T* w, const T* b, double eps, int64_t N, int64_t C,
                    bool rms) {
  using F = acc_t<T>;
  constexpr int NP = CACHE ? per_thread<T>() / V : 1, RPB = kBlock / G;
  __shared__ F smem[2 * kBlock / 32];
  const int lane = threadIdx.x % G, sub = threadIdx.x / G;
  const int64_t nv = C / V;
  for (int64_t base = (int64_t)blockIdx.x * RPB; base < N; base += (int64_t)gridDim.x * RPB) {
    const int64_t row = base + sub;
    const bool live = row < N;
    const int64_t lnv = live ? nv : 0;  // rows past N walk nothing but still join the reductions
    const T* xr = x + (live ? row : 0) * C;
    F xv[NP * V];
    F s = F(0), unused = F(0);
    for_packs<CACHE, NP, G>(lane, lnv, [&](int q, int64_t j) {
      Pack<T, V> pk = ldp<T, V>(xr, j);
#pragma unroll
      for (int k = 0; k < V; k++) {
        F v = to_acc<T>(pk.v[k]);
        if constexpr (CACHE) xv[q * V + k] = v;
        s += v;
      }
    });
    F mu = F(0);
    if (!rms) {
      group_sum2<G>(s, unused, smem);
      mu = s / F(C);
    }
    F ss = F(0);
    for_packs<CACHE, NP, G>(lane, lnv, [&](int q, int64_t j) {
      Pack<T, V> pk;
      if constexpr (!CACHE) pk = ldp<T, V>(xr, j);
#pragma unroll
      for (int k = 0; k < V; k++) {
        F v;
        if constexpr (CACHE)
          v = xv[q * V + k];
        else
          v = to_acc<T>(pk.v[k]);
        F d = v - mu;
        ss += d * d;
      }
    });
    group_sum2<G>(ss, unused, smem);
    const F rs = F(1) / ewmath::sqrt(ss / F(C) + F(eps));
    if (!live) continue;
    if (lane == 0) {
      if (!rms) mean.set(row, double(mu));
      rstd.set(row, double(rs));
    }
    T* yr = y + row * C;
    for_packs<CACHE, NP, G>(lane, nv, [&](int q, int64_t j) {
      Pack<T, V> pk, out, pw, pb;
      if constexpr (!CACHE) pk = ldp<T, V>(xr, j);
      if (w) pw = ldp<T, V>(w, j);
      if (b) pb = ldp<T, V>(b, j);
#pragma unroll
      for (int k = 0; k < V; k++) {
        F v;
        if constexpr (CACHE)
          v = xv[q * V + k];
        else
          v = to_acc<T>(pk.v[k]);
        F h;
        if (rms) {
          h = round_t<T>(v * rs);
          if (w) h *= to_acc<T>(pw.v[k]);
        } else {
          h = (v - mu) * rs;
          if (w) h *= to_acc<T>(pw.v[k]);
          if (b) h += to_acc<T>(pb.v[k]);
        }
        out.v[k] = from_acc<T>(h);
      }
      reinterpret_cast<Pack<T, V>*>(yr)[j] = out;
    });
  }
}

// ---------------------------------------------------------------- backward
// dwp/dbp: [gridDim.x, C] partial rows, row blockIdx.x belongs to this block. With CACHE it is
// written once at the end; without, it is pre-zeroed and updated in place (RPB = 1, one owner
// thread per column).
template <typename T, int PT, int G, int V, bool CACHE> __global__ void __launch_bounds__(kBlock)
    norm_bwd_kernel(T* dx, acc_t<T>* dwp, acc_t<T>* dbp, const T* dy, const T* x, const T* w, Stat mean, Stat rstd,
                    int64_t N, int64_t C, bool rms) {
  using F = acc_t<T>;
  constexpr int NP = CACHE ? PT / V : 1, RPB = kBlock / G;
  __shared__ F smem[2 * kBlock / 32];
  const int lane = threadIdx.x % G, sub = threadIdx.x / G;
  const int64_t nv = C / V;
  F xv[NP * V], dv[NP * V], accw[NP * V], accb[NP * V];
  if constexpr (CACHE) {
#pragma unroll
    for (int k = 0; k < NP * V; k++) accw[k] = accb[k] = F(0);
  }
  for (int64_t base = (int64_t)blockIdx.x * RPB; base < N; base += (int64_t)gridDim.x * RPB) {
    const int64_t row = base + sub;
    const bool live = row < N;
    const int64_t lnv = live ? nv : 0;
    const T* xr = x + (live ? row : 0) * C;
    const T* dyr = dy + (live ? row : 0) * C;
    const F mu = (live && !rms) ? F(mean.get(row)) : F(0);
    const F rs = live ? F(rstd.get(row)) : F(0);
    // g = dy * w (rounded for RMSNorm, as torch autograd of the HF module), xh = (x - mu) * rs
    auto grad_in = [&](F d, F xval, const Pack<T, V>& pw, int k, F& g, F& xh) {
      g = d;
      if (w) {
        g = d * to_acc<T>(pw.v[k]);
        if (rms) g = round_t<T>(g);
      }
      xh = (xval - mu) * rs;
    };
    F sg = F(0), sgx = F(0);
    for_packs<CACHE, NP, G>(lane, lnv, [&](int q, int64_t j) {
      Pack<T, V> px = ldp<T, V>(xr, j), pd = ldp<T, V>(dyr, j), pw;
      if (w) pw = ldp<T, V>(w, j);
#pragma unroll
      for (int k = 0; k < V; k++) {
        F xval = to_acc<T>(px.v[k]), d = to_acc<T>(pd.v[k]), g, xh;
        if constexpr (CACHE) {
          xv[q * V + k] = xval;
          dv[q * V + k] = d;
        }
        grad_in(d, xval, pw, k, g, xh);
        sg += g;
        sgx += g * xh;
      }
    });
    group_sum2<G>(sg, sgx, smem);
    if (!live) continue;
    const F ma = rms ? F(0) : sg / F(C), mb = sgx / F(C);
    T* dxr = dx + row * C;
    for_packs<CACHE, NP, G>(lane, nv, [&](int q, int64_t j) {
      Pack<T, V> px, pd, pw, out;
      if constexpr (!CACHE) {
        px = ldp<T, V>(xr, j);
        pd = ldp<T, V>(dyr, j);
      }
      if (w) pw = ldp<T, V>(w, j);
#pragma unroll
      for (int k = 0; k < V; k++) {
        F xval, d, g, xh;
        if constexpr (CACHE) {
          xval = xv[q * V + k];
          d = dv[q * V + k];
        } else {
          xval = to_acc<T>(px.v[k]);
          d = to_acc<T>(pd.v[k]);
        }
        grad_in(d, xval, pw, k, g, xh);
        out.v[k] = from_acc<T>(rs * ((g - ma) - xh * mb));
        const F dwv = d * (rms ? round_t<T>(xh) : xh);
        if constexpr (CACHE) {
          accw[q * V + k] += dwv;
          accb[q * V + k] += d;
        } else {
          const int64_t col = j * V + k;
          if (dwp) dwp[blockIdx.x * C + col] += dwv;
          if (dbp) dbp[blockIdx.x * C + col] += d;
        }
      }
      reinterpret_cast<Pack<T, V>*>(dxr)[j] = out;
    });
  }
  if constexpr (CACHE) {
    if (dwp || dbp) {
      if constexpr (RPB == 1) {
        for_packs<CACHE, NP, G>(lane, nv, [&](int q, int64_t j) {
#pragma unroll
          for (int k = 0; k < V; k++) {
            const int64_t col = j * V + k;
            if (dwp) dwp[blockIdx.x * C + col] = accw[q * V + k];
            if (dbp) dbp[blockIdx.x * C + col] = accb[q * V + k];
          }
        });
      } else {
        // Several groups per block: add their partial rows in shared memory (group order) first,
        // so the block writes one row. RPB * C <= kBlock * PT elements (16 or 32 KB).
        __shared__ F red[kBlock * PT];
        for (int which = 0; which < 2; which++) {
          F* dst = which == 0 ? dwp : dbp;
          if (!dst) continue;  // uniform across the block
          __syncthreads();
          for_packs<CACHE, NP, G>(lane, nv, [&](int q, int64_t j) {
#pragma unroll
            for (int k = 0; k < V; k++) red[sub * C + j * V + k] = which == 0 ? accw[q * V + k] : accb[q * V + k];
          });
          __syncthreads();
          for (int64_t c = threadIdx.x; c < C; c += kBlock) {
            F sum = F(0);
#pragma unroll
            for (int r = 0; r < RPB; r++) sum += red[r * C + c];
            dst[blockIdx.x * C + c] = sum;
          }
        }
      }
    }
  }
}

// out[c] = sum over p of partial[p, c]. A block covers 32 columns x 8 slices of P; the 8 slice
// sums meet in shared memory and are added in slice order (deterministic).
template <typename TO, typename A> __global__ void __launch_bounds__(kBlock)
    colsum_kernel(TO* out, const A* partial, int64_t P, int64_t C) {
  __shared__ A tile[8][32];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  for (int64_t c0 = (int64_t)blockIdx.x * 32; c0 < C; c0 += (int64_t)gridDim.x * 32) {
    const int64_t c = c0 + tx;
    A s = A(0);
    if (c < C)
      for (int64_t p = ty; p < P; p += 8) s += partial[p * C + c];
    tile[ty][tx] = s;
    __syncthreads();
    if (ty == 0 && c < C) {
#pragma unroll
      for (int k = 1; k < 8; k++) s += tile[k][tx];
      store(out + c, s);
    }
    __syncthreads();
  }
}

// ---------------------------------------------------------------- launch helpers
// Calls launch(G, V, CACHE) with compile-time constants for this row length, G the smallest group of at
// least G0 threads with C <= G * PT (PT elements a thread keeps in registers); CACHE false past 256 * PT.
template <typename T, int PT, int G0 = 32, typename Launch>
void dispatch_rows(int64_t C, std::initializer_list<const void*> ptrs, Launch&& launch) {
  constexpr int VV = int(16 / sizeof(T));
  bool vec = C % VV == 0;
  for (const void* q : ptrs) vec = vec && (q == nullptr || aligned_to(q, 16));
  using std::integral_constant;
  auto go = [&](auto g, auto cache) {
    if (vec)
      launch(g, integral_constant<int, VV>(), cache);
    else
      launch(g, integral_constant<int, 1>(), cache);
  };
  integral_constant<bool, true> yes;
  if constexpr (G0 <= 32)
    if (C <= 32 * PT) return go(integral_constant<int, 32>(), yes);
  if constexpr (G0 <= 64)
    if (C <= 64 * PT) return go(integral_constant<int, 64>(), yes);
  if constexpr (G0 <= 128)
    if (C <= 128 * PT) return go(integral_constant<int, 128>(), yes);
  if (C <= 256 * PT) return go(integral_constant<int, 256>(), yes);
  go(integral_constant<int, 256>(), integral_constant<bool, false>());
}

// ---------------------------------------------------------------- validation: parse_*_norm_* in kernel_checks.h

template <typename T> const T* tptr(const TensorArg* t) { return t ? reinterpret_cast<const T*>(t->bytes()) : nullptr; }

// ---------------------------------------------------------------- launchers
void norm_fwd(const KernelArgs& a, const TensorArg& y, const TensorArg* mean, const TensorArg& rstd, const TensorArg& x,
              const TensorArg* w, const TensorArg* b, double eps, int64_t N, int64_t C, bool rms) {
  if (N == 0) return;
  Stat sm = mean ? make_stat(*mean) : Stat{nullptr, false}, sr = make_stat(rstd);
  GPU_DISPATCH_FLOAT(a, x.dtype, T, {
    T* py = reinterpret_cast<T*>(y.bytes());
    const T *px = tptr<T>(&x), *pw = tptr<T>(w), *pb = tptr<T>(b);
    dispatch_rows<T, per_thread<T>()>(C, {py, px, pw, pb}, [&](auto g, auto v, auto cache) {
      constexpr int G = decltype(g)::value;
      unsigned grid = grid_for((N + kBlock / G - 1) / (kBlock / G), 1);
      launch(norm_fwd_kernel<T, G, decltype(v)::value, decltype(cache)::value>, grid, kBlock, 0, stream(), py, sm, sr,
             px, pw, pb, eps, N, C, rms);
    });
  });
  check_launch(a);
}

template <typename T> void norm_bwd_impl(const KernelArgs& a, const TensorArg& dx, const TensorArg* dw,
                                         const TensorArg* db, const TensorArg& dy, const TensorArg& x,
                                         const TensorArg* w, const TensorArg* mean, const TensorArg& rstd, int64_t N,
                                         int64_t C, bool rms) {
  using A = acc_t<T>;
  cudaStream_t s = stream();
  if (N == 0) {  // the CPU writes zero gradients for an empty batch
    for (const TensorArg* p : {dw, db})
      if (p) CUDA_CHECK(cudaMemsetAsync(p->bytes(), 0, C * dtype_size(p->dtype), s));
    return;
  }
  Stat sm = mean ? make_stat(*mean) : Stat{nullptr, false}, sr = make_stat(rstd);
  T* pdx = reinterpret_cast<T*>(dx.bytes());
  const T *pdy = tptr<T>(&dy), *px = tptr<T>(&x), *pw = tptr<T>(w);
  const bool grads = dw || db;
  Scratch partial;
  int64_t P = 0;
  auto run = [&](auto pt, auto g, auto v, auto cache) {
    constexpr int PT = decltype(pt)::value, G = decltype(g)::value, VV = decltype(v)::value;
    constexpr bool CACHE = decltype(cache)::value;
    auto kernel = norm_bwd_kernel<T, PT, G, VV, CACHE>;
    const int64_t rpb = kBlock / G, blocks = (N + rpb - 1) / rpb;
    unsigned grid = grid_for(blocks, 1);
    A *pdw = nullptr, *pdb = nullptr;
    if (grads) {
      // One partial row per block: as many blocks as fit on the GPU at once, no more.
      int per_sm = 1;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kBlock, 0) != cudaSuccess || per_sm < 1) {
        cudaGetLastError();
        per_sm = 1;
      }
      grid = (unsigned)std::max<int64_t>(1, std::min<int64_t>(blocks, (int64_t)per_sm * num_sms()));
      P = grid;
      const size_t one = sizeof(A) * (size_t)P * (size_t)C, all = one * ((dw ? 1 : 0) + (db ? 1 : 0));
      partial = Scratch(all);
      pdw = dw ? partial.as<A>() : nullptr;
      pdb = db ? partial.as<A>() + (dw ? P * C : 0) : nullptr;
      if (!CACHE) CUDA_CHECK(cudaMemsetAsync(partial.get(), 0, all, s));
    }
    launch(kernel, grid, kBlock, 0, s, pdx, pdw, pdb, pdy, px, pw, sm, sr, N, C, rms);
  };
  using std::integral_constant;
  constexpr int kWide = per_thread<T>(), kNarrow = kBwdNarrow < kWide ? kBwdNarrow : kWide;
  if (C <= int64_t(kBlock) * kNarrow)
    dispatch_rows<T, kNarrow>(C, {pdx, pdy, px, pw},
                              [&](auto g, auto v, auto cache) { run(integral_constant<int, kNarrow>(), g, v, cache); });
  else
    dispatch_rows<T, kWide, kBlock>(
        C, {pdx, pdy, px, pw}, [&](auto g, auto v, auto cache) { run(integral_constant<int, kWide>(), g, v, cache); });
  check_launch(a);
  for (int k = 0; k < 2; k++) {
    const TensorArg* out = k == 0 ? dw : db;
    if (!out) continue;
    const A* part = partial.as<A>() + (k == 1 && dw ? P * C : 0);
    GPU_DISPATCH_FLOAT(a, out->dtype, TO, {
      launch(colsum_kernel<TO, A>, grid_for((C + 31) / 32, 1), kBlock, 0, s, reinterpret_cast<TO*>(out->bytes()), part,
             P, C);
    });
    check_launch(a);
  }
}

// layer_norm_fwd(y, mean, rstd, x, w?, b?, eps)
void layer_norm_fwd_kernel(const KernelArgs& a) {
  const NormFwdArgs rw = parse_layer_norm_fwd(a);
  const TensorArg &y = *rw.y, &mean = *rw.mean, &rstd = *rw.rstd, &x = *rw.x;
  const TensorArg *w = rw.w, *b = rw.b;
  const double eps = rw.eps;
  norm_fwd(a, y, &mean, rstd, x, w, b, eps, rw.N, rw.C, false);
}

// layer_norm_bwd(dx, dw?, db?, dy, x, w?, mean, rstd)
void layer_norm_bwd_kernel(const KernelArgs& a) {
  const NormBwdArgs rw = parse_layer_norm_bwd(a);
  const TensorArg &dx = *rw.dx, &dy = *rw.dy, &x = *rw.x, &mean = *rw.mean, &rstd = *rw.rstd;
  const TensorArg *dw = rw.dw, *db = rw.db, *w = rw.w;
  GPU_DISPATCH_FLOAT(a, x.dtype, T, norm_bwd_impl<T>(a, dx, dw, db, dy, x, w, &mean, rstd, rw.N, rw.C, false));
}

// rms_norm_fwd(y, rstd, x, w?, eps)
void rms_norm_fwd_kernel(const KernelArgs& a) {
  const NormFwdArgs rw = parse_rms_norm_fwd(a);
  const TensorArg &y = *rw.y, &rstd = *rw.rstd, &x = *rw.x;
  const TensorArg* w = rw.w;
  const double eps = rw.eps;
  norm_fwd(a, y, nullptr, rstd, x, w, nullptr, eps, rw.N, rw.C, true);
}

// rms_norm_bwd(dx, dw?, dy, x, w?, rstd)
void rms_norm_bwd_kernel(const KernelArgs& a) {
  const NormBwdArgs rw = parse_rms_norm_bwd(a);
  const TensorArg &dx = *rw.dx, &dy = *rw.dy, &x = *rw.x, &rstd = *rw.rstd;
  const TensorArg *dw = rw.dw, *w = rw.w;
  GPU_DISPATCH_FLOAT(a, x.dtype, T, norm_bwd_impl<T>(a, dx, dw, nullptr, dy, x, w, nullptr, rstd, rw.N, rw.C, true));
}

REGISTER_KERNEL("layer_norm_fwd", Device::CUDA, layer_norm_fwd_kernel);
REGISTER_KERNEL("layer_norm_bwd", Device::CUDA, layer_norm_bwd_kernel);
REGISTER_KERNEL("rms_norm_fwd", Device::CUDA, rms_norm_fwd_kernel);
REGISTER_KERNEL("rms_norm_bwd", Device::CUDA, rms_norm_bwd_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
