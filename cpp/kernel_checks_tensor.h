// kernel_checks_tensor.h — the argument validation of the tensor-level kernels that exist on both
// devices, written once: copy/fill/arange, unary and binary maps, SwiGLU, where, random fills, the
// index ops (index_select/index_add, gather/scatter_add), rope and reduce. The model-level kernels
// (AdamW, norms, softmax, cross-entropy, matmul, attention) are in kernel_checks.h, whose header
// comment gives the rules both files follow.
#pragma once

#include <cstdint>
#include <string>

#include "kernel_api.h"
#include "kernel_ops.h"

namespace llava {

// ------------------------------------------------------------------ elementwise
// Every operand of a map is a view with the output's shape (broadcast inputs arrive expanded).
namespace checks {
inline void same_shape(const KernelArgs& a, const TensorArg& out, const TensorArg& x, const char* what) {
  if (out.ndim != x.ndim) a.fail(std::string(what) + " rank differs from the output's");
  for (int d = 0; d < out.ndim; d++)
    if (out.shape[d] != x.shape[d]) a.fail(std::string(what) + " shape differs from the output's (broadcast first)");
}
inline UnaryOp unary_op_arg(const KernelArgs& a, size_t i) {
  const std::string& s = a.str(i);
  int op = lookup_unary(s);
  if (op < 0) a.fail("unknown unary op '" + s + "'");
  return UnaryOp(op);
}
}  // namespace checks

struct CopyArgs {
  const TensorArg *out, *x;
};
// copy(out, x): any dtypes, any strides, no overlap.
inline CopyArgs parse_copy(const KernelArgs& a) {
  CopyArgs r{&a.tensor(0), &a.tensor(1)};
  checks::same_shape(a, *r.out, *r.x, "input");
  a.check_no_overlap(*r.out, *r.x, "copy");
  return r;
}

struct FillArgs {
  const TensorArg* out;
  double value;
};
// fill(out, value)
inline FillArgs parse_fill(const KernelArgs& a) {
  FillArgs r;
  r.out = &a.tensor(0);
  r.value = a.num(1);
  return r;
}

struct ArangeArgs {
  const TensorArg* out;
  double start, step;
};
// arange(out, start, step): out contiguous.
inline ArangeArgs parse_arange(const KernelArgs& a) {
  ArangeArgs r;
  r.out = &a.tensor(0);
  a.check_contiguous(*r.out, "out");
  r.start = a.num(1), r.step = a.num(2);
  return r;
}

struct UnaryArgs {
  const TensorArg *out, *x;
  UnaryOp op;
  double p;  // the exponent of pow (0 when absent)
};
// unary(out, x, op, p): neg/abs/sign/square also take integer dtypes (not bool).
inline UnaryArgs parse_unary(const KernelArgs& a) {
  UnaryArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1);
  r.op = checks::unary_op_arg(a, 2);
  r.p = a.is_none(3) ? 0.0 : a.num(3);
  checks::same_shape(a, *r.out, *r.x, "input");
  a.check_same_dtype(*r.out, *r.x, "unary");
  if (!is_float(r.x->dtype)) {
    if (r.op != UnaryOp::Neg && r.op != UnaryOp::Abs && r.op != UnaryOp::Sign && r.op != UnaryOp::Square)
      a.fail("op needs a floating dtype");
    if (r.x->dtype == DType::BOOL) a.fail("op not defined for bool");
  }
  return r;
}

struct UnaryBwdArgs {
  const TensorArg *dx, *x, *dy;
  UnaryOp op;
  double p;
};
// unary_bwd(dx, x, dy, op, p): one float dtype.
inline UnaryBwdArgs parse_unary_bwd(const KernelArgs& a) {
  UnaryBwdArgs r;
  r.dx = &a.tensor(0), r.x = &a.tensor(1), r.dy = &a.tensor(2);
  r.op = checks::unary_op_arg(a, 3);
  r.p = a.is_none(4) ? 0.0 : a.num(4);
  checks::same_shape(a, *r.dx, *r.x, "x");
  checks::same_shape(a, *r.dx, *r.dy, "dy");
  a.check_float(*r.x, "x");
  a.check_same_dtype(*r.dx, *r.x, "x");
  a.check_same_dtype(*r.dx, *r.dy, "dy");
  return r;
}

