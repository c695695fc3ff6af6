// index.cu — index_select / index_add and gather / scatter_add on the GPU; same names, arguments,
// checks and formulas as cpp/cpu_index.cc.
//
// Index kernels see contiguous tensors as [outer, n, inner] around `dim` (embedding lookup is
// index_select on dim 0; its backward is index_add). Every index is range-checked on the device
// BEFORE the main kernel runs (first_bad_index: one small kernel and a stream sync), so a bad index
// fails with the CPU's message and never becomes an illegal address.
//   * index_select / gather are raw copies: index_select moves each selected row in the widest unit
//     (16/8/4/2/1 bytes) that the row length and both base pointers allow.
//   * index_add / scatter_add use atomicAdd in the destination dtype: f32 and f64 natively, bf16/f16
//     with the 16-bit atomics (native on sm_90, a CAS loop on sm_80), in pairs (__nv_bfloat162 /
//     __half2) when rows allow. Each add rounds to the storage dtype — the same rounding the CPU's
//     sequential load-add-store does — but the order of repeated indices is not fixed, so results
//     with repeated indices can differ from the CPU (and between runs) by rounding. We chose this
//     over an f32 scratch copy of `out` because `out` is typically a vocab x C embedding gradient
//     (512 MB in f32 for LLaMA-7B); see the comment at index_add_kernel.
#include <cmath>

#include "cuda_common.cuh"
#include "kernel_checks_tensor.h"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;

__device__ __forceinline__ int64_t idx_at(const void* p, bool i64, int64_t i) {
  return i64 ? static_cast<const int64_t*>(p)[i] : int64_t(static_cast<const int32_t*>(p)[i]);
}

// Every index in [0, limit), checked on the device (one small kernel and a sync) before any write.
void check_index_range(const KernelArgs& a, const TensorArg& idx, int64_t limit) {
  int64_t bad = 0;
  if (first_bad_index(idx.bytes(), idx.dtype == DType::I64, idx.numel(), limit, false, 0, &bad) >= 0)
    checks::index_range_fail(a, bad, limit);
}

// ---------------------------------------------------------------- index_select
// Unit e of the output: row r = e / row_u (r = o * m + j), column c; source row o * n + idx[j].
template <typename U> __global__ void __launch_bounds__(kBlock)
    index_select_dev(U* out, const U* x, const void* idx, bool i64, int64_t total, int64_t m, int64_t n,
                     int64_t row_u) {
  for (int64_t e = gtid(); e < total; e += gstride()) {
    const int64_t r = e / row_u, c = e - r * row_u, o = r / m, j = r - o * m;
    out[e] = x[(o * n + idx_at(idx, i64, j)) * row_u + c];
  }
}

// index_select(out, x, idx, dim)
void index_select_kernel(const KernelArgs& a) {
  const IndexRowsArgs A = parse_index_select(a, check_index_range);
  const TensorArg &out = *A.out, &x = *A.src, &idx = *A.idx;
  const int64_t outer = A.outer, inner = A.inner, n = A.n, m = A.m;
  const size_t row_bytes = (size_t)inner * dtype_size(x.dtype);
  const int64_t total_bytes = outer * m * (int64_t)row_bytes;
  if (total_bytes == 0) return;
  size_t unit = 16;
  while (unit > 1 && (row_bytes % unit || !aligned_to(out.bytes(), unit) || !aligned_to(x.bytes(), unit))) unit /= 2;
  const int64_t row_u = (int64_t)(row_bytes / unit), total = total_bytes / (int64_t)unit;
  const bool i64 = idx.dtype == DType::I64;
  cudaStream_t s = stream();
  switch (unit) {
#define LLAVA_SEL(BYTES, U)                                                                       \
  case BYTES:                                                                                     \
    launch(index_select_dev<U>, grid_for(total), kBlock, 0, s, reinterpret_cast<U*>(out.bytes()), \
           reinterpret_cast<const U*>(x.bytes()), idx.bytes(), i64, total, m, n, row_u);          \
    break;
    LLAVA_SEL(16, uint4)
    LLAVA_SEL(8, unsigned long long)
    LLAVA_SEL(4, uint32_t)
    LLAVA_SEL(2, uint16_t)
    LLAVA_SEL(1, uint8_t)
#undef LLAVA_SEL
  }
  check_launch(a);
}

