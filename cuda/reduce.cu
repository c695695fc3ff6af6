// reduce.cu — reductions, softmax and fused softmax cross-entropy on the GPU; same names,
// arguments, checks and semantics as cpp/cpu_reduce.cc.
//
// reduce(out, x, op, R, correction?, inner?): x contiguous, seen as [outer, R, inner]; out
// [outer, inner]. Each op is a "family" with a small state, an element update, a merge and a
// finish (Sum/Mean: a sum; Prod; Max/Min/Argmax/Argmin: (value, index) with NaN winning and the
// first index winning ties, which makes the merge order-independent; Var: Welford (n, mean, M2)
// merged with Chan's formula; Logsumexp: online (max, scaled sum)). Layouts:
//   * inner == 1 (rows): a group of G threads per row — one warp when R <= 1024, a 256-thread
//     block otherwise — strided loads (4 in flight per thread), warp-shuffle butterfly, then
//     shared memory across the block's warps;
//   * inner > 1 (columns): a 256-thread block covers 32 neighbouring columns (coalesced) x 8
//     slices of R; the 8 partial states meet in shared memory;
//   * few outputs and long R (e.g. the global sum of a gradient): R is also split across blocks
//     (split-K style) into per-chunk partial states in a scratch buffer, merged in chunk order by
//     a second small kernel. Deterministic: no atomics anywhere.
// Accumulation is f32 for 16-bit and f32 inputs (f64 for the running sum of sum/mean, see SumFam),
// f64 for f64, the integer type for integers — as the CPU, which adds f32 blocks in f64. The
// summation order differs from the CPU's (tree vs blocked), so sums agree to rounding, not bit for
// bit.
//
// softmax_fwd/bwd: rows of a contiguous [N, C]; one warp per row for C <= 1024, else one block;
// online max/sum in one pass, then one pass that writes (16-byte vector loads when rows are
// aligned). cross_entropy_fwd: same row reduction over [N, V] logits (V up to 128k and beyond):
// lse and loss = lse - logit[target] only — probabilities are never written. cross_entropy_bwd:
// elementwise (exp(x - lse) - onehot) * dloss in the logits dtype, a 2-D grid (column chunks x
// rows). Rows whose target is ignore_index get loss 0 and zero gradient. Degenerate rows (max is
// +-inf) give NaN exactly where the CPU's two-pass formula does.
#include <cmath>
#include <type_traits>

#include "cuda_common.cuh"
#include "kernel_checks.h"
#include "kernel_checks_tensor.h"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;

// Op names and numbering: kernel_ops.h (RParams carries the op as an int).
using namespace reduce_op;

struct RParams {
  int op;
  int64_t n;  // R
  double correction;
};

template <typename V> __device__ __forceinline__ V shfl_any(V v, int m) {
  if constexpr (sizeof(V) < 4)
    return V(__shfl_xor_sync(kFullMask, int(v), m));
  else if constexpr (std::is_integral_v<V> && sizeof(V) == 8)
    return V(__shfl_xor_sync(kFullMask, (long long)v, m));
  else
    return __shfl_xor_sync(kFullMask, v, m);
}

// ---------------------------------------------------------------- families
// The running sum of float (and 16-bit) inputs is a double: a thread may add thousands of elements in
// sequence (long rows split over few blocks on a small GPU), and an f32 running sum would drift by
// ~n * 2^-24 relative. One f64 add per loaded element stays far below the memory bound on A100/H100.
// softmax_bwd's row dot product sum(dy * y) uses this state too, so it is also accumulated in f64.
template <typename T> struct SumFam {  // sum, mean
  using F = acc_t<T>;
  using A = std::conditional_t<std::is_same_v<F, float>, double, F>;
  struct S {
    A s;
  };
  __host__ __device__ static S init() { return {A(0)}; }
  __host__ __device__ static void add(S& a, F x, int64_t) { a.s += A(x); }
  __host__ __device__ static void merge(S& a, const S& b, const RParams&) { a.s += b.s; }
  __device__ static S shfl(const S& a, int m) { return {shfl_any(a.s, m)}; }
  __device__ static void finish(const S& a, const RParams& p, void* out, int64_t oi) {
    A r = a.s;
    if (p.op == Mean) r = r / A(p.n);
    store(static_cast<T*>(out) + oi, F(r));
  }
};

