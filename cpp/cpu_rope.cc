// cpu_rope.cc — the `rope` kernel on the CPU: rotary position embedding, rotate-half convention
// (CUDA twin: cuda/rope.cu). One parallel task per (b, h, t) row; each row pairs element i with
// element i + D/2. The backward is the same kernel with a modified sin table (lib/ops/nn.ts). Built
// twice (scripts/sources.js): the AVX2 copy runs f32 and bf16 rows 8 lanes at a time.
#include "cpu_common.h"
#include "kernel_checks_tensor.h"

namespace llava {
namespace {

// The first pairs of one row done 8 lanes at a time (f32 math, one rounding per element, as the scalar
// loop); returns how many. Only f32 and bf16 rows of the AVX2 copy have them.
template <typename T> inline int64_t rope_row_fast(const T* px, const T* pc, const T* ps, T* po, int64_t half) {
  int64_t i = 0;
#if LLAVA_AVX2
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16>)
    for (; i + 8 <= half; i += 8) {
      const __m256 x1 = vload(px + i), x2 = vload(px + i + half);
      vstore(po + i, _mm256_sub_ps(_mm256_mul_ps(x1, vload(pc + i)), _mm256_mul_ps(x2, vload(ps + i))));
      vstore(po + i + half,
             _mm256_add_ps(_mm256_mul_ps(x2, vload(pc + i + half)), _mm256_mul_ps(x1, vload(ps + i + half))));
    }
#endif
  return i;
}

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
        int64_t i = rope_row_fast(px, pc, ps, po, half);
        for (; i < half; i++) {
          F x1 = load(px + i), x2 = load(px + i + half);
          store(po + i, x1 * F(load(pc + i)) - x2 * F(load(ps + i)));
          store(po + i + half, x2 * F(load(pc + i + half)) + x1 * F(load(ps + i + half)));
        }
      }
    });
  });
}

}  // namespace

LLAVA_CPU_KERNEL("rope", rope_kernel, cpu_rope);

}  // namespace llava
