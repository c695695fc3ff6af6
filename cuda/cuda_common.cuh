// cuda_common.cuh — what every CUDA kernel file shares: error checks, the stream, scratch memory
// from the caching allocator, 16-bit float load/store, dtype dispatch and the strided-index helper.
//
// Execution model: ONE device (ordinal 0) and ONE stream (created lazily, cudaStreamNonBlocking).
// Every kernel, memset and copy of this addon goes to that stream, so work runs in issue order.
// That is what makes the caching allocator simple: a block freed on the host while kernels that
// use it are still queued can be handed out again at once, because whatever the new owner launches
// is queued behind those kernels on the same stream (the same argument as PyTorch's per-stream
// caching allocator). Never launch on another stream without revisiting backend.cu.
//
// Storage types on the device: float, double, __nv_bfloat16, __half, int32_t, int64_t, uint8_t,
// bool. bf16/f16 are storage formats only: kernels load them into f32 registers (`load`), compute,
// and round once on store (`store`, round-to-nearest-even, as the CPU kernels do). f64 computes in
// f64. Conversions to 16-bit types always go through f32 first, exactly like cpu_common.h.
//
// Plain C++ includes only kernel_api.h (never napi.h). Host-only helpers are implemented in
// backend.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "elementwise_math.h"
#include "kernel_api.h"