template <typename T> struct ProdFam {
  using F = acc_t<T>;
  struct S {
    F v;
  };
  __host__ __device__ static S init() { return {F(1)}; }
  __host__ __device__ static void add(S& a, F x, int64_t) { a.v *= x; }
  __host__ __device__ static void merge(S& a, const S& b, const RParams&) { a.v *= b.v; }
  __device__ static S shfl(const S& a, int m) { return {shfl_any(a.v, m)}; }
  __device__ static void finish(const S& a, const RParams&, void* out, int64_t oi) {
    store(static_cast<T*>(out) + oi, a.v);
  }
};

template <typename T> struct ArgFam {  // max, min, argmax, argmin; i < 0 = no element yet
  using F = acc_t<T>;
  struct S {
    F v;
    int64_t i;
  };
  __host__ __device__ static S init() { return {F(0), -1}; }
  // Does b beat a? NaN wins (first NaN), then the extreme value, then the first index.
  __host__ __device__ static bool beats(const S& a, const S& b, bool want_max) {
    if (b.i < 0) return false;
    if (a.i < 0) return true;
    bool an = a.v != a.v, bn = b.v != b.v;
    if (an || bn) return (an && bn) ? b.i < a.i : bn;
    if (b.v == a.v) return b.i < a.i;
    return want_max ? b.v > a.v : b.v < a.v;
  }
  // Elements arrive in increasing index order within a thread, so `add` may use the same rule.
  __host__ __device__ static void add(S& a, F x, int64_t i, bool want_max) {
    S b{x, i};
    if (beats(a, b, want_max)) a = b;
  }
  __host__ __device__ static void merge(S& a, const S& b, const RParams& p) {
    if (beats(a, b, p.op == Max || p.op == Argmax)) a = b;
  }
  __device__ static S shfl(const S& a, int m) { return {shfl_any(a.v, m), shfl_any(a.i, m)}; }
  __device__ static void finish(const S& a, const RParams& p, void* out, int64_t oi) {
    if (p.op == Argmax || p.op == Argmin)
      static_cast<int64_t*>(out)[oi] = a.i;
    else
      store(static_cast<T*>(out) + oi, a.v);
  }
};

template <typename T> struct VarFam {  // Welford; merge = Chan et al.
  using F = acc_t<T>;
  struct S {
    F n, mean, m2;
  };
  __host__ __device__ static S init() { return {F(0), F(0), F(0)}; }
  __host__ __device__ static void add(S& a, F x, int64_t) {
    a.n += F(1);
    F d = x - a.mean;
    a.mean += d / a.n;
    a.m2 += d * (x - a.mean);
  }
  __host__ __device__ static void merge(S& a, const S& b, const RParams&) {
    if (b.n == F(0)) return;
    if (a.n == F(0)) {
      a = b;
      return;
    }
    F n = a.n + b.n, d = b.mean - a.mean;
    a.mean += d * (b.n / n);
    a.m2 += b.m2 + d * d * (a.n * b.n / n);
    a.n = n;
  }
  __device__ static S shfl(const S& a, int m) { return {shfl_any(a.n, m), shfl_any(a.mean, m), shfl_any(a.m2, m)}; }
  __device__ static void finish(const S& a, const RParams& p, void* out, int64_t oi) {
    store(static_cast<T*>(out) + oi, a.m2 / F(double(p.n) - p.correction));
  }
};

template <typename T> struct LseFam {  // online logsumexp: value = m + log(s)
  using F = acc_t<T>;
  struct S {
    F m, s;
  };
  __host__ __device__ static S init() { return {F(-INFINITY), F(0)}; }
  // NaN is ignored by the max and poisons the sum (as the CPU's std::max / sum of exp).
  __host__ __device__ static void add(S& a, F x, int64_t = 0) {
    if (x != x) {
      a.s = x;
      return;
    }
    if (x > a.m) {
      a.s = a.s * ewmath::exp(a.m - x) + F(1);  // exp(-inf) = 0 when nothing finite was seen; NaN stays NaN
      a.m = x;
    } else if (x != F(-INFINITY)) {
      a.s += ewmath::exp(x - a.m);
    }
  }
  __host__ __device__ static void merge(S& a, const S& b, const RParams&) {
    F m = a.m < b.m ? b.m : a.m;
    F sa = a.m == m ? a.s : a.s * ewmath::exp(a.m - m);
    F sb = b.m == m ? b.s : b.s * ewmath::exp(b.m - m);
    a.m = m;
    a.s = sa + sb;
  }
  __device__ static S shfl(const S& a, int m) { return {shfl_any(a.m, m), shfl_any(a.s, m)}; }
  __device__ static void finish(const S& a, const RParams&, void* out, int64_t oi) {
    store(static_cast<T*>(out) + oi, isinf(a.m) ? a.m : a.m + ewmath::log(a.s));
  }
};

