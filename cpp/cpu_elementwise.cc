// cpu_elementwise.cc — strided copy/cast, fill, arange, unary and binary maps, where, and the
// counter-based random generator, on the CPU (CUDA twin: cuda/elementwise.cu).
//
// Inputs may be any strided view (broadcast inputs arrive with stride 0: TypeScript expands them);
// outputs are written through their own strides too, so `copy` also serves `contiguous()`, casts
// and writing into slices (cat). When every operand is contiguous the loop is a flat one the
// compiler vectorises; otherwise a StridedWalker keeps offsets without per-element division.
//
// Random numbers: Philox-4x32-10 keyed by the seed, counter = element index + offset, so a stream
// is reproducible, splittable, and the CUDA kernel can produce the same numbers.
#include <algorithm>
#include <cmath>

#include "cpu_common.h"
#include "elementwise_math.h"
#include "isa/isa_kernels.h"
#include "kernel_checks_tensor.h"

namespace llava {
namespace {

constexpr int64_t kGrain = 1 << 14;

// Calls f(out_offset, in_offsets...) for every element of out's shape, in parallel chunks.
template <int N, typename F> void for_each_strided(const TensorArg& out, const TensorArg* const* ins, F&& f) {
  int64_t n = out.numel();
  bool contig = out.is_contiguous();
  for (int k = 0; k < N - 1; k++) contig = contig && ins[k]->is_contiguous();
  if (contig) {
    parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
      int64_t offs[N];
      for (int64_t i = b; i < e; i++) {
        for (int k = 0; k < N; k++) offs[k] = i;
        f(offs);
      }
    });
    return;
  }
  const int64_t* strides[N];
  strides[0] = out.strides;
  for (int k = 0; k < N - 1; k++) {
    if (ins[k]->ndim != out.ndim) throw KernelError("internal: operand rank differs from output rank");
    strides[k + 1] = ins[k]->strides;
  }
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    StridedWalker<N> w(out.ndim, out.shape, strides, b);
    for (int64_t i = b; i < e; i++, w.next()) f(w.off);
  });
}

template <typename TO, typename TI> inline void cast_one(TO* o, const TI* i) {
  if constexpr (std::is_same_v<TO, TI>)
    *o = *i;
  else
    store(o, load(i));
}

// copy(out, x): out[...] = cast(x[...]), any dtypes, any strides.
void copy_kernel(const KernelArgs& a) {
  const CopyArgs A = parse_copy(a);
  const TensorArg &out = *A.out, &x = *A.x;
  const TensorArg* ins[1] = {&x};
  if (out.dtype == x.dtype && out.is_contiguous() && x.is_contiguous()) {
    std::memcpy(out.bytes(), x.bytes(), out.numel() * dtype_size(out.dtype));
    return;
  }
  const int nd = out.ndim;
  if (out.dtype == x.dtype && nd >= 2 && x.ndim == nd && out.numel() > 0 && out.shape[nd - 1] >= 16 &&
      out.strides[nd - 1] == 1 && x.strides[nd - 1] == 1) {
    // Same dtype, unit-stride rows on both sides (head permutes, slices, cat): one memmove per row (a
    // row may overlap its source when a tensor is copied into a shifted view of itself).
    const int64_t inner = out.shape[nd - 1], rows = out.numel() / inner, es = dtype_size(out.dtype);
    const int64_t* strides[2] = {out.strides, x.strides};
    parallel_for(rows, std::max<int64_t>(1, kGrain / inner), [&](int64_t b, int64_t e) {
      StridedWalker<2> w(nd - 1, out.shape, strides, b);
      for (int64_t r = b; r < e; r++, w.next())
        std::memmove(out.bytes() + w.off[0] * es, x.bytes() + w.off[1] * es, size_t(inner * es));
    });
    return;
  }
  LLAVA_DISPATCH_ALL(a, out.dtype, TO, {
    LLAVA_DISPATCH_ALL(a, x.dtype, TI, {
      TO* po = out.data<TO>();
      const TI* px = x.data<TI>();
      for_each_strided<2>(out, ins, [&](const int64_t* o) { cast_one(po + o[0], px + o[1]); });
    });
  });
}

