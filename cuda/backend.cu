// backend.cu — the CUDA DeviceBackend: device discovery, the addon's stream, the caching allocator,
// host<->device copies, and the small shared helpers declared in cuda_common.cuh.
//
// Discovery is lazy and cached: nothing touches the driver at load time, so the addon (cudart linked
// statically) loads on a machine without a GPU; available() then says false and describe() says
// why, e.g. "CUDA not available: no NVIDIA driver ... (cudaGetDeviceCount: cudaErrorInsufficientDriver
// (35): ...)". A GPU for which this build has no kernel image (not sm_8x / sm_90) is reported as
// unavailable too, found by asking for a probe kernel's attributes.
//
// Caching allocator (one device, one stream — see cuda_common.cuh for why reuse is safe):
//   * request sizes are rounded up to buckets: 512-byte multiples up to 1 MiB, 2 MiB multiples up
//     to 64 MiB, and above that steps of max(2 MiB, 2^floor(log2 n) / 8) (<= 12.5% waste);
//   * a freed block goes to a size-ordered free list; an allocation takes the smallest cached block
//     of at least the rounded size if it is at most 1/8 larger (exact fit for blocks <= 4 KiB), so a
//     training step in steady state calls cudaMalloc zero times;
//   * on cudaMalloc failure the cache is emptied (after a stream sync) and the call retried once;
//     then "[alloc] CUDA out of memory: asked for X MiB, free Y MiB of Z MiB (cached W MiB, ...)".
//   Blocks are never split or merged (simple, and the free lists of a repeating step converge).
//   The state is heap-allocated and never destroyed, so no cudaFree runs during static destruction
//   after the CUDA runtime has shut down.
//
// Copies: host->device is cudaMemcpyAsync on the stream followed by a stream sync (the source is
// pageable JS memory that may be released as soon as we return); device->host syncs; device->device
// is asynchronous on the stream (overlapping ranges go through a scratch block, as memmove).
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <unordered_map>

#include "cuda_common.cuh"

namespace llava {
namespace gpu {

// ---------------------------------------------------------------- errors
void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  cudaGetLastError();  // clear a non-sticky error so the next launch check does not report it again
  const char* base = std::strrchr(file, '/');
  throw KernelError(std::string("[cuda] ") + expr + " failed: " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e) +
                    " (" + (base ? base + 1 : file) + ":" + std::to_string(line) + ")");
}

static bool sync_debug() {
  static const bool on = [] {
    const char* v = std::getenv("LLAVA_CUDA_SYNC");
    return v && *v && std::string(v) != "0";
  }();
  return on;
}