namespace llava {
namespace gpu {

// ---------------------------------------------------------------- errors
// Throws KernelError "[cuda] <expr>: <cudaGetErrorName>: <cudaGetErrorString> (file:line)".
[[noreturn]] void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line);

#define CUDA_CHECK(expr)                                                                                            \
  do {                                                                                                              \
    cudaError_t llava_cuda_err_ = (expr);                                                                           \
    if (llava_cuda_err_ != cudaSuccess) ::llava::gpu::throw_cuda_error(llava_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Call after every kernel launch: turns a launch error (bad configuration, no kernel image for
// this GPU, or an earlier asynchronous fault surfacing now) into "[op] CUDA kernel launch failed:
// ...". With LLAVA_CUDA_SYNC=1 in the environment it also synchronises, so an asynchronous fault
// (illegal address) is reported by the op that caused it — for debugging only.
void check_launch(const KernelArgs& a);

// ---------------------------------------------------------------- device, stream, memory
cudaStream_t stream();             // the addon's one stream (device 0), created on first use
int num_sms();                     // multiprocessor count of device 0
int sm_version();                  // compute capability of device 0 as 10 * major + minor (90: H100)
void* device_alloc(size_t bytes);  // caching allocator (see backend.cu); throws KernelError on OOM
void device_free(void* p);         // back to the cache; safe while queued kernels still use it

// Scratch device memory for one kernel call, from the caching allocator. Free it (destructor) as
// soon as the last kernel using it is launched: the single stream keeps the reuse ordered.
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t bytes) : p_(bytes ? device_alloc(bytes) : nullptr) {}
  ~Scratch() {
    if (p_) device_free(p_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  Scratch(Scratch&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Scratch& operator=(Scratch&& o) noexcept {
    if (this != &o) {
      if (p_) device_free(p_);
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  template <typename T> T* as() const { return static_cast<T*>(p_); }
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
};
inline Scratch cuda_scratch(size_t bytes) { return Scratch(bytes); }

// Index validation with the CPU kernels' semantics, before the main kernel runs. Scans n indices
// (int32 or int64 at `idx`) on the device and returns the position of the first one outside
// [0, limit) that is not `ignore` (pass has_ignore = false to check all), or -1; `*bad_value`
// receives its value. This synchronises the stream (one small device-to-host copy): it is the
// price of reporting a bad index as an error of the op that received it, before anything is
// written, instead of an illegal memory access that would poison the CUDA context.
int64_t first_bad_index(const void* idx, bool is_i64, int64_t n, int64_t limit, bool has_ignore, int64_t ignore,
                        int64_t* bad_value);

// Grid size for a grid-stride loop over `work` items with `block` threads: enough blocks to fill
// the GPU several times over, never more than the work needs.
inline unsigned grid_for(int64_t work, int block = 256) {
  int64_t want = (work + block - 1) / block;
  int64_t cap = (int64_t)num_sms() * 32;
  return (unsigned)std::max<int64_t>(1, std::min(want, cap));
}

// ---------------------------------------------------------------- dtypes
template <typename T> struct Acc { using type = T; };
template <> struct Acc<__nv_bfloat16> { using type = float; };
template <> struct Acc<__half> { using type = float; };
template <> struct Acc<bool> { using type = float; };
template <typename T> using acc_t = typename Acc<T>::type;

template <typename T> __device__ __forceinline__ acc_t<T> to_acc(T v) { return v; }
template <> __device__ __forceinline__ float to_acc<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_acc<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_acc<bool>(bool v) { return v ? 1.f : 0.f; }

// Storage value of type T from a compute value (float, double or an integer), as cpu_common.h's
// store(): 16-bit floats round from f32 (RNE), bool is "!= 0", everything else is a C++ cast.
template <typename T> struct Conv {
  template <typename V> __device__ __forceinline__ static T from(V v) { return T(v); }
};
template <> struct Conv<__nv_bfloat16> {
  template <typename V> __device__ __forceinline__ static __nv_bfloat16 from(V v) {
    return __float2bfloat16_rn(float(v));
  }
};
template <> struct Conv<__half> {
  template <typename V> __device__ __forceinline__ static __half from(V v) { return __float2half_rn(float(v)); }
};
template <> struct Conv<bool> {
  template <typename V> __device__ __forceinline__ static bool from(V v) { return v != V(0); }
};
template <typename T, typename V> __device__ __forceinline__ T from_acc(V v) { return Conv<T>::from(v); }

template <typename T> __device__ __forceinline__ acc_t<T> load(const T* p) { return to_acc<T>(*p); }
template <typename T, typename V> __device__ __forceinline__ void store(T* p, V v) { *p = from_acc<T>(v); }

// Host-side bit patterns for fill values (same rounding as cpu_common.h).
inline uint16_t host_f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // keep NaN a NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
uint16_t host_f32_to_f16(float f);  // backend.cu (RNE, like _cvtss_sh)

// An aligned group of V elements, loaded/stored as one vector access (16 bytes at most).
template <typename T, int V> struct alignas(sizeof(T) * V) Pack { T v[V]; };
inline bool aligned_to(const void* p, size_t bytes) { return (reinterpret_cast<uintptr_t>(p) % bytes) == 0; }

// Dispatch on a dtype with T bound to the device storage type (kernel_api.h).
#define GPU_DISPATCH_FLOAT(args, dt, T, ...) LLAVA_DISPATCH_FLOAT_AS(__nv_bfloat16, __half, args, dt, T, __VA_ARGS__)
#define GPU_DISPATCH_ALL(args, dt, T, ...) LLAVA_DISPATCH_ALL_AS(__nv_bfloat16, __half, args, dt, T, __VA_ARGS__)

// Dispatch on an element size in bytes, U bound to an unsigned type of that size (raw moves).
#define GPU_DISPATCH_BITS(args, nbytes, U, ...) \
  switch (nbytes) {                             \
    case 1: {                                   \
      using U = uint8_t;                        \
      __VA_ARGS__;                              \
      break;                                    \
    }                                           \
    case 2: {                                   \
      using U = uint16_t;                       \
      __VA_ARGS__;                              \
      break;                                    \
    }                                           \
    case 4: {                                   \
      using U = uint32_t;                       \
      __VA_ARGS__;                              \
      break;                                    \
    }                                           \
    case 8: {                                   \
      using U = unsigned long long;             \
      __VA_ARGS__;                              \
      break;                                    \
    }                                           \
    default:                                    \
      (args).fail("unsupported element size");  \
  }

// ---------------------------------------------------------------- strided geometry
// The shape shared by N operands (operand 0 = the output) and each operand's strides, in elements,
// passed to kernels by value (N = 4: 328 bytes of kernel parameters). make_geo drops size-1 dims
// and merges neighbouring dims that are contiguous in every operand, so most "strided" calls end
// up with 1-3 dims; shape[0] is the outermost dim.
template <int N> struct Geo {
  int ndim;
  int64_t shape[kMaxDims];
  int64_t strides[N][kMaxDims];
};

template <int N> Geo<N> make_geo(const TensorArg& out, const TensorArg* const* ins) {
  const TensorArg* ts[N];
  ts[0] = &out;
  for (int k = 1; k < N; k++) ts[k] = ins[k - 1];
  Geo<N> g{};
  int nd = 0;
  // Walk from the innermost dim outwards, building the coalesced dims innermost-first.
  int64_t shp[kMaxDims];
  int64_t str[N][kMaxDims];
  for (int d = out.ndim - 1; d >= 0; d--) {
    int64_t s = out.shape[d];
    if (s == 1) continue;
    if (nd > 0) {
      bool merge = true;
      for (int k = 0; k < N; k++) merge = merge && ts[k]->strides[d] == str[k][nd - 1] * shp[nd - 1];
      if (merge) {
        shp[nd - 1] *= s;
        continue;
      }
    }
    shp[nd] = s;
    for (int k = 0; k < N; k++) str[k][nd] = ts[k]->strides[d];
    nd++;
  }
  if (nd == 0) {  // a single element
    shp[0] = 1;
    for (int k = 0; k < N; k++) str[k][0] = 1;
    nd = 1;
  }
  g.ndim = nd;
  for (int d = 0; d < nd; d++) {  // reverse into outermost-first order
    g.shape[d] = shp[nd - 1 - d];
    for (int k = 0; k < N; k++) g.strides[k][d] = str[k][nd - 1 - d];
  }
  for (int d = nd; d < kMaxDims; d++) {
    g.shape[d] = 1;
    for (int k = 0; k < N; k++) g.strides[k][d] = 0;
  }
  return g;
}

// Element offsets of linear index i (row-major over g.shape) in each operand. I is uint32_t when
// the element count fits (32-bit division is several times cheaper) and int64_t otherwise. The
// loop is unrolled over kMaxDims with a guard so every array index is a compile-time constant and
// the struct stays in the kernel-parameter bank instead of being copied to local memory.
template <int N, typename I>
__host__ __device__ __forceinline__ void geo_offsets(const Geo<N>& g, I i, int64_t (&off)[N]) {
#pragma unroll
  for (int k = 0; k < N; k++) off[k] = 0;
#pragma unroll
  for (int d = kMaxDims - 1; d >= 0; d--) {
    if (d < g.ndim) {
      I s = (I)g.shape[d];
      I c = i % s;
      i /= s;
#pragma unroll
      for (int k = 0; k < N; k++) off[k] += (int64_t)c * g.strides[k][d];
    }
  }
}

// Per-row statistics (lse, loss, mean, rstd, ...) are f32 or f64 tensors, chosen by TypeScript;
// the kernel picks the type at run time (a uniform branch) instead of doubling its instantiations.
struct Stat {
  void* p;
  bool f64;
  __device__ __forceinline__ double get(int64_t i) const {
    return f64 ? static_cast<const double*>(p)[i] : double(static_cast<const float*>(p)[i]);
  }
  __device__ __forceinline__ void set(int64_t i, double v) const {
    if (f64)
      static_cast<double*>(p)[i] = v;
    else
      static_cast<float*>(p)[i] = float(v);
  }
};
inline Stat make_stat(const TensorArg& t) { return Stat{t.bytes(), t.dtype == DType::F64}; }

// ---------------------------------------------------------------- math
// exp / log / sqrt / ... : ewmath:: in elementwise_math.h, shared with the CPU kernels (explicit f32 and
// f64 overloads, accurate versions, host-callable).

// ---------------------------------------------------------------- grid-stride loops
// This thread's first element and the step to its next one.
__device__ __forceinline__ int64_t gtid() { return blockIdx.x * (int64_t)blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t gstride() { return (int64_t)gridDim.x * blockDim.x; }

// ---------------------------------------------------------------- warp helpers
constexpr unsigned kFullMask = 0xffffffffu;
template <typename F> __device__ __forceinline__ F warp_sum(F v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}
template <typename F> __device__ __forceinline__ F warp_max(F v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    F w = __shfl_xor_sync(kFullMask, v, o);
    v = v < w ? w : v;
  }
  return v;
}

}  // namespace gpu
}  // namespace llava

// gpu::launch (after CUDA_CHECK, which it uses).
#include "launch.cuh"