// ---------------------------------------------------------------- atomic adds
template <typename T> __device__ __forceinline__ void atomic_add(T* p, T v) { atomicAdd(p, v); }
// Two neighbouring 16-bit elements at once (each half is atomic on its own).
__device__ __forceinline__ void atomic_add2(__nv_bfloat16* p, __nv_bfloat16 a, __nv_bfloat16 b) {
  atomicAdd(reinterpret_cast<__nv_bfloat162*>(p), __halves2bfloat162(a, b));
}
__device__ __forceinline__ void atomic_add2(__half* p, __half a, __half b) {
  atomicAdd(reinterpret_cast<__half2*>(p), __halves2half2(a, b));
}

// Element group e (P consecutive elements of one row) of src: src row r = o * m + j -> out row
// o * n + idx[j]. P = 2 only for 16-bit types with an even inner extent and aligned pointers.
template <typename T, int P> __global__ void __launch_bounds__(kBlock)
    index_add_dev(T* out, const T* src, const void* idx, bool i64, int64_t total, int64_t m, int64_t n,
                  int64_t inner_p) {
  for (int64_t e = gtid(); e < total; e += gstride()) {
    const int64_t r = e / inner_p, c = e - r * inner_p, o = r / m, j = r - o * m;
    T* dst = out + ((o * n + idx_at(idx, i64, j)) * inner_p + c) * P;
    if constexpr (P == 1)
      atomic_add(dst, src[e]);
    else
      atomic_add2(dst, src[2 * e], src[2 * e + 1]);
  }
}

template <typename T> void launch_index_add(const TensorArg& out, const TensorArg& src, const TensorArg& idx, bool i64,
                                            int64_t total, int64_t m, int64_t n, int64_t inner) {
  T* po = reinterpret_cast<T*>(out.bytes());
  const T* ps = reinterpret_cast<const T*>(src.bytes());
  cudaStream_t s = stream();
  if constexpr (sizeof(T) == 2) {
    if (inner % 2 == 0 && aligned_to(po, 4) && aligned_to(ps, 4)) {
      launch(index_add_dev<T, 2>, grid_for(total / 2), kBlock, 0, s, po, ps, idx.bytes(), i64, total / 2, m, n,
             inner / 2);
      return;
    }
  }
  launch(index_add_dev<T, 1>, grid_for(total), kBlock, 0, s, po, ps, idx.bytes(), i64, total, m, n, inner);
}

// index_add(out, idx, src, dim): out[o, idx[j], i] += src[o, j, i]. The CPU parallelises over
// columns and sums repeated indices in order; here every source element is one atomicAdd, which
// is the fast choice for embedding backward (few columns, many rows, mostly distinct indices) at
// the price of run-to-run rounding differences where indices repeat.
void index_add_kernel(const KernelArgs& a) {
  const IndexRowsArgs A = parse_index_add(a, check_index_range);
  const TensorArg &out = *A.out, &idx = *A.idx, &src = *A.src;
  const int64_t outer = A.outer, inner = A.inner, n = A.n, m = A.m;
  const int64_t total = outer * m * inner;
  if (total == 0) return;
  const bool i64 = idx.dtype == DType::I64;
  GPU_DISPATCH_FLOAT(a, out.dtype, T, launch_index_add<T>(out, src, idx, i64, total, m, n, inner));
  check_launch(a);
}