// Reduce a state over a group of G threads (G = 32: one warp; G = 256: the whole block). Every
// thread of the group returns the result. Must be called by all threads of the block.
template <typename Fam, int G>
__device__ __forceinline__ typename Fam::S group_reduce(typename Fam::S st, const RParams& p, typename Fam::S* smem) {
  using S = typename Fam::S;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) Fam::merge(st, Fam::shfl(st, o), p);
  if constexpr (G == 32) {
    return st;
  } else {
    static_assert(G == kBlock, "group is a warp or the block");
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();  // smem may still be read by the previous call
    if (lane == 0) smem[warp] = st;
    __syncthreads();
    S r = lane < G / 32 ? smem[lane] : Fam::init();
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) Fam::merge(r, Fam::shfl(r, o), p);
    return r;
  }
}

// ---------------------------------------------------------------- reduce kernels
template <typename Fam> struct Adder {  // ArgFam's add needs the direction; the others do not
  template <typename S, typename F> __device__ static void run(S& st, F x, int64_t i, const RParams&) {
    Fam::add(st, x, i);
  }
};
template <typename T> struct Adder<ArgFam<T>> {
  template <typename S, typename F> __device__ static void run(S& st, F x, int64_t i, const RParams& p) {
    ArgFam<T>::add(st, x, i, p.op == Max || p.op == Argmax);
  }
};

// inner == 1: item = (row, chunk); G threads per item, 256 / G items per block.
template <typename T, typename Fam, int G> __global__ void __launch_bounds__(kBlock)
    reduce_rows_kernel(const T* x, int64_t outer, int64_t R, int64_t chunk, int splits, RParams p, void* out,
                       typename Fam::S* partial) {
  using S = typename Fam::S;
  using Add = Adder<Fam>;
  constexpr int kItems = kBlock / G;
  __shared__ S smem[kBlock / 32];
  const int lane = threadIdx.x % G, sub = threadIdx.x / G;
  const int64_t items = outer * splits;
  for (int64_t base = (int64_t)blockIdx.x * kItems; base < items; base += (int64_t)gridDim.x * kItems) {
    const int64_t item = base + sub;
    S st = Fam::init();
    if (item < items) {
      const int64_t row = item / splits, b = (item % splits) * chunk, e = min(R, b + chunk);
      const T* xr = x + row * R;
      int64_t i = b + lane;
      for (; i + 3 * G < e; i += 4 * G) {
        acc_t<T> v0 = load(xr + i), v1 = load(xr + i + G), v2 = load(xr + i + 2 * G), v3 = load(xr + i + 3 * G);
        Add::run(st, v0, i, p);
        Add::run(st, v1, i + G, p);
        Add::run(st, v2, i + 2 * G, p);
        Add::run(st, v3, i + 3 * G, p);
      }
      for (; i < e; i += G) Add::run(st, load(xr + i), i, p);
    }
    st = group_reduce<Fam, G>(st, p, smem);
    if (lane == 0 && item < items) {
      if (splits == 1)
        Fam::finish(st, p, out, item);
      else
        partial[item] = st;
    }
  }
}