struct SwigluArgs {
  const TensorArg *out, *gate, *up;
};
// swiglu(out, gate, up): out = silu(gate) * up; one float dtype, one shape (inputs any strides).
inline SwigluArgs parse_swiglu(const KernelArgs& a) {
  SwigluArgs r{&a.tensor(0), &a.tensor(1), &a.tensor(2)};
  checks::same_shape(a, *r.out, *r.gate, "gate");
  checks::same_shape(a, *r.out, *r.up, "up");
  a.check_float(*r.gate, "gate");
  a.check_same_dtype(*r.out, *r.gate, "gate");
  a.check_same_dtype(*r.out, *r.up, "up");
  a.check_no_overlap(*r.out, *r.gate, "gate");
  a.check_no_overlap(*r.out, *r.up, "up");
  return r;
}

struct SwigluBwdArgs {
  const TensorArg *dgate, *dup, *gate, *up, *dy;
};
// swiglu_bwd(dgate, dup, gate, up, dy): both gradients in one pass; outputs contiguous, inputs any
// strides, one float dtype and shape.
inline SwigluBwdArgs parse_swiglu_bwd(const KernelArgs& a) {
  SwigluBwdArgs r{&a.tensor(0), &a.tensor(1), &a.tensor(2), &a.tensor(3), &a.tensor(4)};
  const TensorArg* all[5] = {r.dgate, r.dup, r.gate, r.up, r.dy};
  const char* names[5] = {"dgate", "dup", "gate", "up", "dy"};
  a.check_float(*r.gate, "gate");
  for (int k = 1; k < 5; k++) {
    checks::same_shape(a, *r.dgate, *all[k], names[k]);
    a.check_same_dtype(*r.dgate, *all[k], names[k]);
  }
  a.check_contiguous(*r.dgate, "dgate");
  a.check_contiguous(*r.dup, "dup");
  for (int o = 0; o < 2; o++)
    for (int k = o + 1; k < 5; k++) a.check_no_overlap(*all[o], *all[k], names[k]);
  return r;
}

struct BinaryArgs {
  const TensorArg *out, *x, *y;
  BinaryOp op;
  bool cmp;  // a comparison: out is bool
};
// binary(out, a, b, op): a and b of one dtype; comparisons write bool; no arithmetic on bool.
inline BinaryArgs parse_binary(const KernelArgs& a) {
  BinaryArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1), r.y = &a.tensor(2);
  const std::string& s = a.str(3);
  int op = lookup_binary(s);
  if (op < 0) a.fail("unknown binary op '" + s + "'");
  r.op = BinaryOp(op);
  r.cmp = is_compare(r.op);
  const TensorArg &out = *r.out, &x = *r.x, &y = *r.y;
  checks::same_shape(a, out, x, "first input");
  checks::same_shape(a, out, y, "second input");
  a.check_same_dtype(x, y, "inputs");
  if (r.cmp)
    a.check_dtype(out, DType::BOOL, "comparison output");
  else
    a.check_same_dtype(out, x, "output");
  if (!is_float(x.dtype) && (r.op == BinaryOp::Div || r.op == BinaryOp::Pow))
    a.fail("integer inputs must be promoted to a float dtype first");
  if (!r.cmp && x.dtype == DType::BOOL) a.fail("arithmetic on bool tensors is not supported");
  return r;
}

struct WhereArgs {
  const TensorArg *out, *cond, *x, *y;
};
// where(out, cond, x, y): cond bool, x and y of out's dtype.
inline WhereArgs parse_where(const KernelArgs& a) {
  WhereArgs r{&a.tensor(0), &a.tensor(1), &a.tensor(2), &a.tensor(3)};
  a.check_dtype(*r.cond, DType::BOOL, "condition");
  checks::same_shape(a, *r.out, *r.cond, "condition");
  checks::same_shape(a, *r.out, *r.x, "first input");
  checks::same_shape(a, *r.out, *r.y, "second input");
  a.check_same_dtype(*r.out, *r.x, "first input");
  a.check_same_dtype(*r.out, *r.y, "second input");
  return r;
}

