// kernel_api.h — the plain C++ contract between the N-API binding and every kernel, CPU or CUDA.
//
// No napi.h here: this header is also compiled by nvcc. The binding turns the JS argument list of a
// kernel call into `KernelArgs` (tensors, numbers, strings, int lists), looks the kernel up by
// (name, device) in one registry, and turns any exception into a JS Error. Kernels register
// themselves with REGISTER_KERNEL from their own translation unit, so adding an op touches no
// central file. Kernels never allocate tensors: TypeScript allocates outputs from the shape rule.
//
// Tensor arguments carry shape and strides in elements plus an element offset into a Storage. The
// binding has already checked that every element a view can address lies inside its storage.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace llava {

enum class DType : int { F32 = 0, F64 = 1, BF16 = 2, F16 = 3, I32 = 4, I64 = 5, U8 = 6, BOOL = 7 };
enum class Device : int { CPU = 0, CUDA = 1 };

constexpr int kMaxDims = 8;

inline size_t dtype_size(DType d) {
  switch (d) {
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::BF16:
    case DType::F16:
      return 2;
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  return 0;
}
const char* dtype_name(DType d);
inline bool is_float(DType d) { return d == DType::F32 || d == DType::F64 || d == DType::BF16 || d == DType::F16; }

// Every failure inside a kernel is one of these; the binding rethrows it as a JS Error "[op] msg".
struct KernelError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Storage {
  void* ptr = nullptr;
  size_t nbytes = 0;
  Device device = Device::CPU;
};

struct TensorArg {
  Storage* storage = nullptr;
  DType dtype = DType::F32;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0};
  int64_t strides[kMaxDims] = {0};  // in elements
  int64_t offset = 0;               // in elements

  Device device() const { return storage->device; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
  }
  bool is_contiguous() const {
    int64_t expect = 1;
    for (int i = ndim - 1; i >= 0; i--) {
      if (shape[i] != 1 && strides[i] != expect) return false;
      expect *= shape[i];
    }
    return true;
  }
  char* bytes() const { return static_cast<char*>(storage->ptr) + offset * (int64_t)dtype_size(dtype); }
  template <typename T> T* data() const { return reinterpret_cast<T*>(bytes()); }
  int64_t size(int d) const { return shape[d < 0 ? d + ndim : d]; }
};

using KernelArg = std::variant<TensorArg, double, bool, std::string, std::vector<int64_t>, std::monostate>;

// Typed access to a kernel's positional arguments, with errors that name the op and the position.
class KernelArgs {
 public:
  KernelArgs(std::string op, std::vector<KernelArg> args) : op_(std::move(op)), args_(std::move(args)) {}
  const std::string& op() const { return op_; }
  size_t size() const { return args_.size(); }
  const TensorArg& tensor(size_t i) const;
  bool is_none(size_t i) const;
  const TensorArg* optional_tensor(size_t i) const;  // null for `null`/`undefined` from JS
  double num(size_t i) const;
  int64_t int_(size_t i) const;  // a number that must be integral
  bool flag(size_t i) const;
  const std::string& str(size_t i) const;
  const std::vector<int64_t>& ints(size_t i) const;
  [[noreturn]] void fail(const std::string& msg) const { throw KernelError("[" + op_ + "] " + msg); }

  // Common checks; each throws KernelError naming the op.
  void check_dtype(const TensorArg& t, DType d, const char* what) const;
  void check_float(const TensorArg& t, const char* what) const;
  void check_same_dtype(const TensorArg& a, const TensorArg& b, const char* what) const;
  void check_contiguous(const TensorArg& t, const char* what) const;
  void check_ndim(const TensorArg& t, int ndim, const char* what) const;
  void check_shape(const TensorArg& t, const std::vector<int64_t>& shape, const char* what) const;
  void check_numel(const TensorArg& t, int64_t n, const char* what) const;
  // Output storage may not share bytes with an input (kernels are not written to be in-place safe).
  void check_no_overlap(const TensorArg& out, const TensorArg& in, const char* what) const;

 private:
  const KernelArg& at(size_t i, const char* kind) const;
  std::string op_;
  std::vector<KernelArg> args_;
};

using KernelFn = std::function<void(const KernelArgs&)>;

const char* device_name(Device d);  // "cpu" / "cuda"

// A (name, device) pair registered twice keeps its first kernel; the second registration is
// recorded, listed by duplicate_registrations() and turned into a KernelError naming the kernel
// by check_registrations() (the addon's module init calls it).
void register_kernel(const std::string& name, Device device, KernelFn fn);
const KernelFn* find_kernel(const std::string& name, Device device);
std::vector<std::string> kernel_names(Device device);
std::vector<std::string> duplicate_registrations();
void check_registrations();

// Dispatch on a dtype: runs the body with `T` bound to the storage type of `dt`. The 16-bit float types
// differ by device (the CPU's bf16/f16 structs, CUDA's __nv_bfloat16/__half), so the device headers pass
// them in: cpu_common.h defines LLAVA_DISPATCH_FLOAT/_ALL, cuda_common.cuh GPU_DISPATCH_FLOAT/_ALL.
#define LLAVA_DTYPE_CASE(DT, TYPE, T, ...) \
  case ::llava::DType::DT: {               \
    using T = TYPE;                        \
    __VA_ARGS__;                           \
    break;                                 \
  }