// inner > 1: item = (outer, 32-column tile, chunk); thread (tx, ty) reads column tx, rows ty mod 8.
template <typename T, typename Fam> __global__ void __launch_bounds__(kBlock)
    reduce_cols_kernel(const T* x, int64_t outer, int64_t R, int64_t inner, int64_t chunk, int splits, RParams p,
                       void* out, typename Fam::S* partial) {
  using S = typename Fam::S;
  using Add = Adder<Fam>;
  __shared__ S tile[8][32];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t tiles = (inner + 31) / 32, items = outer * tiles * splits;
  for (int64_t item = blockIdx.x; item < items; item += gridDim.x) {
    const int64_t c = item % splits, ot = item / splits, o = ot / tiles, col = (ot % tiles) * 32 + tx;
    S st = Fam::init();
    if (col < inner) {
      const int64_t b = c * chunk, e = min(R, b + chunk);
      const T* xc = x + o * R * inner + col;
      int64_t r = b + ty;
      for (; r + 24 < e; r += 32) {
        acc_t<T> v0 = load(xc + r * inner), v1 = load(xc + (r + 8) * inner), v2 = load(xc + (r + 16) * inner),
                 v3 = load(xc + (r + 24) * inner);
        Add::run(st, v0, r, p);
        Add::run(st, v1, r + 8, p);
        Add::run(st, v2, r + 16, p);
        Add::run(st, v3, r + 24, p);
      }
      for (; r < e; r += 8) Add::run(st, load(xc + r * inner), r, p);
    }
    tile[ty][tx] = st;
    __syncthreads();
    if (ty == 0 && col < inner) {
#pragma unroll
      for (int k = 1; k < 8; k++) Fam::merge(st, tile[k][tx], p);
      const int64_t oi = o * inner + col;
      if (splits == 1)
        Fam::finish(st, p, out, oi);
      else
        partial[oi * splits + c] = st;
    }
    __syncthreads();
  }
}

template <typename Fam> __global__ void __launch_bounds__(kBlock)
    reduce_finish_kernel(const typename Fam::S* partial, int64_t nout, int splits, RParams p, void* out) {
  for (int64_t oi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; oi < nout; oi += (int64_t)gridDim.x * blockDim.x) {
    typename Fam::S st = partial[oi * splits];
    for (int c = 1; c < splits; c++) Fam::merge(st, partial[oi * splits + c], p);
    Fam::finish(st, p, out, oi);
  }
}

template <typename T> __global__ void fill_value_kernel(T* out, int64_t n, double v) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    store(out + i, v);
}

// Splits of R so that at least ~4 blocks per SM are busy, each chunk >= min_chunk elements.
void plan_split(int64_t blocks, int64_t R, int64_t min_chunk, int64_t& chunk, int& splits) {
  int64_t want = 4 * (int64_t)num_sms();
  int64_t s = 1;
  if (blocks < want && R >= 2 * min_chunk) s = std::min<int64_t>({(want + blocks - 1) / blocks, R / min_chunk, 1024});
  s = std::max<int64_t>(s, 1);
  chunk = (R + s - 1) / s;
  splits = (int)((R + chunk - 1) / chunk);
}

template <typename T, typename Fam> void run_reduce(const KernelArgs& a, const TensorArg& out, const TensorArg& x,
                                                    const RParams& p, int64_t outer, int64_t R, int64_t inner) {
  using S = typename Fam::S;
  const T* px = reinterpret_cast<const T*>(x.bytes());
  void* po = out.bytes();
  cudaStream_t st = stream();
  int64_t nout = outer * inner, chunk;
  int splits;
  Scratch partial;
  if (inner == 1) {
    const bool warp = R <= 1024;
    int64_t blocks = warp ? (outer + 7) / 8 : outer;
    plan_split(blocks, R, warp ? 1024 : 8192, chunk, splits);
    if (splits > 1) partial = Scratch(sizeof(S) * nout * splits);
    int64_t items = outer * splits;
    unsigned grid = (unsigned)std::min<int64_t>((items + (warp ? 7 : 0)) / (warp ? 8 : 1), 1 << 30);
    if (warp)
      launch(reduce_rows_kernel<T, Fam, 32>, grid, kBlock, 0, st, px, outer, R, chunk, splits, p, po, partial.as<S>());
    else
      launch(reduce_rows_kernel<T, Fam, kBlock>, grid, kBlock, 0, st, px, outer, R, chunk, splits, p, po,
             partial.as<S>());
  } else {
    int64_t blocks = outer * ((inner + 31) / 32);
    plan_split(blocks, R, 64, chunk, splits);
    if (splits > 1) partial = Scratch(sizeof(S) * nout * splits);
    unsigned grid = (unsigned)std::min<int64_t>(blocks * splits, 1 << 30);
    launch(reduce_cols_kernel<T, Fam>, grid, kBlock, 0, st, px, outer, R, inner, chunk, splits, p, po, partial.as<S>());
  }
  check_launch(a);
  if (splits > 1) {
    launch(reduce_finish_kernel<Fam>, grid_for(nout), kBlock, 0, st, partial.as<S>(), nout, splits, p, po);
    check_launch(a);
  }
}