// fill(out, value)
void fill_kernel(const KernelArgs& a) {
  const FillArgs A = parse_fill(a);
  const TensorArg& out = *A.out;
  const double v = A.value;
  LLAVA_DISPATCH_ALL(a, out.dtype, T, {
    T* p = out.data<T>();
    T val;
    store(&val, v);
    for_each_strided<1>(out, nullptr, [&](const int64_t* o) { p[o[0]] = val; });
  });
}

// arange(out, start, step): out[i] = start + i * step (out contiguous 1-D).
void arange_kernel(const KernelArgs& a) {
  const ArangeArgs A = parse_arange(a);
  const TensorArg& out = *A.out;
  const double start = A.start, step = A.step;
  LLAVA_DISPATCH_ALL(a, out.dtype, T, {
    T* p = out.data<T>();
    int64_t n = out.numel();
    for (int64_t i = 0; i < n; i++) store(p + i, start + double(i) * step);
  });
}

// --------------------------------------------------------------- unary
using U = UnaryOp;  // op names and numbering: kernel_ops.h

// The formulas (unary_fwd, unary_grad, int_unary): elementwise_math.h, shared with CUDA.

// Activations at memory speed: contiguous f32/bf16 exp, tanh, sigmoid, gelu, gelu_tanh, quick_gelu and
// silu (forward, and backward with dy) go to the vectorised kernels of isa/act_*.cc (AVX-512 where the
// CPU has it, else AVX2) in chunks over the pool. False when the call is not one of those (the
// generic loops below run it, the only path of a portable build).
bool fast_activation(UnaryOp op, const TensorArg& out, const TensorArg& x, const TensorArg* dy) {
#if LLAVA_X86_ISA
  using namespace unary_op;
  const CpuIsa level = cpu_isa();
  if (level < CpuIsa::Avx2) return false;
  if (!(op == Exp || op == Tanh || op == Sigmoid || op == Gelu || op == GeluTanh || op == QuickGelu || op == Silu))
    return false;
  if ((x.dtype != DType::F32 && x.dtype != DType::BF16) || out.dtype != x.dtype) return false;
  if (!out.is_contiguous() || !x.is_contiguous() || (dy && (!dy->is_contiguous() || dy->dtype != x.dtype)))
    return false;
  const isa::ActKernels& k = isa::act_kernels(level);
  parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) {
    if (x.dtype == DType::F32)
      k.f32.unary(op, x.data<float>() + b, dy ? dy->data<float>() + b : nullptr, out.data<float>() + b, e - b);
    else
      k.bf16.unary(op, bf16_bits(x) + b, dy ? bf16_bits(*dy) + b : nullptr, bf16_bits(out) + b, e - b);
  });
  return true;
#else
  (void)op, (void)out, (void)x, (void)dy;
  return false;
#endif
}

// Contiguous f32 relu/neg/abs/square (activation layers, bias-free CNN tails): the op chosen once per
// chunk so the loop vectorises; same formulas as unary_fwd (relu keeps NaN). In place is fine.
bool flat_unary_f32(UnaryOp op, const TensorArg& out, const TensorArg& x) {
  using namespace unary_op;
  if (x.dtype != DType::F32 || !out.is_contiguous() || !x.is_contiguous()) return false;
  if (op != Relu && op != Neg && op != Abs && op != Square) return false;
  float* po = out.data<float>();
  const float* px = x.data<float>();
  auto run = [&](auto f) {
    parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) po[i] = f(px[i]);
    });
  };
  if (op == Relu)
    run([](float v) { return v < 0.f ? 0.f : v; });
  else if (op == Neg)
    run([](float v) { return -v; });
  else if (op == Abs)
    run([](float v) { return std::fabs(v); });
  else
    run([](float v) { return v * v; });
  return true;
}

// unary(out, x, op, p): out = f(x). Neg/abs/sign/square also take integer dtypes.
void unary_kernel(const KernelArgs& a) {
  const UnaryArgs A = parse_unary(a);
  const TensorArg &out = *A.out, &x = *A.x;
  const U op = A.op;
  const double p = A.p;
  const TensorArg* ins[1] = {&x};
  if (!is_float(x.dtype)) {
    LLAVA_DISPATCH_ALL(a, x.dtype, T, {
      T* po = out.data<T>();
      const T* px = x.data<T>();
      for_each_strided<2>(out, ins, [&](const int64_t* o) { po[o[0]] = int_unary<T>(op, px[o[1]]); });
    });
    return;
  }
  if (fast_activation(op, out, x, nullptr)) return;
  if (flat_unary_f32(op, out, x)) return;
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T, {
    using F = acc_t<T>;
    T* po = out.data<T>();
    const T* px = x.data<T>();
    for_each_strided<2>(out, ins, [&](const int64_t* o) { store(po + o[0], unary_fwd<F>(op, load(px + o[1]), F(p))); });
  });
}