#define LLAVA_DISPATCH_FLOAT_AS(BF16_T, F16_T, args, dt, T, ...)                             \
  switch (dt) {                                                                              \
    LLAVA_DTYPE_CASE(F32, float, T, __VA_ARGS__)                                             \
    LLAVA_DTYPE_CASE(F64, double, T, __VA_ARGS__)                                            \
    LLAVA_DTYPE_CASE(BF16, BF16_T, T, __VA_ARGS__)                                           \
    LLAVA_DTYPE_CASE(F16, F16_T, T, __VA_ARGS__)                                             \
    default:                                                                                 \
      (args).fail(std::string("expected a floating dtype, got ") + ::llava::dtype_name(dt)); \
  }
#define LLAVA_DISPATCH_ALL_AS(BF16_T, F16_T, args, dt, T, ...) \
  switch (dt) {                                                \
    LLAVA_DTYPE_CASE(F32, float, T, __VA_ARGS__)               \
    LLAVA_DTYPE_CASE(F64, double, T, __VA_ARGS__)              \
    LLAVA_DTYPE_CASE(BF16, BF16_T, T, __VA_ARGS__)             \
    LLAVA_DTYPE_CASE(F16, F16_T, T, __VA_ARGS__)               \
    LLAVA_DTYPE_CASE(I32, int32_t, T, __VA_ARGS__)             \
    LLAVA_DTYPE_CASE(I64, int64_t, T, __VA_ARGS__)             \
    LLAVA_DTYPE_CASE(U8, uint8_t, T, __VA_ARGS__)              \
    LLAVA_DTYPE_CASE(BOOL, bool, T, __VA_ARGS__)               \
    default:                                                   \
      (args).fail("unknown dtype");                            \
  }

struct KernelRegistrar {
  KernelRegistrar(const char* name, Device device, KernelFn fn) { register_kernel(name, device, std::move(fn)); }
};
#define LLAVA_CAT2(a, b) a##b
#define LLAVA_CAT(a, b) LLAVA_CAT2(a, b)
#define REGISTER_KERNEL(name, device, fn) \
  static ::llava::KernelRegistrar LLAVA_CAT(llava_kernel_reg_, __LINE__)(name, device, fn)

// A device backend: memory, copies and synchronisation. The CPU one lives in cpu_backend.cc; the
// CUDA one (cuda/backend.cu) registers itself when the build has nvcc.
struct DeviceBackend {
  std::function<bool()> available;
  std::function<std::string()> describe;  // name, or why it is unavailable
  std::function<void*(size_t)> alloc;     // throws KernelError on failure (OOM says asked/free)
  std::function<void(void*, size_t)> free;
  std::function<void(void* dst, const void* src, size_t n)> copy_from_host;
  std::function<void(void* dst, const void* src, size_t n)> copy_to_host;  // synchronises
  std::function<void(void* dst, const void* src, size_t n)> copy_within;
  std::function<void()> synchronize;
  std::function<void(double* stats)> stats;  // [bytes_in_use, bytes_cached, n_cuda_malloc, peak]
  std::function<void()> empty_cache;
  // Kernel timing for the profiler (cpp/profiler.cc). mark() puts a point on the device's timeline (a
  // CUDA event on the stream); elapsed_ms(a, b) waits for b, returns the milliseconds from a to b and
  // releases both (b null: releases a, returns 0). Left empty where kernels run on the calling thread
  // (the CPU: the host clock).
  std::function<void*()> timing_mark;
  std::function<double(void*, void*)> timing_elapsed_ms;
};
void register_backend(Device device, DeviceBackend backend);
const DeviceBackend* find_backend(Device device);
struct BackendRegistrar {
  BackendRegistrar(Device d, DeviceBackend b) { register_backend(d, std::move(b)); }
};

// Work splitting for CPU kernels: fn(begin, end) over [0, n) in chunks of at least `grain`.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);
int num_threads();
// The worker pool's block time: how long idle workers spin for the next region before sleeping
// (LLAVA_CPU_SPIN_US at load; the setter clamps to [0, 1 s]).
int64_t cpu_spin_us();
void set_cpu_spin_us(int64_t us);

// The CUDA bf16 GEMM's block tile (cuda/matmul.cu), as BM x BN x BK, "-pf" with fragment prefetch,
// "wgmma-" for the Hopper kernel (cuda/matmul_sm90.cu, sm_90 only). Index 0, "auto", picks 128x128x32 or
// 64x64x32 per problem; the others force one tile on every bf16 GEMM with 16-byte-aligned operands (a
// wgmma tile also needs an sm_90 GPU), so a benchmark can compare them on one GPU. The binding's
// cudaGemmTile(name?) reads and sets it; LLAVA_CUDA_GEMM_TILE=<name> sets it at load.
inline constexpr const char* kCudaGemmTiles[] = {"auto",       "128x128x32",       "64x64x32",
                                                 "128x128x64", "128x128x32-pf",    "128x128x64-pf",
                                                 "128x256x32", "wgmma-128x128x64", "wgmma-128x256x64"};
inline constexpr int kNumCudaGemmTiles = sizeof(kCudaGemmTiles) / sizeof(kCudaGemmTiles[0]);
int cuda_gemm_tile();
void set_cuda_gemm_tile(int index);  // index into kCudaGemmTiles; out-of-range values are ignored

}  // namespace llava