// reduce(out, x, op, R, correction?, inner?)
void reduce_kernel(const KernelArgs& a) {
  const ReduceArgs A = parse_reduce(a);
  const TensorArg &out = *A.out, &x = *A.x;
  const int op = A.op;
  const int64_t n = A.n, outer_inner = A.outer_inner;
  const double correction = A.correction;
  if (n == 0) {
    if (outer_inner == 0) return;
    GPU_DISPATCH_ALL(a, out.dtype, T, {
      launch(fill_value_kernel<T>, grid_for(outer_inner), kBlock, 0, stream(), reinterpret_cast<T*>(out.bytes()),
             outer_inner, op == Prod ? 1.0 : 0.0);
    });
    check_launch(a);
    return;
  }
  const int64_t outer = A.outer, inner = A.inner;
  if (outer_inner == 0) return;
  RParams p{op, n, correction};
  GPU_DISPATCH_ALL(a, x.dtype, T, {
    if constexpr (!std::is_same_v<T, bool>) {
      switch (op) {
        case Sum:
        case Mean:
          run_reduce<T, SumFam<T>>(a, out, x, p, outer, n, inner);
          break;
        case Prod:
          run_reduce<T, ProdFam<T>>(a, out, x, p, outer, n, inner);
          break;
        case Max:
        case Min:
        case Argmax:
        case Argmin:
          run_reduce<T, ArgFam<T>>(a, out, x, p, outer, n, inner);
          break;
        case Var:
          if constexpr (std::is_floating_point_v<acc_t<T>>) run_reduce<T, VarFam<T>>(a, out, x, p, outer, n, inner);
          break;
        case Lse:
          if constexpr (std::is_floating_point_v<acc_t<T>>) run_reduce<T, LseFam<T>>(a, out, x, p, outer, n, inner);
          break;
      }
    }
  });
}

// ---------------------------------------------------------------- softmax
// Rows of length C: G threads per row, V-element vector loads when every row is 16-byte aligned.
template <typename T, int V> __device__ __forceinline__ Pack<T, V> load_pack(const T* row, int64_t j) {
  return reinterpret_cast<const Pack<T, V>*>(row)[j];
}

template <typename T, int G, int V> __global__ void __launch_bounds__(kBlock)
    softmax_fwd_kernel_dev(T* y, const T* x, int64_t N, int64_t C, bool logsm) {
  using Fam = LseFam<T>;
  using F = acc_t<T>;
  using S = typename Fam::S;
  constexpr int kItems = kBlock / G;
  __shared__ S smem[kBlock / 32];
  const RParams p{Lse, C, 0.0};
  const int lane = threadIdx.x % G, sub = threadIdx.x / G;
  const int64_t nv = C / V;
  for (int64_t base = (int64_t)blockIdx.x * kItems; base < N; base += (int64_t)gridDim.x * kItems) {
    const int64_t row = base + sub;
    S st = Fam::init();
    if (row < N)
      for (int64_t j = lane; j < nv; j += G) {
        Pack<T, V> pk = load_pack<T, V>(x + row * C, j);
#pragma unroll
        for (int k = 0; k < V; k++) Fam::add(st, to_acc<T>(pk.v[k]));
      }
    st = group_reduce<Fam, G>(st, p, smem);
    if (row >= N) continue;
    F m = st.m, s = isinf(st.m) ? F(NAN) : st.s;  // CPU: exp(inf - inf) makes such rows NaN
    F lse = m + ewmath::log(s), inv = F(1) / s;
    for (int64_t j = lane; j < nv; j += G) {
      Pack<T, V> pk = load_pack<T, V>(x + row * C, j), r;
#pragma unroll
      for (int k = 0; k < V; k++) {
        F v = to_acc<T>(pk.v[k]);
        r.v[k] = from_acc<T>(logsm ? v - lse : ewmath::exp(v - m) * inv);
      }
      reinterpret_cast<Pack<T, V>*>(y + row * C)[j] = r;
    }
  }
}

