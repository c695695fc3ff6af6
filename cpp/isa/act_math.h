// isa/act_math.h — vectorised activations, written once over a lane type V (isa/act_lanes.h's
// Lanes<W>) and instantiated by act_avx2.cc (8 lanes), act_avx512.cc and act_bf16_avx512.cc (16 lanes).
// Each of those files is built with its ISA's flags; the anonymous namespace gives each its own
// instantiations.
//
// V provides: reg (f32 lanes), N (lanes), set1, add, sub, mul, div, fma (a*b+c), fnma (c-a*b), min,
// max, floor, neg, abs, copysign, pow2i, zero_below, and load/store of f32 and bf16.
//
// exp: n = round(x / ln2), exp(x) = 2^n exp(r) with r = x - n ln2 (ln2 split in two), exp(r) by the
// Cephes degree-6 polynomial: about 2 ulp on [-87, 88], 0 below (masked scores, -inf), inf-clamped
// above. erf(x / sqrt 2) for GELU: a rational function, absolute error 3e-7 (see erf_sqrt1_2).
// tanh(x) = sign(x) (1 - 2 / (exp(2|x|) + 1)), absolute error ~1e-7. sigmoid(x) = 1 / (1 + exp(-x)).
// The derivatives follow elementwise_math.h's unary_grad formulas with these primitives.
#pragma once

#include <cstdint>

#include "../kernel_ops.h"
#include "isa_kernels.h"