struct RandomArgs {
  const TensorArg* out;
  RandomKind kind;
  uint64_t seed, offset;
  double p;  // bernoulli probability (0.5 when absent)
};
// random(out, kind, seed, offset, p): out contiguous.
inline RandomArgs parse_random(const KernelArgs& a) {
  RandomArgs r;
  r.out = &a.tensor(0);
  a.check_contiguous(*r.out, "out");
  const std::string& kind = a.str(1);
  r.seed = (uint64_t)a.int_(2);
  r.offset = (uint64_t)a.int_(3);
  r.p = a.is_none(4) ? 0.5 : a.num(4);
  int k = lookup_random(kind);
  if (k < 0) a.fail("unknown distribution '" + kind + "'");
  r.kind = RandomKind(k);
  return r;
}

// ------------------------------------------------------------------ index ops
// Index kernels see contiguous tensors as [outer, n, inner] around `dim`. The range check of the
// index values reads the index tensor, so each device passes its own: a callable
// range_check(a, idx, limit) that calls checks::index_range_fail for the first value outside
// [0, limit). It runs at the same point of every parse on both devices.
namespace checks {
inline int64_t norm_dim(const KernelArgs& a, int64_t dim, int ndim) {
  if (dim < 0) dim += ndim;
  if (dim < 0 || dim >= ndim) a.fail("dim out of range");
  return dim;
}
inline void split_dims(const TensorArg& t, int64_t dim, int64_t& outer, int64_t& inner) {
  outer = 1;
  inner = 1;
  for (int d = 0; d < dim; d++) outer *= t.shape[d];
  for (int d = (int)dim + 1; d < t.ndim; d++) inner *= t.shape[d];
}
// int64 or int32, contiguous.
inline void index_tensor(const KernelArgs& a, const TensorArg& idx) {
  if (idx.dtype != DType::I64 && idx.dtype != DType::I32) a.fail("index must be int64 or int32");
  a.check_contiguous(idx, "index");
}
[[noreturn]] inline void index_range_fail(const KernelArgs& a, int64_t v, int64_t limit) {
  a.fail("index " + std::to_string(v) + " out of range for dimension of size " + std::to_string(limit));
}
inline void gather_shapes(const KernelArgs& a, const TensorArg& x, const TensorArg& idx, int64_t dim) {
  if (idx.ndim != x.ndim) a.fail("index must have the input's rank");
  for (int d = 0; d < x.ndim; d++)
    if (d != dim && idx.shape[d] > x.shape[d]) a.fail("index is larger than the input outside dim");
}
}  // namespace checks

// index_select: out[o, j, i] = x[o, idx[j], i]; index_add: out[o, idx[j], i] += src[o, j, i].
struct IndexRowsArgs {
  const TensorArg *out, *src, *idx;  // src: x of index_select, src of index_add
  int64_t dim, outer, n, m, inner;   // n = extent of the indexed tensor at dim, m = idx.numel()
};

// index_select(out, x, idx, dim)
template <typename RangeCheck> inline IndexRowsArgs parse_index_select(const KernelArgs& a, RangeCheck&& range_check) {
  IndexRowsArgs r;
  r.out = &a.tensor(0), r.src = &a.tensor(1), r.idx = &a.tensor(2);
  const TensorArg &out = *r.out, &x = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), x.ndim);
  a.check_contiguous(x, "input");
  a.check_contiguous(out, "output");
  a.check_same_dtype(out, x, "output");
  if (idx.ndim != 1) a.fail("index must be 1-D");
  checks::index_tensor(a, idx);
  range_check(a, idx, x.shape[r.dim]);
  checks::split_dims(x, r.dim, r.outer, r.inner);
  r.n = x.shape[r.dim], r.m = idx.numel();
  a.check_numel(out, r.outer * r.m * r.inner, "output");
  a.check_no_overlap(out, x, "index_select");
  return r;
}