template <typename T, int G, int V> __global__ void __launch_bounds__(kBlock)
    softmax_bwd_kernel_dev(T* dx, const T* y, const T* dy, int64_t N, int64_t C, bool logsm) {
  using Fam = SumFam<T>;
  using F = acc_t<T>;
  using S = typename Fam::S;
  constexpr int kItems = kBlock / G;
  __shared__ S smem[kBlock / 32];
  const RParams p{Sum, C, 0.0};
  const int lane = threadIdx.x % G, sub = threadIdx.x / G;
  const int64_t nv = C / V;
  for (int64_t base = (int64_t)blockIdx.x * kItems; base < N; base += (int64_t)gridDim.x * kItems) {
    const int64_t row = base + sub;
    S st = Fam::init();
    if (row < N)
      for (int64_t j = lane; j < nv; j += G) {
        Pack<T, V> d = load_pack<T, V>(dy + row * C, j), yy = load_pack<T, V>(y + row * C, j);
#pragma unroll
        for (int k = 0; k < V; k++) st.s += logsm ? to_acc<T>(d.v[k]) : to_acc<T>(d.v[k]) * to_acc<T>(yy.v[k]);
      }
    st = group_reduce<Fam, G>(st, p, smem);
    if (row >= N) continue;
    const F s = st.s;
    for (int64_t j = lane; j < nv; j += G) {
      Pack<T, V> d = load_pack<T, V>(dy + row * C, j), yy = load_pack<T, V>(y + row * C, j), r;
#pragma unroll
      for (int k = 0; k < V; k++) {
        F dv = to_acc<T>(d.v[k]), yv = to_acc<T>(yy.v[k]);
        r.v[k] = from_acc<T>(logsm ? dv - ewmath::exp(yv) * s : yv * (dv - s));
      }
      reinterpret_cast<Pack<T, V>*>(dx + row * C)[j] = r;
    }
  }
}

// Picks G (warp or block per row) and V (vector width) for rows of C elements at these pointers.
template <typename T, typename Launch>
void launch_rows(int64_t N, int64_t C, std::initializer_list<const void*> ptrs, Launch&& launch) {
  constexpr int VV = int(16 / sizeof(T));
  bool vec = C % VV == 0;
  for (const void* q : ptrs) vec = vec && aligned_to(q, 16);
  const bool warp = C <= 1024;
  unsigned grid = (unsigned)std::min<int64_t>(warp ? (N + 7) / 8 : N, (int64_t)num_sms() * 64);
  if (warp) {
    if (vec)
      launch(std::integral_constant<int, 32>(), std::integral_constant<int, VV>(), grid);
    else
      launch(std::integral_constant<int, 32>(), std::integral_constant<int, 1>(), grid);
  } else {
    if (vec)
      launch(std::integral_constant<int, kBlock>(), std::integral_constant<int, VV>(), grid);
    else
      launch(std::integral_constant<int, kBlock>(), std::integral_constant<int, 1>(), grid);
  }
}

// softmax_fwd(y, x, log)
void softmax_fwd_kernel(const KernelArgs& a) {
  const SoftmaxFwdArgs A = parse_softmax_fwd(a);
  const TensorArg &y = *A.y, &x = *A.x;
  const bool logsm = A.log;
  const int64_t C = A.C, N = A.N;
  if (N == 0 || C == 0) return;  // no element to write
  GPU_DISPATCH_FLOAT(a, x.dtype, T, {
    T* py = reinterpret_cast<T*>(y.bytes());
    const T* px = reinterpret_cast<const T*>(x.bytes());
    launch_rows<T>(N, C, {py, px}, [&](auto g, auto v, unsigned grid) {
      launch(softmax_fwd_kernel_dev<T, decltype(g)::value, decltype(v)::value>, grid, kBlock, 0, stream(), py, px, N, C,
             logsm);
    });
  });
  check_launch(a);
}

