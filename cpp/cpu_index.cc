// cpu_index.cc — indexing on the CPU: index_select / index_add and gather / scatter_add
// (CUDA twin: cuda/index.cu).
//
// Index kernels see contiguous tensors as [outer, n, inner] around `dim`, so embedding lookup is
// index_select on dim 0 and its backward is index_add. Every index is range-checked before any
// write. index_add parallelises over `inner` columns so two threads never add into one element.
#include <cmath>

#include "cpu_common.h"
#include "kernel_checks_tensor.h"

namespace llava {
namespace {

inline int64_t idx_at(const TensorArg& t, int64_t i) {
  return t.dtype == DType::I64 ? t.data<int64_t>()[i] : int64_t(t.data<int32_t>()[i]);
}

// Every index in [0, limit), checked before any write.
void check_index_range(const KernelArgs& a, const TensorArg& idx, int64_t limit) {
  int64_t n = idx.numel();
  for (int64_t i = 0; i < n; i++) {
    int64_t v = idx_at(idx, i);
    if (v < 0 || v >= limit) checks::index_range_fail(a, v, limit);
  }
}

// index_select(out, x, idx, dim)
void index_select_kernel(const KernelArgs& a) {
  const IndexRowsArgs A = parse_index_select(a, check_index_range);
  const TensorArg &out = *A.out, &x = *A.src, &idx = *A.idx;
  const int64_t outer = A.outer, inner = A.inner, n = A.n, m = A.m;
  size_t item = dtype_size(x.dtype);
  if (out.numel() == 0) return;  // indices were range-checked above; no row to copy
  parallel_for(outer * m, std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      int64_t o = r / m, j = r % m;
      std::memcpy(out.bytes() + (size_t)r * inner * item, x.bytes() + (size_t)(o * n + idx_at(idx, j)) * inner * item,
                  inner * item);
    }
  });
}

// index_add(out, idx, src, dim): out[o, idx[j], i] += src[o, j, i]
void index_add_kernel(const KernelArgs& a) {
  const IndexRowsArgs A = parse_index_add(a, check_index_range);
  const TensorArg &out = *A.out, &idx = *A.idx, &src = *A.src;
  const int64_t outer = A.outer, inner = A.inner, n = A.n, m = A.m;
  if (src.numel() == 0) return;  // nothing to add (and no loop over a huge `outer` with m or inner 0)
  LLAVA_DISPATCH_FLOAT(a, out.dtype, T, {
    T* po = out.data<T>();
    const T* ps = src.data<T>();
    // Columns are disjoint across threads; rows that repeat an index are summed in order.
    parallel_for(inner, 64, [&](int64_t b, int64_t e) {
      for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < m; j++) {
          T* dst = po + (o * n + idx_at(idx, j)) * inner;
          const T* s = ps + (o * m + j) * inner;
          for (int64_t i = b; i < e; i++) store(dst + i, load(dst + i) + load(s + i));
        }
    });
  });
}

// gather(out, x, idx, dim): out[...j...] = x[...idx[...j...]...]; all contiguous, idx shaped like out
void gather_kernel(const KernelArgs& a) {
  const GatherArgs A = parse_gather(a, check_index_range);
  const TensorArg &out = *A.out, &x = *A.src, &idx = *A.idx;
  const int64_t dim = A.dim;
  int64_t n = idx.numel();
  size_t item = dtype_size(x.dtype);
  parallel_for(n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      int64_t rem = i, off = 0, stride = 1;
      for (int d = idx.ndim - 1; d >= 0; d--) {
        int64_t c = rem % idx.shape[d];
        rem /= idx.shape[d];
        off += (d == dim ? idx_at(idx, i) : c) * stride;
        stride *= x.shape[d];
      }
      std::memcpy(out.bytes() + i * item, x.bytes() + off * item, item);
    }
  });
}

// scatter_add(out, idx, src, dim): out[...idx[...j...]...] += src[...j...] (serial: indices may repeat)
void scatter_add_kernel(const KernelArgs& a) {
  const GatherArgs A = parse_scatter_add(a, check_index_range);
  const TensorArg &out = *A.out, &idx = *A.idx, &src = *A.src;
  const int64_t dim = A.dim;
  LLAVA_DISPATCH_FLOAT(a, out.dtype, T, {
    T* po = out.data<T>();
    const T* ps = src.data<T>();
    int64_t n = idx.numel();
    for (int64_t i = 0; i < n; i++) {
      int64_t rem = i, off = 0, stride = 1;
      for (int d = idx.ndim - 1; d >= 0; d--) {
        int64_t c = rem % idx.shape[d];
        rem /= idx.shape[d];
        off += (d == dim ? idx_at(idx, i) : c) * stride;
        stride *= out.shape[d];
      }
      store(po + off, load(po + off) + load(ps + i));
    }
  });
}

REGISTER_KERNEL("index_select", Device::CPU, index_select_kernel);
REGISTER_KERNEL("index_add", Device::CPU, index_add_kernel);
REGISTER_KERNEL("gather", Device::CPU, gather_kernel);
REGISTER_KERNEL("scatter_add", Device::CPU, scatter_add_kernel);

}  // namespace
}  // namespace llava