// index_add(out, idx, src, dim): float, out and src contiguous.
template <typename RangeCheck> inline IndexRowsArgs parse_index_add(const KernelArgs& a, RangeCheck&& range_check) {
  IndexRowsArgs r;
  r.out = &a.tensor(0), r.idx = &a.tensor(1), r.src = &a.tensor(2);
  const TensorArg &out = *r.out, &src = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), out.ndim);
  a.check_contiguous(out, "output");
  a.check_contiguous(src, "source");
  a.check_same_dtype(out, src, "source");
  a.check_float(out, "output");
  a.check_no_overlap(out, src, "index_add");
  if (idx.ndim != 1) a.fail("index must be 1-D");
  checks::index_tensor(a, idx);
  range_check(a, idx, out.shape[r.dim]);
  checks::split_dims(out, r.dim, r.outer, r.inner);
  r.n = out.shape[r.dim], r.m = idx.numel();
  a.check_numel(src, r.outer * r.m * r.inner, "source");
  a.check_no_overlap(out, idx, "index_add");
  return r;
}

// gather: out[...j...] = x[...idx[...j...]...]; scatter_add: out[...idx[...j...]...] += src[...j...].
// All contiguous; idx has the rank of the indexed tensor and the shape of out (gather) / src (scatter).
struct GatherArgs {
  const TensorArg *out, *src, *idx;  // src: x of gather, src of scatter_add
  int64_t dim;
};

// gather(out, x, idx, dim)
template <typename RangeCheck> inline GatherArgs parse_gather(const KernelArgs& a, RangeCheck&& range_check) {
  GatherArgs r;
  r.out = &a.tensor(0), r.src = &a.tensor(1), r.idx = &a.tensor(2);
  const TensorArg &out = *r.out, &x = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), x.ndim);
  for (const TensorArg* t : {&out, &x, &idx}) a.check_contiguous(*t, "operand");
  a.check_same_dtype(out, x, "output");
  checks::gather_shapes(a, x, idx, r.dim);
  a.check_numel(out, idx.numel(), "output");
  checks::index_tensor(a, idx);
  range_check(a, idx, x.shape[r.dim]);
  a.check_no_overlap(out, x, "gather");
  a.check_no_overlap(out, idx, "gather");
  return r;
}

// scatter_add(out, idx, src, dim): float.
template <typename RangeCheck> inline GatherArgs parse_scatter_add(const KernelArgs& a, RangeCheck&& range_check) {
  GatherArgs r;
  r.out = &a.tensor(0), r.idx = &a.tensor(1), r.src = &a.tensor(2);
  const TensorArg &out = *r.out, &src = *r.src, &idx = *r.idx;
  r.dim = checks::norm_dim(a, a.int_(3), out.ndim);
  for (const TensorArg* t : {&out, &idx, &src}) a.check_contiguous(*t, "operand");
  a.check_same_dtype(out, src, "source");
  a.check_float(out, "output");
  checks::gather_shapes(a, out, idx, r.dim);
  a.check_numel(src, idx.numel(), "source");
  checks::index_tensor(a, idx);
  range_check(a, idx, out.shape[r.dim]);
  a.check_no_overlap(out, src, "scatter_add");
  a.check_no_overlap(out, idx, "scatter_add");
  return r;
}