// unary_bwd(dx, x, dy, op, p): dx = dy * f'(x)
void unary_bwd_kernel(const KernelArgs& a) {
  const UnaryBwdArgs A = parse_unary_bwd(a);
  const TensorArg &dx = *A.dx, &x = *A.x, &dy = *A.dy;
  const U op = A.op;
  const double p = A.p;
  const TensorArg* ins[2] = {&x, &dy};
  if (fast_activation(op, dx, x, &dy)) return;
  LLAVA_DISPATCH_FLOAT(a, x.dtype, T, {
    using F = acc_t<T>;
    T* po = dx.data<T>();
    const T* px = x.data<T>();
    const T* pd = dy.data<T>();
    for_each_strided<3>(dx, ins, [&](const int64_t* o) {
      store(po + o[0], load(pd + o[2]) * unary_grad<F>(op, load(px + o[1]), F(p)));
    });
  });
}

// --------------------------------------------------------------- swiglu
// swiglu(out, gate, up): out = silu(gate) * up, and swiglu_bwd(dgate, dup, gate, up, dy): both
// gradients from one read of gate, up and dy (formulas: elementwise_math.h). Contiguous f32/bf16
// operands run the vectorised isa/act_math.h loop; anything else (strided views, f64/f16, a portable
// build) the generic walk, f32 (f64) maths either way.
bool fast_swiglu(const TensorArg& out, const TensorArg* out2, const TensorArg& g, const TensorArg& u,
                 const TensorArg* dy) {
#if LLAVA_X86_ISA
  const CpuIsa level = cpu_isa();
  if (level < CpuIsa::Avx2 || (g.dtype != DType::F32 && g.dtype != DType::BF16)) return false;
  if (!out.is_contiguous() || !g.is_contiguous() || !u.is_contiguous() || (dy && !dy->is_contiguous())) return false;
  const isa::ActKernels& k = isa::act_kernels(level);
  parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) {
    if (g.dtype == DType::F32)
      k.f32.swiglu(g.data<float>() + b, u.data<float>() + b, dy ? dy->data<float>() + b : nullptr,
                   out.data<float>() + b, out2 ? out2->data<float>() + b : nullptr, e - b);
    else
      k.bf16.swiglu(bf16_bits(g) + b, bf16_bits(u) + b, dy ? bf16_bits(*dy) + b : nullptr, bf16_bits(out) + b,
                    out2 ? bf16_bits(*out2) + b : nullptr, e - b);
  });
  return true;
#else
  (void)out, (void)out2, (void)g, (void)u, (void)dy;
  return false;
#endif
}

void swiglu_kernel(const KernelArgs& a) {
  const SwigluArgs A = parse_swiglu(a);
  const TensorArg &out = *A.out, &g = *A.gate, &u = *A.up;
  if (fast_swiglu(out, nullptr, g, u, nullptr)) return;
  const TensorArg* ins[2] = {&g, &u};
  LLAVA_DISPATCH_FLOAT(a, g.dtype, T, {
    using F = acc_t<T>;
    T* po = out.data<T>();
    const T *pg = g.data<T>(), *pu = u.data<T>();
    for_each_strided<3>(
        out, ins, [&](const int64_t* o) { store(po + o[0], swiglu_fwd<F>(F(load(pg + o[1])), F(load(pu + o[2])))); });
  });
}

void swiglu_bwd_kernel(const KernelArgs& a) {
  const SwigluBwdArgs A = parse_swiglu_bwd(a);
  const TensorArg &dg = *A.dgate, &du = *A.dup, &g = *A.gate, &u = *A.up, &dy = *A.dy;
  if (fast_swiglu(dg, &du, g, u, &dy)) return;
  // dgate and dup are contiguous (parse_swiglu_bwd), so dup shares dgate's offsets.
  const TensorArg* ins[3] = {&g, &u, &dy};
  LLAVA_DISPATCH_FLOAT(a, g.dtype, T, {
    using F = acc_t<T>;
    T *pdg = dg.data<T>(), *pdu = du.data<T>();
    const T *pg = g.data<T>(), *pu = u.data<T>(), *pd = dy.data<T>();
    for_each_strided<4>(dg, ins, [&](const int64_t* o) {
      F rg, ru;
      swiglu_grad<F>(F(load(pg + o[1])), F(load(pu + o[2])), F(load(pd + o[3])), &rg, &ru);
      store(pdg + o[0], rg);
      store(pdu + o[0], ru);
    });
  });
}

