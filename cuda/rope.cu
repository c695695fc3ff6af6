// rope.cu — the `rope` kernel on the GPU: rotary position embedding, rotate-half convention; same
// arguments, checks and formula as cpp/cpu_rope.cc. One thread per (row, i < D/2) pair, so each
// thread reads x[i] and x[i + D/2] once and writes both outputs; x may be strided (last stride 1).
#include "cuda_common.cuh"
#include "kernel_checks_tensor.h"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;

// Pair e = (r, i): r = (b, h, t) row of x, i < D/2; out contiguous [B, H, T, D].
template <typename T> __global__ void __launch_bounds__(kBlock)
    rope_dev(T* out, const T* x, const T* cs, const T* sn, int64_t total, int64_t H, int64_t T_, int64_t D, int64_t sx0,
             int64_t sx1, int64_t sx2, bool per_batch) {
  using F = acc_t<T>;
  const int64_t half = D / 2;
  for (int64_t e = gtid(); e < total; e += gstride()) {
    const int64_t r = e / half, i = e - r * half;
    const int64_t t = r % T_, bh = r / T_, h = bh % H, b = bh / H;
    const T* px = x + b * sx0 + h * sx1 + t * sx2;
    const int64_t cb = ((per_batch ? b : 0) * T_ + t) * D;
    const T* pc = cs + cb;
    const T* ps = sn + cb;
    T* po = out + r * D;
    const F x1 = load(px + i), x2 = load(px + i + half);
    store(po + i, x1 * F(load(pc + i)) - x2 * F(load(ps + i)));
    store(po + i + half, x2 * F(load(pc + i + half)) + x1 * F(load(ps + i + half)));
  }
}

// rope(out, x[B,H,T,D], cos[B',T,D], sin[B',T,D]): out = x*cos + rotate_half(x)*sin.
void rope_kernel(const KernelArgs& a) {
  const RopeArgs A = parse_rope(a);
  const TensorArg &out = *A.out, &x = *A.x, &cs = *A.cos, &sn = *A.sin;
  const int64_t B = A.B, H = A.H, T = A.T, D = A.D;
  const bool per_batch = A.per_batch;
  const int64_t total = B * H * T * (D / 2);
  if (total == 0) return;
  GPU_DISPATCH_FLOAT(a, x.dtype, T_, {
    launch(rope_dev<T_>, grid_for(total), kBlock, 0, stream(), reinterpret_cast<T_*>(out.bytes()),
           reinterpret_cast<const T_*>(x.bytes()), reinterpret_cast<const T_*>(cs.bytes()),
           reinterpret_cast<const T_*>(sn.bytes()), total, H, T, D, x.strides[0], x.strides[1], x.strides[2],
           per_batch);
  });
  check_launch(a);
}

REGISTER_KERNEL("rope", Device::CUDA, rope_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
