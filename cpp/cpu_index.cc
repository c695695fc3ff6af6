// cpu_index.cc — indexing (index_select / index_add, gather / scatter_add), rotary embedding and
// the fused AdamW step on the CPU.
//
// Index kernels see contiguous tensors as [outer, n, inner] around `dim`, so embedding lookup is
// index_select on dim 0 and its backward is index_add. Every index is range-checked before any
// write. index_add parallelises over `inner` columns so two threads never add into one element.
#include <cmath>

#include "cpu_common.h"
#include "kernel_checks.h"

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
  parallel_for(outer * m, std::max<int64_t>(1, 4096 / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      int64_t o = r / m, j = r % m;
      std::memcpy(out.bytes() + (size_t)r * inner * item, x.bytes() + (size_t)(o * n + idx_at(idx, j)) * inner * item, inner * item);
    }
  });
}

// index_add(out, idx, src, dim): out[o, idx[j], i] += src[o, j, i]
void index_add_kernel(const KernelArgs& a) {
  const IndexRowsArgs A = parse_index_add(a, check_index_range);
  const TensorArg &out = *A.out, &idx = *A.idx, &src = *A.src;
  const int64_t outer = A.outer, inner = A.inner, n = A.n, m = A.m;
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

// rope(out, x[B,H,T,D], cos[B',T,D], sin[B',T,D]): out = x*cos + rotate_half(x)*sin, where
// rotate_half(x) = cat(-x[D/2:], x[:D/2]). x may be strided (last stride 1); cos/sin contiguous.
void rope_kernel(const KernelArgs& a) {
  const RopeArgs A = parse_rope(a);
  const TensorArg &out = *A.out, &x = *A.x, &cs = *A.cos, &sn = *A.sin;
  const int64_t B = A.B, H = A.H, T = A.T, D = A.D;
  const int64_t half = D / 2;
  const bool per_batch = A.per_batch;
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T_, {
    using F = acc_t<T_>;
    parallel_for(B * H * T, 64, [&](int64_t b0, int64_t e0) {
      for (int64_t r = b0; r < e0; r++) {
        int64_t b = r / (H * T), h = (r / T) % H, t = r % T;
        const T_* px = x.data<T_>() + b * x.strides[0] + h * x.strides[1] + t * x.strides[2];
        const T_* pc = cs.data<T_>() + ((per_batch ? b : 0) * T + t) * D;
        const T_* ps = sn.data<T_>() + ((per_batch ? b : 0) * T + t) * D;
        T_* po = out.data<T_>() + r * D;
        for (int64_t i = 0; i < half; i++) {
          F x1 = load(px + i), x2 = load(px + i + half);
          store(po + i, x1 * F(load(pc + i)) - x2 * F(load(ps + i)));
          store(po + i + half, x2 * F(load(pc + i + half)) + x1 * F(load(ps + i + half)));
        }
      }
    });
  });
}

// adamw(param, grad, m, v, master?, lr, beta1, beta2, eps, weight_decay, step)
void adamw_kernel(const KernelArgs& a) {
  const AdamwArgs A = parse_adamw(a);
  const TensorArg &p = *A.p, &g = *A.g, &m = *A.m, &v = *A.v;
  const TensorArg* master = A.master;
  const double lr = A.lr, b1 = A.b1, b2 = A.b2, eps = A.eps, wd = A.wd;
  const int64_t step = A.step, n = A.n;
  double bc1 = 1.0 - std::pow(b1, double(step)), bc2 = 1.0 - std::pow(b2, double(step));
  LLAVA_DISPATCH_FLOAT(a, p.dtype, T, {
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    T* pp = p.data<T>();
    const T* pg = g.data<T>();
    S* pm = m.data<S>();
    S* pv = v.data<S>();
    float* pw = master ? master->data<float>() : nullptr;
    parallel_for(n, 8192, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        S w = pw ? S(pw[i]) : S(load(pp + i));
        S gi = S(load(pg + i));
        w -= S(lr * wd) * w;
        S mi = S(b1) * pm[i] + S(1 - b1) * gi;
        S vi = S(b2) * pv[i] + S(1 - b2) * gi * gi;
        pm[i] = mi;
        pv[i] = vi;
        w -= S(lr) * (mi / S(bc1)) / (std::sqrt(vi / S(bc2)) + S(eps));
        if (pw) pw[i] = float(w);
        store(pp + i, w);
      }
    });
  });
}

REGISTER_KERNEL("index_select", Device::CPU, index_select_kernel);
REGISTER_KERNEL("index_add", Device::CPU, index_add_kernel);
REGISTER_KERNEL("gather", Device::CPU, gather_kernel);
REGISTER_KERNEL("scatter_add", Device::CPU, scatter_add_kernel);
REGISTER_KERNEL("rope", Device::CPU, rope_kernel);
REGISTER_KERNEL("adamw", Device::CPU, adamw_kernel);

}  // namespace
}  // namespace llava
