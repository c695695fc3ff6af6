// adamw.cu — the fused `adamw` kernel on the GPU; same arguments, checks and formula as
// cpp/cpu_adamw.cc. One thread per element, in exactly the CPU's expression order (PyTorch AdamW:
// decoupled decay, then the moments, then the bias-corrected step); with master weights the f32
// master is updated and the 16-bit parameter receives its rounded copy.
#include <cmath>
#include <type_traits>

#include "cuda_common.cuh"
#include "kernel_checks.h"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;

template <typename S> struct AdamHyper { S lr, lr_wd, b1, one_m_b1, b2, one_m_b2, bc1, bc2, eps; };

template <typename T, typename S> __global__ void __launch_bounds__(kBlock)
    adamw_dev(T* p, const T* g, S* m, S* v, float* master, int64_t n, AdamHyper<S> hp) {
  for (int64_t i = gtid(); i < n; i += gstride()) {
    S w = master ? S(master[i]) : S(load(p + i));
    const S gi = S(load(g + i));
    w -= hp.lr_wd * w;
    const S mi = hp.b1 * m[i] + hp.one_m_b1 * gi;
    const S vi = hp.b2 * v[i] + hp.one_m_b2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    w -= hp.lr * (mi / hp.bc1) / (ewmath::sqrt(vi / hp.bc2) + hp.eps);
    if (master) master[i] = float(w);
    store(p + i, w);
  }
}

// adamw(param, grad, m, v, master?, lr, beta1, beta2, eps, weight_decay, step)
void adamw_kernel(const KernelArgs& a) {
  const AdamwArgs A = parse_adamw(a);
  const TensorArg &p = *A.p, &g = *A.g, &m = *A.m, &v = *A.v;
  const TensorArg* master = A.master;
  const double lr = A.lr, b1 = A.b1, b2 = A.b2, eps = A.eps, wd = A.wd;
  const int64_t step = A.step, n = A.n;
  if (n == 0) return;
  double bc1 = 1.0 - std::pow(b1, double(step)), bc2 = 1.0 - std::pow(b2, double(step));
  GPU_DISPATCH_FLOAT(a, p.dtype, T, {
    using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
    AdamHyper<S> hp{S(lr), S(lr * wd), S(b1), S(1 - b1), S(b2), S(1 - b2), S(bc1), S(bc2), S(eps)};
    launch(adamw_dev<T, S>, grid_for(n), kBlock, 0, stream(), reinterpret_cast<T*>(p.bytes()),
           reinterpret_cast<const T*>(g.bytes()), reinterpret_cast<S*>(m.bytes()), reinterpret_cast<S*>(v.bytes()),
           master ? reinterpret_cast<float*>(master->bytes()) : nullptr, n, hp);
  });
  check_launch(a);
}

REGISTER_KERNEL("adamw", Device::CUDA, adamw_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