// softmax_bwd(dx, y, dy, log): softmax: dx = y * (dy - sum(dy*y)); log: dx = dy - exp(y) * sum(dy)
void softmax_bwd_kernel(const KernelArgs& a) {
  const SoftmaxBwdArgs A = parse_softmax_bwd(a);
  const TensorArg &dx = *A.dx, &y = *A.y, &dy = *A.dy;
  const bool logsm = A.log;
  const int64_t C = A.C, N = A.N;
  if (N == 0 || C == 0) return;  // no element to write
  GPU_DISPATCH_FLOAT(a, y.dtype, T, {
    T* pdx = reinterpret_cast<T*>(dx.bytes());
    const T* py = reinterpret_cast<const T*>(y.bytes());
    const T* pdy = reinterpret_cast<const T*>(dy.bytes());
    launch_rows<T>(N, C, {pdx, py, pdy}, [&](auto g, auto v, unsigned grid) {
      launch(softmax_bwd_kernel_dev<T, decltype(g)::value, decltype(v)::value>, grid, kBlock, 0, stream(), pdx, py, pdy,
             N, C, logsm);
    });
  });
  check_launch(a);
}

// ---------------------------------------------------------------- cross-entropy
__device__ __forceinline__ int64_t target_at(const void* t, bool i64, int64_t i) {
  return i64 ? static_cast<const int64_t*>(t)[i] : int64_t(static_cast<const int32_t*>(t)[i]);
}

template <typename T, int G, int V> __global__ void __launch_bounds__(kBlock)
    ce_fwd_kernel(Stat loss, Stat lse, const T* x, const void* target, bool t64, int64_t N, int64_t C, int64_t ignore) {
  using Fam = LseFam<T>;
  using F = acc_t<T>;
  using S = typename Fam::S;
  constexpr int kItems = kBlock / G;
  __shared__ S smem[kBlock / 32];
  const RParams p{Lse, C, 0.0};
  const int lane = threadIdx.x % G, sub = threadIdx.x / G;
  const int64_t nv = C / V;
  for (int64_t base = (int64_t)blockIdx.x * kItems; base < N; base += (int64_t)gridDim.x * kItems) {
    const int64_t row = base + sub;
    S st = Fam::init();
    if (row < N) {
      int64_t j = lane;
      for (; j + G < nv; j += 2 * G) {  // two vectors in flight per thread
        Pack<T, V> p0 = load_pack<T, V>(x + row * C, j), p1 = load_pack<T, V>(x + row * C, j + G);
#pragma unroll
        for (int k = 0; k < V; k++) Fam::add(st, to_acc<T>(p0.v[k]));
#pragma unroll
        for (int k = 0; k < V; k++) Fam::add(st, to_acc<T>(p1.v[k]));
      }
      for (; j < nv; j += G) {
        Pack<T, V> p0 = load_pack<T, V>(x + row * C, j);
#pragma unroll
        for (int k = 0; k < V; k++) Fam::add(st, to_acc<T>(p0.v[k]));
      }
    }
    st = group_reduce<Fam, G>(st, p, smem);
    if (row < N && lane == 0) {
      F s = isinf(st.m) ? F(NAN) : st.s;  // CPU: sum of exp(x - m) is NaN when m = +-inf
      F l = st.m + ewmath::log(s);
      int64_t t = target_at(target, t64, row);
      lse.set(row, double(l));
      loss.set(row, t == ignore ? 0.0 : double(l - load(x + row * C + t)));
    }
  }
}

// grid.x: chunks of kBlock * V columns, grid.y: rows (grid-stride over both).
template <typename T, int V> __global__ void __launch_bounds__(kBlock)
    ce_bwd_kernel(T* dl, const T* x, const void* target, bool t64, Stat lse, Stat dloss, int64_t N, int64_t C,
                  int64_t ignore) {
  using F = acc_t<T>;
  const int64_t nv = C / V;
  for (int64_t row = blockIdx.y; row < N; row += gridDim.y) {
    const int64_t t = target_at(target, t64, row);
    const bool ign = t == ignore;
    const F l = F(lse.get(row)), g = F(dloss.get(row));
    for (int64_t j = blockIdx.x * (int64_t)kBlock + threadIdx.x; j < nv; j += (int64_t)gridDim.x * kBlock) {
      Pack<T, V> r;
      if (ign) {
#pragma unroll
        for (int k = 0; k < V; k++) r.v[k] = from_acc<T>(F(0));
      } else {
        Pack<T, V> pk = load_pack<T, V>(x + row * C, j);
#pragma unroll
        for (int k = 0; k < V; k++) {
          int64_t col = j * V + k;
          r.v[k] = from_acc<T>((ewmath::exp(to_acc<T>(pk.v[k]) - l) - F(col == t)) * g);
        }
      }
      reinterpret_cast<Pack<T, V>*>(dl + row * C)[j] = r;
    }
  }
}