// --------------------------------------------------------------- binary
using B = BinaryOp;  // op names and numbering: kernel_ops.h

// The formulas (binary_fwd, binary_compare): elementwise_math.h, shared with CUDA.

// binary(out, a, b, op): a and b have out's shape (broadcast views) and one dtype; comparisons
// write bool.
// Contiguous add/sub/mul/div: the op chosen once per chunk, not per element, so the loops vectorise
// (AVX2 registers for f32/bf16 in the AVX2 copy: bf16 widened and rounded once in registers).
template <typename T, typename F, typename Op>
inline void flat_loop(T* po, const T* px, const T* py, int64_t b, int64_t e, Op f) {
  int64_t i = b;
#if LLAVA_AVX2
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16>)
    for (; i + 8 <= e; i += 8) vstore(po + i, f(vload(px + i), vload(py + i)));
#endif
  for (; i < e; i++) store(po + i, f(F(load(px + i)), F(load(py + i))));
}
template <typename T, typename F> void flat_binary(B op, T* po, const T* px, const T* py, int64_t b, int64_t e) {
  switch (op) {
    case B::Add:
      return flat_loop<T, F>(po, px, py, b, e, [](auto u, auto v) { return u + v; });
    case B::Sub:
      return flat_loop<T, F>(po, px, py, b, e, [](auto u, auto v) { return u - v; });
    case B::Mul:
      return flat_loop<T, F>(po, px, py, b, e, [](auto u, auto v) { return u * v; });
    default:
      return flat_loop<T, F>(po, px, py, b, e, [](auto u, auto v) { return u / v; });
  }
}

// When `full` is contiguous and `row` repeats one contiguous block of its trailing axes over its
// leading axes (stride 0 there: a broadcast view), the block's length (16 or more); else 0.
int64_t row_period(const TensorArg& full, const TensorArg& row) {
  if (!full.is_contiguous() || row.ndim != full.ndim) return 0;
  int64_t P = 1;
  int d = row.ndim - 1;
  for (; d >= 0 && (row.shape[d] == 1 || row.strides[d] == P); d--) P *= row.shape[d];
  for (; d >= 0; d--)
    if (row.shape[d] != 1 && row.strides[d] != 0) return 0;
  return P >= 16 && P < full.numel() ? P : 0;  // shorter rows: the strided walk is as quick
}

void binary_kernel(const KernelArgs& a) {
  const BinaryArgs A = parse_binary(a);
  const TensorArg &out = *A.out, &x = *A.x, &y = *A.y;
  const B op = A.op;
  const TensorArg* ins[2] = {&x, &y};
  LLAVA_DISPATCH_ALL(a, x.dtype, T, {
    using F = acc_t<T>;
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    if (A.cmp) {
      bool* po = out.data<bool>();
      for_each_strided<3>(
          out, ins, [&](const int64_t* o) { po[o[0]] = binary_compare<F>(op, load(px + o[1]), load(py + o[2])); });
    } else if constexpr (!std::is_same_v<T, bool>) {  // parse_binary refuses arithmetic on bool
      T* po = out.data<T>();
      int64_t period = 0;
      if (out.is_contiguous() && x.is_contiguous() && y.is_contiguous() && op <= B::Div) {
        // Flat loops the compiler vectorises.
        parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) { flat_binary<T, F>(op, po, px, py, b, e); });
      } else if (op <= B::Div && out.is_contiguous() && (period = row_period(x, y)) > 0) {
        // y is one row repeated over x's rows (a bias over the last axes): flat loops per row.
        const int64_t P = period;
        parallel_for(out.numel() / P, std::max<int64_t>(1, kGrain / P), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; r++) flat_binary<T, F>(op, po + r * P, px + r * P, py, 0, P);
        });
      } else if (op <= B::Div && out.is_contiguous() && (period = row_period(y, x)) > 0) {
        const int64_t P = period;
        parallel_for(out.numel() / P, std::max<int64_t>(1, kGrain / P), [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; r++) flat_binary<T, F>(op, po + r * P, px, py + r * P, 0, P);
        });
      } else {
        for_each_strided<3>(
            out, ins, [&](const int64_t* o) { store(po + o[0], binary_fwd<F>(op, load(px + o[1]), load(py + o[2]))); });
      }
    }
  });
}