namespace llava {
namespace isa {
namespace {

template <class V> struct Act {
  using R = typename V::reg;

  static R exp(R x) {
    const R lo = V::set1(-87.3365f);  // below: exactly 0 (like expf's underflow, no denormals)
    R xc = V::min(V::max(x, lo), V::set1(88.3762626647949f));
    R fx = V::floor(V::fma(xc, V::set1(1.44269504088896341f), V::set1(0.5f)));
    R r = V::fnma(fx, V::set1(0.693359375f), xc);
    r = V::fnma(fx, V::set1(-2.12194440e-4f), r);
    R y = V::set1(1.9875691500e-4f);
    y = V::fma(y, r, V::set1(1.3981999507e-3f));
    y = V::fma(y, r, V::set1(8.3334519073e-3f));
    y = V::fma(y, r, V::set1(4.1665795894e-2f));
    y = V::fma(y, r, V::set1(1.6666665459e-1f));
    y = V::fma(y, r, V::set1(5.0000001201e-1f));
    y = V::fma(y, V::mul(r, r), V::add(r, V::set1(1.0f)));
    return V::zero_below(V::mul(y, V::pow2i(fx)), x, lo);
  }
  static R sigmoid(R x) { return V::div(V::set1(1.f), V::add(V::set1(1.f), exp(V::neg(x)))); }
  static R tanh(R x) {
    R a = V::abs(x);
    R e = exp(V::add(a, a));
    R t = V::sub(V::set1(1.f), V::div(V::set1(2.f), V::add(e, V::set1(1.f))));
    return V::copysign(t, x);
  }
  // erf(x / sqrt 2), the normal CDF's core: x P(x^2) / Q(x^2) with x clamped to +-5.5 (beyond it the
  // value is +-1 in float), P and Q of degree 5 fitted here (near-minimax, absolute error 1.5e-8 in
  // exact arithmetic, 3e-7 evaluated in float), then held inside [-1, 1]. No exp and one division,
  // about half the instructions of the exp-based form.
  static R erf_sqrt1_2(R x) {
    const R xc = V::min(V::max(x, V::set1(-5.5f)), V::set1(5.5f));
    const R t = V::mul(xc, xc);
    R p = V::set1(4.549638780e-08f);
    p = V::fma(p, t, V::set1(1.270427831e-05f));
    p = V::fma(p, t, V::set1(3.376734355e-04f));
    p = V::fma(p, t, V::set1(9.354656869e-03f));
    p = V::fma(p, t, V::set1(6.770756524e-02f));
    p = V::fma(p, t, V::set1(7.978844693e-01f));
    R q = V::set1(1.197471166e-06f);
    q = V::fma(q, t, V::set1(7.365073409e-05f));
    q = V::fma(q, t, V::set1(1.884508392e-03f));
    q = V::fma(q, t, V::set1(2.864651644e-02f));
    q = V::fma(q, t, V::set1(2.515247671e-01f));
    q = V::fma(q, t, V::set1(1.f));
    const R y = V::mul(xc, V::div(p, q));
    return V::min(V::max(y, V::set1(-1.f)), V::set1(1.f));
  }

  // f(x) for the ops isa_kernels.h lists for the unary table entry.
  static R fwd(int op, R x) {
    using namespace ::llava::unary_op;
    switch (op) {
      case Exp:
        return exp(x);
      case Tanh:
        return tanh(x);
      case Sigmoid:
        return sigmoid(x);
      case Gelu: {
        const R h = V::mul(V::set1(0.5f), x);
        return V::fma(h, erf_sqrt1_2(x), h);
      }
      case GeluTanh: {
        R x3 = V::mul(V::mul(x, x), x);
        R u = V::mul(V::set1(0.79788456080286535588f), V::fma(x3, V::set1(0.044715f), x));
        return V::mul(V::mul(V::set1(0.5f), x), V::add(V::set1(1.f), tanh(u)));
      }
      case QuickGelu:
        return V::mul(x, sigmoid(V::mul(V::set1(1.702f), x)));
      default:  // Silu
        return V::mul(x, sigmoid(x));
    }
  }
  // f'(x)
  static R grad(int op, R x) {
    using namespace ::llava::unary_op;
    const R one = V::set1(1.f);
    switch (op) {
      case Exp:
        return exp(x);
      case Tanh: {
        R t = tanh(x);
        return V::fnma(t, t, one);
      }
      case Sigmoid: {
        R s = sigmoid(x);
        return V::mul(s, V::sub(one, s));
      }
      case Gelu: {
        R cdf = V::fma(V::set1(0.5f), erf_sqrt1_2(x), V::set1(0.5f));
        R pdf = V::mul(V::set1(0.39894228040143267794f), exp(V::mul(V::set1(-0.5f), V::mul(x, x))));
        return V::fma(x, pdf, cdf);
      }
      case GeluTanh: {
        R x2 = V::mul(x, x);
        R u = V::mul(V::set1(0.79788456080286535588f), V::fma(V::mul(x2, x), V::set1(0.044715f), x));
        R t = tanh(u);
        R du = V::mul(V::set1(0.79788456080286535588f), V::fma(x2, V::set1(3 * 0.044715f), one));
        R left = V::mul(V::set1(0.5f), V::add(one, t));
        return V::fma(V::mul(V::mul(V::set1(0.5f), x), V::fnma(t, t, one)), du, left);
      }
      case QuickGelu: {
        R s = sigmoid(V::mul(V::set1(1.702f), x));
        return V::fma(V::mul(V::mul(x, V::set1(1.702f)), s), V::sub(one, s), s);
      }
      default: {  // Silu
        R s = sigmoid(x);
        return V::mul(s, V::fma(x, V::sub(one, s), one));
      }
    }
  }

  // out[i] = f(x[i]) (dy null) or dy[i] * f'(x[i]) for i < n; T: float or uint16_t (bf16 bits). The op
  // and the direction are chosen once, outside the loop, so each loop body is straight-line code.
  template <typename T> static void run(int op, const T* x, const T* dy, T* out, int64_t n) {
    using namespace ::llava::unary_op;
    switch (op) {
      case Exp:
        return run_op<Exp>(x, dy, out, n);
      case Tanh:
        return run_op<Tanh>(x, dy, out, n);
      case Sigmoid:
        return run_op<Sigmoid>(x, dy, out, n);
      case Gelu:
        return run_op<Gelu>(x, dy, out, n);
      case GeluTanh:
        return run_op<GeluTanh>(x, dy, out, n);
      case QuickGelu:
        return run_op<QuickGelu>(x, dy, out, n);
      default:
        return run_op<Silu>(x, dy, out, n);
    }
  }
  template <int Op, typename T> static void run_op(const T* x, const T* dy, T* out, int64_t n) {
    if (dy) return map(x, dy, out, n, [](R v, R d) { return V::mul(d, grad(Op, v)); });
    map(x, x, out, n, [](R v, R) { return fwd(Op, v); });
  }
  // out[i] = f(x[i], y[i]) over full vectors, the tail through padded lane buffers.
  template <typename T, typename F> static void map(const T* x, const T* y, T* out, int64_t n, F f) {
    int64_t i = 0;
    for (; i + V::N <= n; i += V::N) V::store(out + i, f(V::load(x + i), V::load(y + i)));
    if (i < n) {
      alignas(64) T xb[V::N] = {}, yb[V::N] = {}, ob[V::N];
      copy_in(xb, x + i, n - i), copy_in(yb, y + i, n - i);
      V::store(ob, f(V::load(xb), V::load(yb)));
      copy_in(out + i, ob, n - i);
    }
  }

  // SwiGLU in one pass: out = silu(g) u (dy null), else out = dy u silu'(g) and out2 = dy silu(g)
  // with silu'(g) = s + g s (1 - s), s = sigmoid(g): one exp per element either way.
  template <typename T> static void swiglu(const T* g, const T* u, const T* dy, T* out, T* out2, int64_t n) {
    auto body = [](const T* gp, const T* up, const T* dp, T* o0, T* o1) {
      R gv = V::load(gp), uv = V::load(up);
      R s = sigmoid(gv), gs = V::mul(gv, s);
      if (!dp) return V::store(o0, V::mul(gs, uv));
      R d = V::load(dp);
      V::store(o1, V::mul(d, gs));
      V::store(o0, V::mul(V::mul(d, uv), V::fma(gs, V::sub(V::set1(1.f), s), s)));
    };
    int64_t i = 0;
    for (; i + V::N <= n; i += V::N) body(g + i, u + i, dy ? dy + i : nullptr, out + i, out2 + i);
    if (i < n) {
      alignas(64) T gb[V::N] = {}, ub[V::N] = {}, db[V::N] = {}, ob[V::N], ob2[V::N];
      copy_in(gb, g + i, n - i), copy_in(ub, u + i, n - i), copy_in(db, dy ? dy + i : nullptr, n - i);
      body(gb, ub, dy ? db : nullptr, ob, ob2);
      copy_in(out + i, ob, n - i);
      if (dy) copy_in(out2 + i, ob2, n - i);
    }
  }

  template <typename T> static void copy_in(T* dst, const T* src, int64_t n) {
    if (src)
      for (int64_t j = 0; j < n; j++) dst[j] = src[j];
  }

  // The table an ISA file hands out (isa_kernels.h).
  static const ::llava::isa::ActKernels& table() {
    static const ::llava::isa::ActKernels t{{&run<float>, &swiglu<float>}, {&run<uint16_t>, &swiglu<uint16_t>}};
    return t;
  }
};

}  // namespace
}  // namespace isa
}  // namespace llava