// cross_entropy_fwd(loss[N], lse[N], logits[N,V], target[N], ignore_index)
void cross_entropy_fwd_kernel(const KernelArgs& a) {
  const CrossEntropyFwdArgs A = parse_cross_entropy_fwd(a);
  const TensorArg &loss = *A.loss, &lse = *A.lse, &logits = *A.logits, &target = *A.target;
  const int64_t ignore = A.ignore;
  const int64_t N = A.N, C = A.V;
  if (N == 0) return;
  const bool t64 = target.dtype == DType::I64;
  int64_t bad = 0;
  if (first_bad_index(target.bytes(), t64, N, C, true, ignore, &bad) >= 0) a.fail(ce_target_range_message(bad, C));
  Stat sl{loss.bytes(), loss.dtype == DType::F64}, ss{lse.bytes(), lse.dtype == DType::F64};
  GPU_DISPATCH_FLOAT(a, logits.dtype, T, {
    const T* px = reinterpret_cast<const T*>(logits.bytes());
    const void* pt = target.bytes();
    launch_rows<T>(N, C, {px}, [&](auto g, auto v, unsigned grid) {
      launch(ce_fwd_kernel<T, decltype(g)::value, decltype(v)::value>, grid, kBlock, 0, stream(), sl, ss, px, pt, t64,
             N, C, ignore);
    });
  });
  check_launch(a);
}

// cross_entropy_bwd(dlogits[N,V], logits, target, lse, dloss[N], ignore_index)
void cross_entropy_bwd_kernel(const KernelArgs& a) {
  const CrossEntropyBwdArgs A = parse_cross_entropy_bwd(a);
  const TensorArg &dl = *A.dlogits, &logits = *A.logits, &target = *A.target, &lse = *A.lse, &dloss = *A.dloss;
  const int64_t ignore = A.ignore;
  const int64_t N = A.N, C = A.V;
  if (N == 0 || C == 0) return;
  const bool t64 = target.dtype == DType::I64;
  if (first_bad_index(target.bytes(), t64, N, C, true, ignore, nullptr) >= 0) a.fail("target out of range");
  Stat sl{lse.bytes(), lse.dtype == DType::F64}, sd{dloss.bytes(), dloss.dtype == DType::F64};
  GPU_DISPATCH_FLOAT(a, logits.dtype, T, {
    T* pd = reinterpret_cast<T*>(dl.bytes());
    const T* px = reinterpret_cast<const T*>(logits.bytes());
    const void* pt = target.bytes();
    constexpr int VV = int(16 / sizeof(T));
    const bool vec = C % VV == 0 && aligned_to(pd, 16) && aligned_to(px, 16);
    const int64_t nv = vec ? C / VV : C;
    dim3 grid((unsigned)std::min<int64_t>((nv + kBlock - 1) / kBlock, 1024), (unsigned)std::min<int64_t>(N, 65535));
    if (vec)
      launch(ce_bwd_kernel<T, VV>, grid, kBlock, 0, stream(), pd, px, pt, t64, sl, sd, N, C, ignore);
    else
      launch(ce_bwd_kernel<T, 1>, grid, kBlock, 0, stream(), pd, px, pt, t64, sl, sd, N, C, ignore);
  });
  check_launch(a);
}

REGISTER_KERNEL("reduce", Device::CUDA, reduce_kernel);
REGISTER_KERNEL("softmax_fwd", Device::CUDA, softmax_fwd_kernel);
REGISTER_KERNEL("softmax_bwd", Device::CUDA, softmax_bwd_kernel);
REGISTER_KERNEL("cross_entropy_fwd", Device::CUDA, cross_entropy_fwd_kernel);
REGISTER_KERNEL("cross_entropy_bwd", Device::CUDA, cross_entropy_bwd_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