void check_launch(const KernelArgs& a) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    a.fail(std::string("CUDA kernel launch failed: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
  if (sync_debug()) {
    e = cudaStreamSynchronize(stream());
    if (e != cudaSuccess) {
      cudaGetLastError();
      a.fail(std::string("CUDA kernel failed: ") + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
    }
  }
}

uint16_t host_f32_to_f16(float f) {
  __half h = __float2half_rn(f);
  uint16_t bits;
  std::memcpy(&bits, &h, 2);
  return bits;
}

// ---------------------------------------------------------------- device discovery
namespace {

__global__ void probe_kernel(int* p) {
  if (p) *p = 0;
}

struct DeviceState {
  std::once_flag once;
  bool ok = false;
  std::string desc;
  int sms = 1;
  int sm = 0;  // 10 * major + minor
  std::mutex stream_mu;
  cudaStream_t stream = nullptr;
};
DeviceState& state() {
  static DeviceState* s = new DeviceState();  // never destroyed (see the file comment)
  return *s;
}

std::string err_detail(const char* call, cudaError_t e) {
  return std::string(call) + ": " + cudaGetErrorName(e) + " (" + std::to_string((int)e) + "): " + cudaGetErrorString(e);
}

// The reason for cudaErrorInsufficientDriver, with the versions: cudaDriverGetVersion works without a
// usable driver (it reports 0 when none is installed) and gives the newest CUDA the driver supports.
std::string driver_too_old() {
  int drv = 0, rt = 0;
  cudaDriverGetVersion(&drv);
  cudaRuntimeGetVersion(&rt);
  cudaGetLastError();
  const std::string need = std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10);
  const std::string tail = "this build needs " + need + (rt / 1000 == 13 ? " (driver R580 or newer)" : "");
  if (drv <= 0) return "no NVIDIA driver found; " + tail;
  return "the driver supports CUDA " + std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10) + "; " + tail;
}

void init_device() {
  DeviceState& d = state();
  std::call_once(d.once, [&d] {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
      cudaGetLastError();
      std::string why = e == cudaErrorNoDevice             ? "no device"
                        : e == cudaErrorInsufficientDriver ? "no NVIDIA driver, or one older than this CUDA runtime"
                                                           : "the CUDA driver failed to initialise";
      if (e == cudaErrorInsufficientDriver) why = driver_too_old();
      d.desc = std::string("CUDA not available: ") + why + " (" + err_detail("cudaGetDeviceCount", e) + ")";
      return;
    }
    if (count <= 0) {
      d.desc = "CUDA not available: no device (cudaGetDeviceCount returned 0 devices)";
      return;
    }
    e = cudaSetDevice(0);
    cudaDeviceProp p;
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&p, 0);
    if (e != cudaSuccess) {
      cudaGetLastError();
      d.desc = "CUDA not available: device 0 could not be opened (" +
               err_detail("cudaSetDevice/cudaGetDeviceProperties", e) + ")";
      return;
    }
    std::string cc = "sm_" + std::to_string(p.major) + std::to_string(p.minor);
    cudaFuncAttributes fa;
    e = cudaFuncGetAttributes(&fa, probe_kernel);
    if (e != cudaSuccess) {
      cudaGetLastError();
      d.desc = std::string("CUDA not available: ") + p.name + " (" + cc +
               ") cannot run this build's kernels (built for sm_80 and sm_90a, with compute_90 PTX for newer GPUs; " +
               err_detail("cudaFuncGetAttributes", e) + ")";
      return;
    }
    int rt = 0, drv = 0;
    cudaRuntimeGetVersion(&rt);
    cudaDriverGetVersion(&drv);
    char mem[32];
    std::snprintf(mem, sizeof mem, "%.1f GiB", double(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
    d.sms = std::max(1, p.multiProcessorCount);
    d.sm = 10 * p.major + p.minor;
    d.desc = std::string(p.name) + " (" + cc + ", " + mem + ", " + std::to_string(p.multiProcessorCount) +
             " SMs, CUDA runtime " + std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10) + ", driver " +
             std::to_string(drv / 1000) + "." + std::to_string(drv % 1000 / 10) + ")";
    d.ok = true;
  });
}

bool is_available() {
  try {
    init_device();
  } catch (...) { return false; }
  return state().ok;
}

void require_device() {
  if (!is_available()) throw KernelError("[cuda] " + state().desc);
}

}  // namespace

cudaStream_t stream() {
  DeviceState& d = state();
  if (d.stream) return d.stream;
  require_device();
  std::lock_guard<std::mutex> lk(d.stream_mu);
  if (!d.stream) {
    cudaStream_t s;
    CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    d.stream = s;
  }
  return d.stream;
}

int num_sms() {
  init_device();
  return state().sms;
}
int sm_version() {
  init_device();
  return state().sm;
}

// ---------------------------------------------------------------- caching allocator
namespace {

constexpr size_t kMiB = size_t(1) << 20;

class CachingAllocator {
 public:
  static size_t bucket(size_t n) {
    if (n <= kMiB) return std::max<size_t>(512, (n + 511) / 512 * 512);
    if (n <= 64 * kMiB) return (n + 2 * kMiB - 1) / (2 * kMiB) * (2 * kMiB);
    size_t p = size_t(1) << (63 - __builtin_clzll((unsigned long long)n));
    size_t step = std::max<size_t>(2 * kMiB, p / 8);
    return (n + step - 1) / step * step;
  }