// ---------------------------------------------------------------- gather / scatter_add
// idx's shape and the contiguous strides of the indexed tensor (x for gather, out for scatter).
struct GatherGeo {
  int ndim, dim;
  int64_t shape[kMaxDims];
  int64_t strides[kMaxDims];
};

GatherGeo make_gather_geo(const TensorArg& idx, const TensorArg& target, int64_t dim) {
  GatherGeo g{};
  g.ndim = idx.ndim;
  g.dim = (int)dim;
  int64_t stride = 1;
  for (int d = idx.ndim - 1; d >= 0; d--) {
    g.shape[d] = idx.shape[d];
    g.strides[d] = stride;
    stride *= target.shape[d];
  }
  return g;
}

// Element offset in the indexed tensor of element i of idx (idx's own coordinate along dim
// replaced by the index value v).
__device__ __forceinline__ int64_t gather_offset(const GatherGeo& g, int64_t i, int64_t v) {
  int64_t off = 0;
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; d--) {
    if (d < g.ndim) {
      const int64_t c = i % g.shape[d];
      i /= g.shape[d];
      off += (d == g.dim ? v : c) * g.strides[d];
    }
  }
  return off;
}

template <typename U> __global__ void __launch_bounds__(kBlock)
    gather_dev(U* out, const U* x, const void* idx, bool i64, int64_t n, GatherGeo g) {
  for (int64_t i = gtid(); i < n; i += gstride()) out[i] = x[gather_offset(g, i, idx_at(idx, i64, i))];
}

template <typename T> __global__ void __launch_bounds__(kBlock)
    scatter_add_dev(T* out, const T* src, const void* idx, bool i64, int64_t n, GatherGeo g) {
  for (int64_t i = gtid(); i < n; i += gstride()) atomic_add(out + gather_offset(g, i, idx_at(idx, i64, i)), src[i]);
}

// gather(out, x, idx, dim): out[...j...] = x[...idx[...j...]...]; all contiguous, idx shaped like out
void gather_kernel(const KernelArgs& a) {
  const GatherArgs A = parse_gather(a, check_index_range);
  const TensorArg &out = *A.out, &x = *A.src, &idx = *A.idx;
  const int64_t dim = A.dim;
  const int64_t n = idx.numel();
  if (n == 0) return;
  GatherGeo g = make_gather_geo(idx, x, dim);
  const bool i64 = idx.dtype == DType::I64;
  GPU_DISPATCH_BITS(a, dtype_size(x.dtype), U, {
    launch(gather_dev<U>, grid_for(n), kBlock, 0, stream(), reinterpret_cast<U*>(out.bytes()),
           reinterpret_cast<const U*>(x.bytes()), idx.bytes(), i64, n, g);
  });
  check_launch(a);
}

// scatter_add(out, idx, src, dim): out[...idx[...j...]...] += src[...j...] (atomics: indices may repeat)
void scatter_add_kernel(const KernelArgs& a) {
  const GatherArgs A = parse_scatter_add(a, check_index_range);
  const TensorArg &out = *A.out, &idx = *A.idx, &src = *A.src;
  const int64_t dim = A.dim;
  const int64_t n = idx.numel();
  if (n == 0) return;
  GatherGeo g = make_gather_geo(idx, out, dim);
  const bool i64 = idx.dtype == DType::I64;
  GPU_DISPATCH_FLOAT(a, out.dtype, T, {
    launch(scatter_add_dev<T>, grid_for(n), kBlock, 0, stream(), reinterpret_cast<T*>(out.bytes()),
           reinterpret_cast<const T*>(src.bytes()), idx.bytes(), i64, n, g);
  });
  check_launch(a);
}

REGISTER_KERNEL("index_select", Device::CUDA, index_select_kernel);
REGISTER_KERNEL("index_add", Device::CUDA, index_add_kernel);
REGISTER_KERNEL("gather", Device::CUDA, gather_kernel);
REGISTER_KERNEL("scatter_add", Device::CUDA, scatter_add_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