// where(out, cond, x, y): out = cond ? x : y (cond bool, all views of out's shape)
void where_kernel(const KernelArgs& a) {
  const WhereArgs A = parse_where(a);
  const TensorArg &out = *A.out, &c = *A.cond, &x = *A.x, &y = *A.y;
  const bool* pc = c.data<bool>();
  const TensorArg* ins[3] = {&c, &x, &y};
  LLAVA_DISPATCH_ALL(a, out.dtype, T, {
    T* po = out.data<T>();
    const T* px = x.data<T>();
    const T* py = y.data<T>();
    for_each_strided<4>(out, ins, [&](const int64_t* o) { po[o[0]] = pc[o[1]] ? px[o[2]] : py[o[3]]; });
  });
}

// --------------------------------------------------------------- random
inline void philox(uint32_t ctr[4], uint32_t key[2]) {
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = uint64_t(0xD2511F53u) * ctr[0];
    uint64_t p1 = uint64_t(0xCD9E8D57u) * ctr[2];
    uint32_t n0 = uint32_t(p1 >> 32) ^ ctr[1] ^ key[0];
    uint32_t n2 = uint32_t(p0 >> 32) ^ ctr[3] ^ key[1];
    ctr[1] = uint32_t(p1);
    ctr[3] = uint32_t(p0);
    ctr[0] = n0;
    ctr[2] = n2;
    key[0] += 0x9E3779B9u;
    key[1] += 0xBB67AE85u;
  }
}

// random(out, kind, seed, offset, p): kind 'uniform' [0,1), 'normal' N(0,1) by Box-Muller,
// 'bernoulli' (1 with probability p). Element i uses Philox counter (offset + i).
void random_kernel(const KernelArgs& a) {
  const RandomArgs A = parse_random(a);
  const TensorArg& out = *A.out;
  const uint64_t seed = A.seed, offset = A.offset;
  const double p = A.p;
  const RandomKind k = A.kind;
  LLAVA_DISPATCH_ALL(a, out.dtype, T, {
    T* po = out.data<T>();
    parallel_for(out.numel(), kGrain, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        uint64_t c = offset + (uint64_t)i;
        uint32_t ctr[4] = {uint32_t(c), uint32_t(c >> 32), 0, 0};
        uint32_t key[2] = {uint32_t(seed), uint32_t(seed >> 32)};
        philox(ctr, key);
        double u1 = (double(ctr[0]) + 0.5) / 4294967296.0;
        double v;
        if (k == RandomKind::Uniform)
          v = double(ctr[0] >> 8) / 16777216.0;  // 24 bits: exact in f32, never rounds up to 1
        else if (k == RandomKind::Normal) {
          double u2 = double(ctr[1]) / 4294967296.0;
          v = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        } else
          v = u1 < p ? 1.0 : 0.0;
        store(po + i, v);
      }
    });
  });
}

}  // namespace

LLAVA_CPU_KERNEL("copy", copy_kernel, cpu_copy);
LLAVA_CPU_KERNEL("fill", fill_kernel, cpu_fill);
LLAVA_CPU_KERNEL("arange", arange_kernel, cpu_arange);
LLAVA_CPU_KERNEL("unary", unary_kernel, cpu_unary);
LLAVA_CPU_KERNEL("unary_bwd", unary_bwd_kernel, cpu_unary_bwd);
LLAVA_CPU_KERNEL("swiglu", swiglu_kernel, cpu_swiglu);
LLAVA_CPU_KERNEL("swiglu_bwd", swiglu_bwd_kernel, cpu_swiglu_bwd);
LLAVA_CPU_KERNEL("binary", binary_kernel, cpu_binary);
LLAVA_CPU_KERNEL("where", where_kernel, cpu_where);
LLAVA_CPU_KERNEL("random", random_kernel, cpu_random);

}  // namespace llava
