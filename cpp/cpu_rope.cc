// cpu_rope.cc — the `rope` kernel on the CPU: rotary position embedding, rotate-half convention
// (CUDA twin: cuda/rope.cu). One parallel task per (b, h, t) row; each row pairs element i with
// element i + D/2. The backward is the same kernel with a modified sin table (lib/ops/nn.ts).
#include "cpu_common.h"
#include "kernel_checks.h"

namespace llava {
namespace {

// rope(out, x[B,H,T,D], cos[B',T,D], sin[B',T,D]): out = x*cos + rotate_half(x)*sin, where
// rotate_half(x) = cat(-x[D/2:], x[:D/2]). x may be strided (last stride 1); cos/sin contiguous.
void rope_kernel(const KernelArgs& a) {
  const RopeArgs A = parse_rope(a);
  const TensorArg &out = *A.out, &x = *A.x, &cs = *A.cos, &sn = *A.sin;
  const int64_t B = A.B, H = A.H, T = A.T, D = A.D;
  const int64_t half = D / 2;
  const bool per_batch = A.per_batch;
  if (B * H * T * D == 0) return;  // e.g. [2^40, 1, 1, 0]: no element to write, so no row to visit
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

REGISTER_KERNEL("rope", Device::CPU, rope_kernel);

}  // namespace
}  // namespace llava