struct RopeArgs {
  const TensorArg *out, *x, *cos, *sin;
  int64_t B, H, T, D;
  bool per_batch;  // cos/sin are [B, T, D] with B > 1 (else one [1, T, D] table for every batch)
};
// rope(out, x[B,H,T,D], cos[B',T,D], sin[B',T,D]): x float, may be strided with unit last stride;
// out, cos and sin contiguous.
inline RopeArgs parse_rope(const KernelArgs& a) {
  RopeArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1), r.cos = &a.tensor(2), r.sin = &a.tensor(3);
  const TensorArg &out = *r.out, &x = *r.x, &cs = *r.cos, &sn = *r.sin;
  a.check_ndim(x, 4, "x");
  a.check_contiguous(out, "output");
  a.check_numel(out, x.numel(), "output");
  a.check_float(x, "x");
  a.check_same_dtype(out, x, "output");
  a.check_same_dtype(cs, x, "cos");
  a.check_same_dtype(sn, x, "sin");
  a.check_contiguous(cs, "cos");
  a.check_contiguous(sn, "sin");
  r.B = x.shape[0], r.H = x.shape[1], r.T = x.shape[2], r.D = x.shape[3];
  if (r.D % 2) a.fail("head dim must be even");
  if (x.strides[3] != 1) a.fail("x must have unit stride in its last dim");
  a.check_ndim(cs, 3, "cos");
  a.check_ndim(sn, 3, "sin");
  if ((cs.shape[0] != 1 && cs.shape[0] != r.B) || cs.shape[1] != r.T || cs.shape[2] != r.D)
    a.fail("cos must be [1 or B, T, D]");
  for (int d = 0; d < 3; d++)
    if (sn.shape[d] != cs.shape[d]) a.fail("sin and cos shapes differ");
  for (const TensorArg* in : {&x, &cs, &sn}) a.check_no_overlap(out, *in, "rope");
  r.per_batch = cs.shape[0] == r.B && r.B > 1;
  return r;
}

// ------------------------------------------------------------------ reduce
struct ReduceArgs {
  const TensorArg *out, *x;
  ReduceOp op;
  int64_t n;  // R, the reduced extent
  double correction;
  bool arg_op;
  // Only when n > 0 (n == 0 reduces nothing: out is filled with the identity, 1 for prod, else 0).
  int64_t outer, inner, outer_inner;
};

// reduce(out, x, op, R, correction?, inner?): x and out contiguous, x = [outer, R, inner].
inline ReduceArgs parse_reduce(const KernelArgs& a) {
  ReduceArgs r;
  r.out = &a.tensor(0), r.x = &a.tensor(1);
  const TensorArg &out = *r.out, &x = *r.x;
  const std::string& s = a.str(2);
  int op = lookup_reduce(s);
  if (op < 0) a.fail("unknown reduction '" + s + "'");
  r.op = ReduceOp(op);
  const int64_t n = r.n = a.int_(3);
  r.correction = a.is_none(4) ? 1.0 : a.num(4);
  a.check_contiguous(x, "input");
  a.check_contiguous(out, "output");
  if (n <= 0 && r.op != ReduceOp::Sum && r.op != ReduceOp::Prod) a.fail("cannot reduce over an empty dimension");
  const int64_t xn = x.numel();
  if (n < 0 || (n > 0 && xn % n != 0)) a.fail("reduced size does not divide the input");
  r.arg_op = r.op == ReduceOp::Argmax || r.op == ReduceOp::Argmin;
  if (r.arg_op)
    a.check_dtype(out, DType::I64, "output");
  else
    a.check_same_dtype(out, x, "output");
  if (!is_float(x.dtype) && !r.arg_op && r.op != ReduceOp::Sum && r.op != ReduceOp::Max && r.op != ReduceOp::Min &&
      r.op != ReduceOp::Prod)
    a.fail("integer input needs a floating dtype for this reduction");
  r.outer_inner = out.numel();
  r.outer = r.inner = 0;
  if (n == 0) return r;
  // Compare by division (xn % n == 0 here): outer_inner * n can wrap (out [2^11] with R = 2^53
  // gives 2^64 == 0, which once let an empty input pass and the loop read far outside it).
  if (r.outer_inner != xn / n) a.fail("output size does not match input size / R");
  // inner is the trailing extent after the reduced dim: recover it from the output's last dims.
  // It is 0 only for an empty output (x [3, 0] reduced over dim 0).
  r.inner = a.is_none(5) ? 1 : a.int_(5);
  if (r.inner < 0 || (r.inner == 0 ? r.outer_inner != 0 : r.outer_inner % r.inner != 0)) a.fail("bad inner extent");
  r.outer = r.inner == 0 ? 0 : r.outer_inner / r.inner;
  if (x.dtype == DType::BOOL) a.fail("cannot reduce bool tensors (cast first)");
  a.check_no_overlap(out, x, "reduce");
  return r;
}

}  // namespace llava
