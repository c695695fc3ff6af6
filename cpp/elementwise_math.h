// elementwise_math.h — the scalar formulas of the elementwise kernels, written once for
// cpp/cpu_elementwise.cc and cuda/elementwise.cu: unary ops and their derivatives, the integer
// unary ops, binary arithmetic and comparisons. Op numbering: kernel_ops.h.
//
// Plain C++17 templates over the compute type F (float or double; binary ops and comparisons
// also see the integer storage types). Under nvcc every function is __host__ __device__ (LLAVA_HD)
// so the CUDA kernels call the same code the CPU runs. The math calls go through the overloads in
// namespace ewmath, which name the f32 and f64 C functions explicitly (expf / exp, ...): a float
// argument never promotes to the f64 function, and the device gets CUDA's accurate (not fast-math)
// versions, so CPU and CUDA agree to a few ulps. Binary pow computes in f64 on both.
#pragma once

#include <math.h>

#include <cstdint>
#include <type_traits>

#include "kernel_ops.h"

#ifdef __CUDACC__
#define LLAVA_HD __host__ __device__
#define LLAVA_EW_INLINE __forceinline__
#else
#define LLAVA_HD
#define LLAVA_EW_INLINE inline
#endif

namespace llava {

namespace ewmath {
#define LLAVA_EW_MATH1(name, f32fn, f64fn)                            \
  LLAVA_HD LLAVA_EW_INLINE float name(float x) { return ::f32fn(x); } \
  LLAVA_HD LLAVA_EW_INLINE double name(double x) { return ::f64fn(x); }
LLAVA_EW_MATH1(exp, expf, exp)
LLAVA_EW_MATH1(log, logf, log)
LLAVA_EW_MATH1(sqrt, sqrtf, sqrt)
LLAVA_EW_MATH1(fabs, fabsf, fabs)
LLAVA_EW_MATH1(sin, sinf, sin)
LLAVA_EW_MATH1(cos, cosf, cos)
LLAVA_EW_MATH1(tanh, tanhf, tanh)
LLAVA_EW_MATH1(erf, erff, erf)
LLAVA_EW_MATH1(log1p, log1pf, log1p)
LLAVA_EW_MATH1(expm1, expm1f, expm1)
#undef LLAVA_EW_MATH1
LLAVA_HD LLAVA_EW_INLINE float pow(float x, float y) { return ::powf(x, y); }
LLAVA_HD LLAVA_EW_INLINE double pow(double x, double y) { return ::pow(x, y); }

constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;

template <typename F> LLAVA_HD LLAVA_EW_INLINE F sigm(F x) { return F(1) / (F(1) + ewmath::exp(-x)); }
}  // namespace ewmath

// f(x) for a unary op (op: a unary_op enumerator; p: the exponent of Pow).
template <typename F> LLAVA_HD LLAVA_EW_INLINE F unary_fwd(int op, F x, F p) {
  namespace m = ewmath;
  using namespace unary_op;
  switch (op) {
    case Neg:
      return -x;
    case Exp:
      return m::exp(x);
    case Log:
      return m::log(x);
    case Sqrt:
      return m::sqrt(x);
    case Rsqrt:
      return F(1) / m::sqrt(x);
    case Abs:
      return m::fabs(x);
    case Sin:
      return m::sin(x);
    case Cos:
      return m::cos(x);
    case Tanh:
      return m::tanh(x);
    case Sigmoid:
      return m::sigm(x);
    case Relu:
      return x < F(0) ? F(0) : x;  // NaN propagates, as in torch.relu
    case Gelu:
      return F(0.5) * x * (F(1) + m::erf(x * F(m::kInvSqrt2)));
    case GeluTanh:
      return F(0.5) * x * (F(1) + m::tanh(F(m::kSqrt2OverPi) * (x + F(0.044715) * x * x * x)));
    case QuickGelu:
      return x * m::sigm(F(1.702) * x);
    case Silu:
      return x * m::sigm(x);
    case Pow:
      return m::pow(x, p);
    case Square:
      return x * x;
    case Reciprocal:
      return F(1) / x;
    case Sign:
      return F((x > F(0)) - (x < F(0)));
    case Erf:
      return m::erf(x);
    case Log1p:
      return m::log1p(x);
    case Expm1:
      return m::expm1(x);
  }
  return x;
}

// d f(x) / dx
template <typename F> LLAVA_HD LLAVA_EW_INLINE F unary_grad(int op, F x, F p) {
  namespace m = ewmath;
  using namespace unary_op;
  switch (op) {
    case Neg:
      return F(-1);
    case Exp:
      return m::exp(x);
    case Log:
      return F(1) / x;
    case Sqrt:
      return F(0.5) / m::sqrt(x);
    case Rsqrt:
      return F(-0.5) / (x * m::sqrt(x));
    case Abs:
      return F((x > F(0)) - (x < F(0)));
    case Sin:
      return m::cos(x);
    case Cos:
      return -m::sin(x);
    case Tanh: {
      F t = m::tanh(x);
      return F(1) - t * t;
    }
    case Sigmoid: {
      F s = m::sigm(x);
      return s * (F(1) - s);
    }
    case Relu:
      return x > F(0) ? F(1) : F(0);
    case Gelu:
      return F(0.5) * (F(1) + m::erf(x * F(m::kInvSqrt2))) + x * F(m::kInvSqrt2Pi) * m::exp(F(-0.5) * x * x);
    case GeluTanh: {
      F u = F(m::kSqrt2OverPi) * (x + F(0.044715) * x * x * x);
      F t = m::tanh(u);
      F du = F(m::kSqrt2OverPi) * (F(1) + F(3 * 0.044715) * x * x);
      return F(0.5) * (F(1) + t) + F(0.5) * x * (F(1) - t * t) * du;
    }
    case QuickGelu: {
      F s = m::sigm(F(1.702) * x);
      return s + x * F(1.702) * s * (F(1) - s);
    }
    case Silu: {
      F s = m::sigm(x);
      return s * (F(1) + x * (F(1) - s));
    }
    case Pow:
      return p == F(0) ? F(0) : p * m::pow(x, p - F(1));
    case Square:
      return F(2) * x;
    case Reciprocal:
      return F(-1) / (x * x);
    case Sign:
      return F(0);
    case Erf:
      return F(2 * m::kInvSqrt2Pi * 1.4142135623730951) * m::exp(-x * x);  // 2/sqrt(pi)
    case Log1p:
      return F(1) / (F(1) + x);
    case Expm1:
      return m::exp(x);
  }
  return F(0);
}

// SwiGLU, the gate of LLaMA's MLP: out = silu(g) * u. With s = sigmoid(g) the backward is
//   d_gate = dy * u * s * (1 + g (1 - s))   (silu'(g) times u),   d_up = dy * g * s   (silu(g)).
template <typename F> LLAVA_HD LLAVA_EW_INLINE F swiglu_fwd(F g, F u) { return g * ewmath::sigm(g) * u; }
template <typename F> LLAVA_HD LLAVA_EW_INLINE void swiglu_grad(F g, F u, F dy, F* dg, F* du) {
  F s = ewmath::sigm(g);
  F gs = g * s;
  *du = dy * gs;
  *dg = dy * u * (s + gs * (F(1) - s));
}

// neg / abs / square / sign of an integer (parse_unary admits no other op for integers). Any other
// T (bool, or a float type a dispatch macro instantiates but never runs) passes through.
template <typename T> LLAVA_HD LLAVA_EW_INLINE T int_unary(int op, T v) {
  using namespace unary_op;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    switch (op) {
      case Neg:
        return T(-v);
      case Abs:
        if constexpr (std::is_signed_v<T>)
          return T(v < 0 ? -v : v);
        else
          return v;
      case Square:
        return T(v * v);
      default:
        if constexpr (std::is_signed_v<T>)
          return T((v > 0) - (v < 0));
        else
          return T(v > 0);
    }
  }
  return v;
}

