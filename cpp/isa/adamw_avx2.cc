// isa/adamw_avx2.cc — the AdamW step at 8 f32 lanes (AVX2; the step is memory bound, so wider lanes
// would not help), for f32 parameters and for bf16 parameters with or without an f32 master copy. The
// expression order is cpu_adamw.cc's scalar loop's (the compiler may fuse a multiply and an add here,
// so the last bit can differ). Called by cpu_adamw.cc when cpu_isa() >= avx2.
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#include "act_lanes.h"

namespace llava {
namespace isa {
namespace {

using V = Lanes<8>;
using R = V::reg;

// p, g: float or uint16_t (bf16 bits); master: the f32 copy the bf16 weights are rounded from, or null.
template <typename T> void step(T* p, const T* g, float* m, float* v, float* master, int64_t n, const AdamwConsts& c) {
  const R lr_wd = V::set1(c.lr_wd), b1 = V::set1(c.b1), one_b1 = V::set1(c.one_b1), b2 = V::set1(c.b2),
          one_b2 = V::set1(c.one_b2), lr = V::set1(c.lr), bc1 = V::set1(c.bc1), bc2 = V::set1(c.bc2),
          eps = V::set1(c.eps);
  auto body = [&](int64_t i) {
    R w = master ? V::load(master + i) : V::load(p + i);
    const R gi = V::load(g + i);
    w = w - lr_wd * w;
    const R mi = b1 * V::load(m + i) + one_b1 * gi;
    const R vi = b2 * V::load(v + i) + one_b2 * gi * gi;
    V::store(m + i, mi);
    V::store(v + i, vi);
    w = w - lr * (mi / bc1) / (V::sqrt(vi / bc2) + eps);
    if (master) V::store(master + i, w);
    V::store(p + i, w);
  };
  int64_t i = 0;
  for (; i + V::N <= n; i += V::N) body(i);
  if (i < n) {  // the tail through padded copies
    alignas(32) T pb[V::N] = {}, gb[V::N] = {};
    alignas(32) float mb[V::N] = {}, vb[V::N] = {}, wb[V::N] = {};
    const int64_t r = n - i;
    for (int64_t j = 0; j < r; j++) {
      pb[j] = p[i + j], gb[j] = g[i + j], mb[j] = m[i + j], vb[j] = v[i + j];
      if (master) wb[j] = master[i + j];
    }
    step(pb, gb, mb, vb, master ? wb : nullptr, V::N, c);
    for (int64_t j = 0; j < r; j++) {
      p[i + j] = pb[j], m[i + j] = mb[j], v[i + j] = vb[j];
      if (master) master[i + j] = wb[j];
    }
  }
}

}  // namespace

void adamw_f32_avx2(float* p, const float* g, float* m, float* v, int64_t n, const AdamwConsts& c) {
  step(p, g, m, v, nullptr, n, c);
}
void adamw_bf16_avx2(uint16_t* p, const uint16_t* g, float* m, float* v, float* master, int64_t n,
                     const AdamwConsts& c) {
  step(p, g, m, v, master, n, c);
}

}  // namespace isa
}  // namespace llava
#endif