  void* alloc(size_t n) {
    size_t sz = bucket(n);
    std::lock_guard<std::mutex> lk(mu_);
    auto it = free_.lower_bound(sz);
    size_t accept = sz <= 4096 ? sz : sz + sz / 8;
    if (it != free_.end() && it->first <= accept) {
      void* p = it->second;
      size_t bsz = it->first;
      free_.erase(it);
      cached_ -= bsz;
      take(p, bsz);
      return p;
    }
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, sz);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      release_cached_locked();
      e = cudaMalloc(&p, sz);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      if (e != cudaErrorMemoryAllocation)
        throw KernelError("[alloc] cudaMalloc of " + mib(sz) + " MiB failed: " + cudaGetErrorName(e) + ": " +
                          cudaGetErrorString(e));
      size_t fr = 0, tot = 0;
      cudaMemGetInfo(&fr, &tot);
      cudaGetLastError();
      throw KernelError("[alloc] CUDA out of memory: asked for " + mib(n) + " MiB, free " + mib(fr) + " MiB of " +
                        mib(tot) + " MiB (cached " + mib(cached_) + " MiB, in use by tensors " + mib(in_use_) +
                        " MiB)");
    }
    mallocs_ += 1;
    take(p, sz);
    return p;
  }

  void free(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lk(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours (never happens); ignoring beats throwing in a finalizer
    size_t sz = it->second;
    live_.erase(it);
    in_use_ -= sz;
    free_.emplace(sz, p);
    cached_ += sz;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lk(mu_);
    release_cached_locked();
  }

  void stats(double* s) {
    std::lock_guard<std::mutex> lk(mu_);
    s[0] = double(in_use_);
    s[1] = double(cached_);
    s[2] = double(mallocs_);
    s[3] = double(peak_);
  }

 private:
  void take(void* p, size_t sz) {
    live_.emplace(p, sz);
    in_use_ += sz;
    peak_ = std::max(peak_, in_use_);
  }
  // Cached blocks may still be read by queued kernels of their previous owner: wait for the stream
  // before giving them back to the driver.
  void release_cached_locked() {
    if (free_.empty()) return;
    cudaStreamSynchronize(stream());
    for (auto& kv : free_) cudaFree(kv.second);
    cudaGetLastError();
    free_.clear();
    cached_ = 0;
  }
  static std::string mib(size_t b) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", double(b) / double(kMiB));
    return buf;
  }

  std::mutex mu_;
  std::multimap<size_t, void*> free_;
  std::unordered_map<void*, size_t> live_;
  size_t in_use_ = 0, cached_ = 0, peak_ = 0;
  double mallocs_ = 0;
};

CachingAllocator& allocator() {
  static CachingAllocator* a = new CachingAllocator();  // never destroyed (see the file comment)
  return *a;
}

}  // namespace

void* device_alloc(size_t bytes) {
  require_device();
  return allocator().alloc(bytes);
}
void device_free(void* p) { allocator().free(p); }

// ---------------------------------------------------------------- index validation
namespace {
template <typename I> __global__ void find_bad_index_kernel(const I* idx, int64_t n, int64_t limit, bool has_ignore,
                                                            int64_t ignore, unsigned long long* first) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    int64_t v = (int64_t)idx[i];
    if ((!has_ignore || v != ignore) && (v < 0 || v >= limit)) atomicMin(first, (unsigned long long)i);
  }
}
}  // namespace