// x op y for the arithmetic binary ops (op: a binary_op enumerator before Eq); F is the compute
// type (float, double, or an integer storage type).
template <typename F> LLAVA_HD LLAVA_EW_INLINE F binary_fwd(int op, F x, F y) {
  switch (op) {
    case BinaryOp::Add:
      return x + y;
    case BinaryOp::Sub:
      return x - y;
    case BinaryOp::Mul:
      return x * y;
    case BinaryOp::Div:
      return x / y;
    // NaN propagates as in torch.maximum / torch.minimum
    case BinaryOp::Max:
      return (x != x || y != y) ? (x != x ? x : y) : (x > y ? x : y);
    case BinaryOp::Min:
      return (x != x || y != y) ? (x != x ? x : y) : (x < y ? x : y);
    case BinaryOp::Pow:
      return F(ewmath::pow(double(x), double(y)));
    default:
      return F(0);
  }
}

// x op y for the comparisons and logical ops (Eq and after), which write bool.
template <typename F> LLAVA_HD LLAVA_EW_INLINE bool binary_compare(int op, F x, F y) {
  switch (op) {
    case BinaryOp::Eq:
      return x == y;
    case BinaryOp::Ne:
      return x != y;
    case BinaryOp::Lt:
      return x < y;
    case BinaryOp::Le:
      return x <= y;
    case BinaryOp::Gt:
      return x > y;
    case BinaryOp::Ge:
      return x >= y;
    case BinaryOp::And:
      return x != F(0) && y != F(0);
    case BinaryOp::Or:
      return x != F(0) || y != F(0);
    default:
      return false;
  }
}

}  // namespace llava
