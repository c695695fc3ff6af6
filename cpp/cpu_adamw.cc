// cpu_adamw.cc — the fused `adamw` kernel on the CPU: one AdamW step per element (decoupled weight
// decay, then the moments, then the bias-corrected update), with an optional f32 master copy for
// bf16/f16 parameters (CUDA twin: cuda/adamw.cu, same expression order).
#include <cmath>
#include <type_traits>

#include "cpu_common.h"
#include "isa/isa_kernels.h"
#include "kernel_checks.h"

namespace llava {
namespace {

// adamw(param, grad, m, v, master?, lr, beta1, beta2, eps, weight_decay, step)
void adamw_kernel(const KernelArgs& a) {
  const AdamwArgs A = parse_adamw(a);
  const TensorArg &p = *A.p, &g = *A.g, &m = *A.m, &v = *A.v;
  const TensorArg* master = A.master;
  const double lr = A.lr, b1 = A.b1, b2 = A.b2, eps = A.eps, wd = A.wd;
  const int64_t step = A.step, n = A.n;
  double bc1 = 1.0 - std::pow(b1, double(step)), bc2 = 1.0 - std::pow(b2, double(step));
#if LLAVA_X86_ISA
  // f32, and bf16 with f32 moments: the AVX2 loop (isa/adamw_avx2.cc), the loop below vectorised.
  if (cpu_isa() >= CpuIsa::Avx2 && (p.dtype == DType::F32 || p.dtype == DType::BF16) && m.dtype == DType::F32) {
    const isa::AdamwConsts c{float(lr * wd), float(b1),  float(1 - b1), float(b2), float(1 - b2),
                             float(lr),      float(bc1), float(bc2),    float(eps)};
    float* pw = master ? master->data<float>() : nullptr;
    parallel_for(n, 8192, [&](int64_t b, int64_t e) {
      if (p.dtype == DType::F32)
        isa::adamw_f32_avx2(p.data<float>() + b, g.data<float>() + b, m.data<float>() + b, v.data<float>() + b, e - b,
                            c);
      else
        isa::adamw_bf16_avx2(bf16_bits(p) + b, bf16_bits(g) + b, m.data<float>() + b, v.data<float>() + b,
                             pw ? pw + b : nullptr, e - b, c);
    });
    return;
  }
#endif
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

REGISTER_KERNEL("adamw", Device::CPU, adamw_kernel);

}  // namespace
}  // namespace llava