int64_t first_bad_index(const void* idx, bool is_i64, int64_t n, int64_t limit, bool has_ignore, int64_t ignore,
                        int64_t* bad_value) {
  if (n <= 0) return -1;
  cudaStream_t s = stream();
  Scratch flag(sizeof(unsigned long long));
  CUDA_CHECK(cudaMemsetAsync(flag.get(), 0xff, sizeof(unsigned long long), s));
  unsigned grid = grid_for(n);
  if (is_i64)
    launch(find_bad_index_kernel<int64_t>, grid, 256, 0, s, static_cast<const int64_t*>(idx), n, limit, has_ignore,
           ignore, flag.as<unsigned long long>());
  else
    launch(find_bad_index_kernel<int32_t>, grid, 256, 0, s, static_cast<const int32_t*>(idx), n, limit, has_ignore,
           ignore, flag.as<unsigned long long>());
  CUDA_CHECK(cudaGetLastError());
  unsigned long long pos = ULLONG_MAX;
  CUDA_CHECK(cudaMemcpyAsync(&pos, flag.get(), sizeof pos, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  if (pos == ULLONG_MAX) return -1;
  if (bad_value) {
    if (is_i64) {
      int64_t v = 0;
      CUDA_CHECK(cudaMemcpyAsync(&v, static_cast<const int64_t*>(idx) + pos, 8, cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      *bad_value = v;
    } else {
      int32_t v = 0;
      CUDA_CHECK(cudaMemcpyAsync(&v, static_cast<const int32_t*>(idx) + pos, 4, cudaMemcpyDeviceToHost, s));
      CUDA_CHECK(cudaStreamSynchronize(s));
      *bad_value = v;
    }
  }
  return (int64_t)pos;
}

// ---------------------------------------------------------------- the backend
namespace {

void copy_h2d(void* dst, const void* src, size_t n) {
  if (!n) return;
  cudaStream_t s = stream();
  CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_d2h(void* dst, const void* src, size_t n) {
  if (!n) return;
  cudaStream_t s = stream();
  CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

void copy_d2d(void* dst, const void* src, size_t n) {
  if (!n || dst == src) return;
  cudaStream_t s = stream();
  const char* d = static_cast<const char*>(dst);
  const char* c = static_cast<const char*>(src);
  if (d < c + n && c < d + n) {  // overlapping: memmove through a scratch block
    Scratch tmp(n);
    CUDA_CHECK(cudaMemcpyAsync(tmp.get(), src, n, cudaMemcpyDeviceToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(dst, tmp.get(), n, cudaMemcpyDeviceToDevice, s));
    return;
  }
  CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, s));
}

// The profiler's marks (cpp/profiler.h): one timing event recorded on the stream per mark.
void* timing_mark() {
  cudaEvent_t e;
  CUDA_CHECK(cudaEventCreate(&e));
  const cudaError_t r = cudaEventRecord(e, stream());
  if (r != cudaSuccess) {
    cudaEventDestroy(e);
    throw_cuda_error(r, "cudaEventRecord(profile mark)", __FILE__, __LINE__);
  }
  return e;
}
double timing_elapsed_ms(void* a, void* b) {
  cudaEvent_t ea = static_cast<cudaEvent_t>(a), eb = static_cast<cudaEvent_t>(b);
  float ms = 0;
  cudaError_t r = cudaSuccess;
  if (ea && eb) {
    r = cudaEventSynchronize(eb);
    if (r == cudaSuccess) r = cudaEventElapsedTime(&ms, ea, eb);
  }
  if (ea) cudaEventDestroy(ea);
  if (eb) cudaEventDestroy(eb);
  if (r != cudaSuccess) throw_cuda_error(r, "cudaEventElapsedTime(profile marks)", __FILE__, __LINE__);
  return ms;
}

BackendRegistrar cuda_backend(Device::CUDA, DeviceBackend{
                                                [] { return is_available(); },
                                                [] {
                                                  is_available();
                                                  return state().desc;
                                                },
                                                [](size_t n) -> void* { return device_alloc(n); },
                                                [](void* p, size_t) { device_free(p); },
                                                copy_h2d,
                                                copy_d2h,
                                                copy_d2d,
                                                [] {
                                                  if (is_available()) CUDA_CHECK(cudaStreamSynchronize(stream()));
                                                },
                                                [](double* s) { allocator().stats(s); },
                                                [] {
                                                  if (is_available()) allocator().empty_cache();
                                                },
                                                timing_mark,
                                                timing_elapsed_ms,
                                            });

}  // namespace
}  // namespace gpu
}  // namespace llava
