// elementwise.cu — copy/cast, fill, arange, unary and unary_bwd, swiglu and swiglu_bwd, binary
// (+ comparisons to bool), where, and the counter-based random generator on the GPU. Same names, arguments, checks and
// formulas as cpp/cpu_elementwise.cc.
//
// Shapes: every operand is a view with the output's shape (broadcast inputs arrive with stride 0),
// outputs may be strided too (copy into a slice).
// Two paths per map:
//   * contiguous fast path — all operands contiguous and 16-byte aligned: each thread moves one
//     16-byte vector (8 bf16, 4 f32, ...) per operand (Pack<T,V>), grid-stride loop, the last
//     n % V elements handled one per thread;
//   * strided path — make_geo() coalesces dims (a contiguous-but-unaligned view becomes 1-D) and
//     each element's offsets come from a div/mod walk over at most 8 dims (32-bit when it fits).
// The op is a runtime switch inside the kernel (uniform across a warp, so no divergence) rather
// than a template parameter: 22 unary ops x dtypes x paths would be hundreds of kernels.
// The scalar formulas are the CPU's own (cpp/elementwise_math.h, __host__ __device__), with CUDA's
// accurate (not fast-math) functions, so CUDA and CPU agree to a few ulps, not bit for bit (pow
// and random use f64 like the CPU).
//
// Random: Philox-4x32-10 with the CPU's constants; element i uses counter (offset + i) and key
// seed, uniform = (ctr0 >> 8) / 2^24, normal = Box-Muller on ctr0/ctr1 in f64, bernoulli = u1 < p,
// so CPU and CUDA produce the same numbers.
#include <cmath>
#include <type_traits>

#include "cuda_common.cuh"
#include "elementwise_math.h"
#include "kernel_checks_tensor.h"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;

