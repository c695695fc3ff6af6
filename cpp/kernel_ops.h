// kernel_ops.h — the op names of the map and reduction kernels (unary, unary_bwd, binary, random,
// reduce) and their numbering, written once for cpp/ and cuda/.
//
// Plain C++ with no dependencies, so device code can switch on the same enumerators. Each op set
// is an unscoped enum inside its own namespace (UnaryOp::Neg, BinaryOp::Pow, ...): the values are
// plain ints that a CUDA kernel can carry, and Pow exists in two sets without a clash. The
// lookup_* functions map a name to its value, or -1 for an unknown name; kernel_checks_tensor.h
// turns that into the kernel's error message.
#pragma once

#include <string>

namespace llava {

namespace unary_op {
enum UnaryOp : int {
  Neg,
  Exp,
  Log,
  Sqrt,
  Rsqrt,
  Abs,
  Sin,
  Cos,
  Tanh,
  Sigmoid,
  Relu,
  Gelu,
  GeluTanh,
  QuickGelu,
  Silu,
  Pow,
  Square,
  Reciprocal,
  Sign,
  Erf,
  Log1p,
  Expm1
};
}
using unary_op::UnaryOp;

// Comparisons (Eq and after) write bool.
namespace binary_op {
enum BinaryOp : int { Add, Sub, Mul, Div, Max, Min, Pow, Eq, Ne, Lt, Le, Gt, Ge, And, Or };
}
using binary_op::BinaryOp;
inline bool is_compare(BinaryOp op) { return op >= BinaryOp::Eq; }

namespace random_kind {
enum RandomKind : int { Uniform, Normal, Bernoulli };
}
using random_kind::RandomKind;

namespace reduce_op {
enum ReduceOp : int { Sum, Mean, Max, Min, Argmax, Argmin, Var, Lse, Prod };
}
using reduce_op::ReduceOp;

namespace detail {
struct OpName {
  const char* name;
  int value;
};
template <size_t N> inline int lookup_op(const OpName (&table)[N], const std::string& s) {
  for (const OpName& kv : table)
    if (s == kv.name) return kv.value;
  return -1;
}
}  // namespace detail

inline int lookup_unary(const std::string& s) {
  using namespace unary_op;
  static const detail::OpName table[] = {{"neg", Neg},
                                         {"exp", Exp},
                                         {"log", Log},
                                         {"sqrt", Sqrt},
                                         {"rsqrt", Rsqrt},
                                         {"abs", Abs},
                                         {"sin", Sin},
                                         {"cos", Cos},
                                         {"tanh", Tanh},
                                         {"sigmoid", Sigmoid},
                                         {"relu", Relu},
                                         {"gelu", Gelu},
                                         {"gelu_tanh", GeluTanh},
                                         {"quick_gelu", QuickGelu},
                                         {"silu", Silu},
                                         {"pow", Pow},
                                         {"square", Square},
                                         {"reciprocal", Reciprocal},
                                         {"sign", Sign},
                                         {"erf", Erf},
                                         {"log1p", Log1p},
                                         {"expm1", Expm1}};
  return detail::lookup_op(table, s);
}

inline int lookup_binary(const std::string& s) {
  using namespace binary_op;
  static const detail::OpName table[] = {{"add", Add},     {"sub", Sub},         {"mul", Mul},      {"div", Div},
                                         {"maximum", Max}, {"minimum", Min},     {"pow", Pow},      {"eq", Eq},
                                         {"ne", Ne},       {"lt", Lt},           {"le", Le},        {"gt", Gt},
                                         {"ge", Ge},       {"logical_and", And}, {"logical_or", Or}};
  return detail::lookup_op(table, s);
}

inline int lookup_random(const std::string& s) {
  using namespace random_kind;
  static const detail::OpName table[] = {{"uniform", Uniform}, {"normal", Normal}, {"bernoulli", Bernoulli}};
  return detail::lookup_op(table, s);
}

inline int lookup_reduce(const std::string& s) {
  using namespace reduce_op;
  static const detail::OpName table[] = {{"sum", Sum}, {"mean", Mean},     {"max", Max},
                                         {"min", Min}, {"argmax", Argmax}, {"argmin", Argmin},
                                         {"var", Var}, {"logsumexp", Lse}, {"prod", Prod}};
  return detail::lookup_op(table, s);
}

}  // namespace llava