__device__ __forceinline__ int64_t global_tid() { return blockIdx.x * (int64_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t grid_stride() { return (int64_t)gridDim.x * blockDim.x; }

// ---------------------------------------------------------------- generic N-ary map
// out = op(in[0][i], ..., in[NIN-1][i]); all inputs share the storage type TI.
template <typename TO, typename TI, int NIN> struct MapPtrs {
  TO* out;
  const TI* in[NIN];
};

template <int NIN, typename Op, typename TI>
__device__ __forceinline__ auto apply_op(const Op& op, const TI (&x)[NIN]) {
  if constexpr (NIN == 1)
    return op(x[0]);
  else
    return op(x[0], x[1]);
}

template <int V, typename TO, typename TI, int NIN, typename Op> __global__ void __launch_bounds__(kBlock)
    map_vec_kernel(MapPtrs<TO, TI, NIN> p, int64_t n, Op op) {
  int64_t groups = n / V;
  for (int64_t g = global_tid(); g < groups; g += grid_stride()) {
    Pack<TI, V> in[NIN];
#pragma unroll
    for (int k = 0; k < NIN; k++) in[k] = reinterpret_cast<const Pack<TI, V>*>(p.in[k])[g];
    Pack<TO, V> r;
#pragma unroll
    for (int j = 0; j < V; j++) {
      TI x[NIN];
#pragma unroll
      for (int k = 0; k < NIN; k++) x[k] = in[k].v[j];
      r.v[j] = apply_op<NIN>(op, x);
    }
    reinterpret_cast<Pack<TO, V>*>(p.out)[g] = r;
  }
  int64_t t = groups * V + global_tid();  // the n % V tail
  if (t < n) {
    TI x[NIN];
#pragma unroll
    for (int k = 0; k < NIN; k++) x[k] = p.in[k][t];
    p.out[t] = apply_op<NIN>(op, x);
  }
}

template <typename I, typename TO, typename TI, int NIN, typename Op> __global__ void __launch_bounds__(kBlock)
    map_strided_kernel(MapPtrs<TO, TI, NIN> p, Geo<NIN + 1> g, int64_t n, Op op) {
  for (int64_t i = global_tid(); i < n; i += grid_stride()) {
    int64_t off[NIN + 1];
    geo_offsets<NIN + 1, I>(g, (I)i, off);
    TI x[NIN];
#pragma unroll
    for (int k = 0; k < NIN; k++) x[k] = p.in[k][off[k + 1]];
    p.out[off[0]] = apply_op<NIN>(op, x);
  }
}

template <typename TO, typename TI, int NIN, typename Op>
void launch_map(const KernelArgs& a, const TensorArg& out, const TensorArg* const* ins, Op op) {
  int64_t n = out.numel();
  if (n == 0) return;
  MapPtrs<TO, TI, NIN> p;
  p.out = reinterpret_cast<TO*>(out.bytes());
  for (int k = 0; k < NIN; k++) p.in[k] = reinterpret_cast<const TI*>(ins[k]->bytes());
  constexpr int V = int(16 / (sizeof(TO) > sizeof(TI) ? sizeof(TO) : sizeof(TI)));
  bool fast = out.is_contiguous() && aligned_to(p.out, sizeof(TO) * V);
  for (int k = 0; k < NIN; k++) fast = fast && ins[k]->is_contiguous() && aligned_to(p.in[k], sizeof(TI) * V);
  cudaStream_t s = stream();
  if (fast) {
    launch(map_vec_kernel<V, TO, TI, NIN, Op>, grid_for(n / V + 1), kBlock, 0, s, p, n, op);
  } else {
    Geo<NIN + 1> g = make_geo<NIN + 1>(out, ins);
    if (n <= (int64_t)UINT32_MAX)
      launch(map_strided_kernel<uint32_t, TO, TI, NIN, Op>, grid_for(n), kBlock, 0, s, p, g, n, op);
    else
      launch(map_strided_kernel<int64_t, TO, TI, NIN, Op>, grid_for(n), kBlock, 0, s, p, g, n, op);
  }
  check_launch(a);
}

// ---------------------------------------------------------------- copy
template <typename TO, typename TI> struct CastOp {
  __device__ __forceinline__ TO operator()(TI x) const { return from_acc<TO>(to_acc<TI>(x)); }
};
template <typename U> struct RawOp {
  __device__ __forceinline__ U operator()(U x) const { return x; }
};

// copy(out, x): out[...] = cast(x[...]), any dtypes, any strides.
void copy_kernel(const KernelArgs& a) {
  const CopyArgs A = parse_copy(a);
  const TensorArg &out = *A.out, &x = *A.x;
  const TensorArg* ins[1] = {&x};
  if (out.numel() == 0) return;
  if (out.dtype == x.dtype) {
    if (out.is_contiguous() && x.is_contiguous()) {
      CUDA_CHECK(cudaMemcpyAsync(out.bytes(), x.bytes(), out.numel() * dtype_size(out.dtype), cudaMemcpyDeviceToDevice,
                                 stream()));
      return;
    }
    GPU_DISPATCH_BITS(a, dtype_size(out.dtype), U, launch_map<U, U, 1>(a, out, ins, RawOp<U>{}));
    return;
  }
  GPU_DISPATCH_ALL(a, out.dtype, TO, {
    GPU_DISPATCH_ALL(a, x.dtype, TI, {
      if constexpr (!std::is_same_v<TO, TI>) launch_map<TO, TI, 1>(a, out, ins, CastOp<TO, TI>{});
    });
  });
}

// ---------------------------------------------------------------- fill / arange
template <typename U, int V> __global__ void __launch_bounds__(kBlock) fill_vec_kernel(U* p, int64_t n, U v) {
  Pack<U, V> pk;
#pragma unroll
  for (int j = 0; j < V; j++) pk.v[j] = v;
  int64_t groups = n / V;
  for (int64_t g = global_tid(); g < groups; g += grid_stride()) reinterpret_cast<Pack<U, V>*>(p)[g] = pk;
  int64_t t = groups * V + global_tid();
  if (t < n) p[t] = v;
}

template <typename U, typename I> __global__ void __launch_bounds__(kBlock)
    fill_strided_kernel(U* p, Geo<1> g, int64_t n, U v) {
  for (int64_t i = global_tid(); i < n; i += grid_stride()) {
    int64_t off[1];
    geo_offsets<1, I>(g, (I)i, off);
    p[off[0]] = v;
  }
}

template <typename U> void launch_fill(const KernelArgs& a, const TensorArg& out, U v) {
  int64_t n = out.numel();
  U* p = reinterpret_cast<U*>(out.bytes());
  cudaStream_t s = stream();
  constexpr int V = int(16 / sizeof(U));
  if (out.is_contiguous()) {
    unsigned char b[sizeof(U)];
    std::memcpy(b, &v, sizeof(U));
    bool same = true;
    for (size_t k = 1; k < sizeof(U); k++) same = same && b[k] == b[0];
    if (same) {
      CUDA_CHECK(cudaMemsetAsync(p, b[0], n * sizeof(U), s));
      return;
    }
    if (aligned_to(p, 16))
      launch(fill_vec_kernel<U, V>, grid_for(n / V + 1), kBlock, 0, s, p, n, v);
    else
      launch(fill_vec_kernel<U, 1>, grid_for(n), kBlock, 0, s, p, n, v);
  } else {
    Geo<1> g = make_geo<1>(out, nullptr);
    if (n <= (int64_t)UINT32_MAX)
      launch(fill_strided_kernel<U, uint32_t>, grid_for(n), kBlock, 0, s, p, g, n, v);
    else
      launch(fill_strided_kernel<U, int64_t>, grid_for(n), kBlock, 0, s, p, g, n, v);
  }
  check_launch(a);
}

// The storage bits of `v` as the CPU's store(&val, v) computes them.
template <typename U> U fill_bits(DType dt, double v) {
  uint64_t bits = 0;
  switch (dt) {
    case DType::F32: {
      float f = float(v);
      std::memcpy(&bits, &f, 4);
      break;
    }
    case DType::F64:
      std::memcpy(&bits, &v, 8);
      break;
    case DType::BF16:
      bits = host_f32_to_bf16(float(v));
      break;
    case DType::F16:
      bits = host_f32_to_f16(float(v));
      break;
    case DType::I32: {
      int32_t i = int32_t(v);
      std::memcpy(&bits, &i, 4);
      break;
    }
    case DType::I64: {
      int64_t i = int64_t(v);
      std::memcpy(&bits, &i, 8);
      break;
    }
    case DType::U8:
      bits = uint8_t(v);
      break;
    case DType::BOOL:
      bits = v != 0.0 ? 1 : 0;
      break;
  }
  U u;
  std::memcpy(&u, &bits, sizeof(U));  // little-endian: the low bytes hold the value
  return u;
}

// fill(out, value)
void fill_kernel(const KernelArgs& a) {
  const FillArgs A = parse_fill(a);
  const TensorArg& out = *A.out;
  const double v = A.value;
  if (out.numel() == 0) return;
  GPU_DISPATCH_BITS(a, dtype_size(out.dtype), U, launch_fill<U>(a, out, fill_bits<U>(out.dtype, v)));
}

template <typename T> __global__ void __launch_bounds__(kBlock)
    arange_kernel_dev(T* p, int64_t n, double start, double step) {
  for (int64_t i = global_tid(); i < n; i += grid_stride()) store(p + i, start + double(i) * step);
}

// arange(out, start, step): out[i] = start + i * step (out contiguous 1-D).
void arange_kernel(const KernelArgs& a) {
  const ArangeArgs A = parse_arange(a);
  const TensorArg& out = *A.out;
  const double start = A.start, step = A.step;
  int64_t n = out.numel();
  if (n == 0) return;
  GPU_DISPATCH_ALL(a, out.dtype, T, {
    launch(arange_kernel_dev<T>, grid_for(n), kBlock, 0, stream(), reinterpret_cast<T*>(out.bytes()), n, start, step);
  });
  check_launch(a);
}

// ---------------------------------------------------------------- unary
// Op names and numbering: kernel_ops.h (op stays an int on the device).
using namespace unary_op;

// The formulas (unary_fwd, unary_grad, int_unary): cpp/elementwise_math.h, shared with the CPU.
template <typename T> struct UnaryOp {
  int op;
  acc_t<T> p;
  __device__ __forceinline__ T operator()(T x) const { return from_acc<T>(unary_fwd<acc_t<T>>(op, to_acc<T>(x), p)); }
};
template <typename T> struct IntUnaryOp {  // neg, abs, square, sign (parse_unary admits no other)
  int op;
  __device__ __forceinline__ T operator()(T v) const { return int_unary<T>(op, v); }
};
template <typename T> struct UnaryBwdOp {  // (x, dy) -> dy * f'(x)
  int op;
  acc_t<T> p;
  __device__ __forceinline__ T operator()(T x, T dy) const {
    return from_acc<T>(to_acc<T>(dy) * unary_grad<acc_t<T>>(op, to_acc<T>(x), p));
  }
};

// unary(out, x, op, p): out = f(x). Neg/abs/sign/square also take integer dtypes.
void unary_kernel(const KernelArgs& a) {
  const UnaryArgs A = parse_unary(a);
  const TensorArg &out = *A.out, &x = *A.x;
  const int op = A.op;
  const double p = A.p;
  const TensorArg* ins[1] = {&x};
  if (!is_float(x.dtype)) {
    switch (x.dtype) {
      case DType::I32:
        launch_map<int32_t, int32_t, 1>(a, out, ins, IntUnaryOp<int32_t>{op});
        break;
      case DType::I64:
        launch_map<int64_t, int64_t, 1>(a, out, ins, IntUnaryOp<int64_t>{op});
        break;
      case DType::U8:
        launch_map<uint8_t, uint8_t, 1>(a, out, ins, IntUnaryOp<uint8_t>{op});
        break;
      default:
        a.fail("unknown dtype");
    }
    return;
  }
  GPU_DISPATCH_FLOAT(a, x.dtype, T, { launch_map<T, T, 1>(a, out, ins, UnaryOp<T>{op, acc_t<T>(p)}); });
}

// unary_bwd(dx, x, dy, op, p): dx = dy * f'(x)
void unary_bwd_kernel(const KernelArgs& a) {
  const UnaryBwdArgs A = parse_unary_bwd(a);
  const TensorArg &dx = *A.dx, &x = *A.x, &dy = *A.dy;
  const int op = A.op;
  const double p = A.p;
  const TensorArg* ins[2] = {&x, &dy};
  GPU_DISPATCH_FLOAT(a, x.dtype, T, { launch_map<T, T, 2>(a, dx, ins, UnaryBwdOp<T>{op, acc_t<T>(p)}); });
}

// ---------------------------------------------------------------- swiglu
// swiglu(out, gate, up) through the generic two-input map; swiglu_bwd(dgate, dup, gate, up, dy) in
// one kernel that reads each input once and writes both gradients (the map has a single output).
// dgate and dup are contiguous (parse_swiglu_bwd), so dup takes dgate's offset. Formulas:
// cpp/elementwise_math.h (swiglu_fwd, swiglu_grad), shared with the CPU.
template <typename T> struct SwigluFn {
  __device__ __forceinline__ T operator()(T g, T u) const {
    return from_acc<T>(swiglu_fwd(to_acc<T>(g), to_acc<T>(u)));
  }
};

template <typename I, typename T> __global__ void __launch_bounds__(kBlock)
    swiglu_bwd_kernel_dev(T* dg, T* du, const T* g, const T* u, const T* dy, Geo<4> geo, int64_t n) {
  for (int64_t i = global_tid(); i < n; i += grid_stride()) {
    int64_t off[4];
    geo_offsets<4, I>(geo, (I)i, off);
    acc_t<T> rg, ru;
    swiglu_grad(to_acc<T>(g[off[1]]), to_acc<T>(u[off[2]]), to_acc<T>(dy[off[3]]), &rg, &ru);
    dg[off[0]] = from_acc<T>(rg);
    du[off[0]] = from_acc<T>(ru);
  }
}

void swiglu_kernel(const KernelArgs& a) {
  const SwigluArgs A = parse_swiglu(a);
  const TensorArg* ins[2] = {A.gate, A.up};
  GPU_DISPATCH_FLOAT(a, A.gate->dtype, T, { launch_map<T, T, 2>(a, *A.out, ins, SwigluFn<T>{}); });
}

void swiglu_bwd_kernel(const KernelArgs& a) {
  const SwigluBwdArgs A = parse_swiglu_bwd(a);
  const int64_t n = A.dgate->numel();
  if (n == 0) return;
  const TensorArg* ins[3] = {A.gate, A.up, A.dy};
  Geo<4> geo = make_geo<4>(*A.dgate, ins);
  GPU_DISPATCH_FLOAT(a, A.gate->dtype, T, {
    T* dg = reinterpret_cast<T*>(A.dgate->bytes());
    T* du = reinterpret_cast<T*>(A.dup->bytes());
    const T* g = reinterpret_cast<const T*>(A.gate->bytes());
    const T* u = reinterpret_cast<const T*>(A.up->bytes());
    const T* dy = reinterpret_cast<const T*>(A.dy->bytes());
    if (n <= (int64_t)UINT32_MAX)
      launch(swiglu_bwd_kernel_dev<uint32_t, T>, grid_for(n), kBlock, 0, stream(), dg, du, g, u, dy, geo, n);
    else
      launch(swiglu_bwd_kernel_dev<int64_t, T>, grid_for(n), kBlock, 0, stream(), dg, du, g, u, dy, geo, n);
  });
  check_launch(a);
}

// ---------------------------------------------------------------- binary
// Op names and numbering: kernel_ops.h. Qualified (BinaryOp::Pow) because unary_op is in scope.
// Formulas (binary_fwd, binary_compare): cpp/elementwise_math.h, shared with the CPU.
template <typename T> struct BinaryFn {
  int op;
  __device__ __forceinline__ T operator()(T x, T y) const {
    return from_acc<T>(binary_fwd<acc_t<T>>(op, to_acc<T>(x), to_acc<T>(y)));
  }
};
template <typename T> struct CompareOp {
  int op;
  __device__ __forceinline__ bool operator()(T x, T y) const {
    return binary_compare<acc_t<T>>(op, to_acc<T>(x), to_acc<T>(y));
  }
};

// binary(out, a, b, op): a and b have out's shape (broadcast views) and one dtype; comparisons
// write bool.
void binary_kernel(const KernelArgs& a) {
  const BinaryArgs A = parse_binary(a);
  const TensorArg &out = *A.out, &x = *A.x, &y = *A.y;
  const int op = A.op;
  const bool cmp = A.cmp;
  const TensorArg* ins[2] = {&x, &y};
  GPU_DISPATCH_ALL(a, x.dtype, T, {
    if (cmp) {
      launch_map<bool, T, 2>(a, out, ins, CompareOp<T>{op});
    } else if constexpr (!std::is_same_v<T, bool>) {
      launch_map<T, T, 2>(a, out, ins, BinaryFn<T>{op});
    }
  });
}

// ---------------------------------------------------------------- where
template <typename U, typename I> __global__ void __launch_bounds__(kBlock)
    where_kernel_dev(U* out, const bool* c, const U* x, const U* y, Geo<4> g, int64_t n) {
  for (int64_t i = global_tid(); i < n; i += grid_stride()) {
    int64_t off[4];
    geo_offsets<4, I>(g, (I)i, off);
    out[off[0]] = c[off[1]] ? x[off[2]] : y[off[3]];
  }
}

// where(out, cond, x, y): out = cond ? x : y (cond bool, all views of out's shape). A raw select,
// so it runs on element bits by size; contiguous operands coalesce to one dim.
void where_kernel(const KernelArgs& a) {
  const WhereArgs A = parse_where(a);
  const TensorArg &out = *A.out, &c = *A.cond, &x = *A.x, &y = *A.y;
  int64_t n = out.numel();
  if (n == 0) return;
  const TensorArg* ins[3] = {&c, &x, &y};
  Geo<4> g = make_geo<4>(out, ins);
  cudaStream_t s = stream();
  GPU_DISPATCH_BITS(a, dtype_size(out.dtype), U, {
    U* po = reinterpret_cast<U*>(out.bytes());
    const bool* pc = reinterpret_cast<const bool*>(c.bytes());
    const U* px = reinterpret_cast<const U*>(x.bytes());
    const U* py = reinterpret_cast<const U*>(y.bytes());
    if (n <= (int64_t)UINT32_MAX)
      launch(where_kernel_dev<U, uint32_t>, grid_for(n), kBlock, 0, s, po, pc, px, py, g, n);
    else
      launch(where_kernel_dev<U, int64_t>, grid_for(n), kBlock, 0, s, po, pc, px, py, g, n);
  });
  check_launch(a);
}

// ---------------------------------------------------------------- random
// Philox-4x32-10, identical to the CPU's: mulhi/mullo of the same constants, same key schedule.
__device__ __forceinline__ void philox(uint32_t (&ctr)[4], uint32_t (&key)[2]) {
#pragma unroll
  for (int r = 0; r < 10; r++) {
    uint32_t hi0 = __umulhi(0xD2511F53u, ctr[0]), lo0 = 0xD2511F53u * ctr[0];
    uint32_t hi1 = __umulhi(0xCD9E8D57u, ctr[2]), lo1 = 0xCD9E8D57u * ctr[2];
    uint32_t n0 = hi1 ^ ctr[1] ^ key[0];
    uint32_t n2 = hi0 ^ ctr[3] ^ key[1];
    ctr[1] = lo1;
    ctr[3] = lo0;
    ctr[0] = n0;
    ctr[2] = n2;
    key[0] += 0x9E3779B9u;
    key[1] += 0xBB67AE85u;
  }
}

template <typename T> __global__ void __launch_bounds__(kBlock)
    random_kernel_dev(T* out, int64_t n, uint64_t seed, uint64_t offset, int kind, double p) {
  for (int64_t i = global_tid(); i < n; i += grid_stride()) {
    uint64_t c = offset + (uint64_t)i;
    uint32_t ctr[4] = {uint32_t(c), uint32_t(c >> 32), 0u, 0u};
    uint32_t key[2] = {uint32_t(seed), uint32_t(seed >> 32)};
    philox(ctr, key);
    double u1 = (double(ctr[0]) + 0.5) / 4294967296.0;
    double v;
    if (kind == RandomKind::Uniform)
      v = double(ctr[0] >> 8) / 16777216.0;  // 24 bits: exact in f32, never rounds up to 1
    else if (kind == RandomKind::Normal) {
      double u2 = double(ctr[1]) / 4294967296.0;
      v = sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
    } else
      v = u1 < p ? 1.0 : 0.0;
    store(out + i, v);
  }
}

// random(out, kind, seed, offset, p): kind 'uniform' [0,1), 'normal' N(0,1) by Box-Muller,
// 'bernoulli' (1 with probability p). Element i uses Philox counter (offset + i).
void random_kernel(const KernelArgs& a) {
  const RandomArgs A = parse_random(a);
  const TensorArg& out = *A.out;
  const uint64_t seed = A.seed, offset = A.offset;
  const double p = A.p;
  const int k = A.kind;
  int64_t n = out.numel();
  if (n == 0) return;
  GPU_DISPATCH_ALL(a, out.dtype, T, {
    launch(random_kernel_dev<T>, grid_for(n), kBlock, 0, stream(), reinterpret_cast<T*>(out.bytes()), n, seed, offset,
           k, p);
  });
  check_launch(a);
}

REGISTER_KERNEL("copy", Device::CUDA, copy_kernel);
REGISTER_KERNEL("fill", Device::CUDA, fill_kernel);
REGISTER_KERNEL("arange", Device::CUDA, arange_kernel);
REGISTER_KERNEL("unary", Device::CUDA, unary_kernel);
REGISTER_KERNEL("unary_bwd", Device::CUDA, unary_bwd_kernel);
REGISTER_KERNEL("swiglu", Device::CUDA, swiglu_kernel);
REGISTER_KERNEL("swiglu_bwd", Device::CUDA, swiglu_bwd_kernel);
REGISTER_KERNEL("binary", Device::CUDA, binary_kernel);
REGISTER_KERNEL("where", Device::CUDA, where_kernel);
REGISTER_KERNEL("random", Device::CUDA, random_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
