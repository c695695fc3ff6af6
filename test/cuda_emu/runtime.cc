// test/cuda_emu/runtime.cc — a host stand-in for the parts of the CUDA runtime API that cuda/*.cu call,
// so the emulated addon (build_addon.sh) can compile the real cuda/backend.cu — discovery, stream,
// caching allocator, copies, out-of-memory handling — and run the kernels under the emulator.
//
// The "device" is host memory: cudaMalloc is an aligned malloc registered with the emulator's bounds
// checks and poisoned (0xff, NaN in every float type) so reading memory nobody wrote shows up; copies
// are memcpy; the stream is a dummy and everything is synchronous unless EMU_DEFERRED=1 (then launches,
// memsets and copies queue until cudaStreamSynchronize / cudaDeviceSynchronize / cudaFree, see
// cudaMemcpyAsync). Environment knobs:
//   EMU_SMS=N          multiprocessor count reported (default 4; it steers tile and split choices)
//   EMU_MEM_MIB=N      device memory size (default 4096); cudaMalloc beyond it fails with
//                      cudaErrorMemoryAllocation, which exercises the allocator's retry and OOM message
//   EMU_DRIVER=N       the driver's CUDA version (cudaDriverGetVersion, e.g. 12040 for 12.4); below the
//                      runtime's version, cudaGetDeviceCount fails with cudaErrorInsufficientDriver
// Errors follow the runtime's rules where backend.cu depends on them: a failed call returns its code
// and also leaves it for cudaGetLastError, which returns it once and clears it.
#include <cuda_runtime.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>
#include <string>
#include <unordered_map>

namespace {

long env_num(const char* name, long dflt) {
  const char* v = std::getenv(name);
  if (!v || !*v) return dflt;
  char* end = nullptr;
  long n = std::strtol(v, &end, 10);
  return (end && *end == 0 && n > 0) ? n : dflt;
}

size_t capacity() {
  static const size_t cap = size_t(env_num("EMU_MEM_MIB", 4096)) << 20;
  return cap;
}

std::mutex mu;
std::unordered_map<void*, size_t> blocks;  // live cudaMalloc blocks -> size
size_t used = 0;
thread_local cudaError_t last = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  last = e;
  return e;
}

}  // namespace

extern "C" {

cudaError_t cudaGetLastError(void) {
  cudaError_t e = last;
  last = cudaSuccess;
  return e;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "cudaSuccess";
    case cudaErrorMemoryAllocation:
      return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidValue:
      return "cudaErrorInvalidValue";
    case cudaErrorInvalidDevicePointer:
      return "cudaErrorInvalidDevicePointer";
    case cudaErrorInsufficientDriver:
      return "cudaErrorInsufficientDriver";
    default:
      return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess:
      return "no error";
    case cudaErrorMemoryAllocation:
      return "out of memory";
    case cudaErrorInvalidValue:
      return "invalid argument";
    case cudaErrorInvalidDevicePointer:
      return "invalid device pointer";
    case cudaErrorInsufficientDriver:
      return "CUDA driver version is insufficient for CUDA runtime version";
    default:
      return "unknown error";
  }
}

static int driver_version() { return (int)env_num("EMU_DRIVER", CUDART_VERSION); }

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 0;
  if (driver_version() < CUDART_VERSION) return fail(cudaErrorInsufficientDriver);
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidValue); }

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return fail(cudaErrorInvalidValue);
  std::memset(p, 0, sizeof *p);
  std::strncpy(p->name, "CUDA emulator (host)", sizeof p->name - 1);
  p->major = 9;  // an H100 (sm_90): the forced wgmma GEMM tiles run
  p->minor = 0;
  p->multiProcessorCount = (int)env_num("EMU_SMS", 4);
  p->totalGlobalMem = capacity();
  p->sharedMemPerBlockOptin = 227 * 1024;
  p->warpSize = 32;
  return cudaSuccess;
}

cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, const void*) {
  std::memset(a, 0, sizeof *a);
  a->maxThreadsPerBlock = 1024;
  a->ptxVersion = a->binaryVersion = 90;
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void*, cudaFuncAttribute, int) { return cudaSuccess; }
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int, size_t) {
  *n = 2;
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = driver_version();
  return cudaSuccess;
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) {
  static int dummy;
  *s = reinterpret_cast<cudaStream_t>(&dummy);
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) {
  emu::flush();
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) {
  emu::flush();
  return cudaSuccess;
}

// Events: cpp/dist_nccl.cc marks the end of a collective with one, the profiler (cpp/profiler.cc) times
// kernels between two. An event takes the host clock when it is reached in stream order: at the call,
// or with EMU_DEFERRED=1 when the queued work before it has run.
struct EmuEvent {
  double ms = -1;  // host clock when reached; -1: not yet
};
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  *e = reinterpret_cast<cudaEvent_t>(new EmuEvent());
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, 0); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  auto* ev = reinterpret_cast<EmuEvent*>(e);
  auto stamp = [ev] {
    ev->ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  ev->ms = -1;
  if (emu::deferred)
    emu::submit(stamp);
  else
    stamp();
  return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) {
  emu::flush();  // the emulated device makes progress only when asked: let a polling caller see it finish
  return reinterpret_cast<EmuEvent*>(e)->ms < 0 ? cudaErrorNotReady : cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) {
  emu::flush();
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  const double ta = reinterpret_cast<EmuEvent*>(a)->ms, tb = reinterpret_cast<EmuEvent*>(b)->ms;
  if (ta < 0 || tb < 0) return fail(cudaErrorNotReady);
  *ms = float(tb - ta);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<EmuEvent*>(e);
  return cudaSuccess;
}

cudaError_t cudaMalloc(void** p, size_t n) {
  std::lock_guard<std::mutex> lk(mu);
  if (n == 0) {
    *p = nullptr;
    return cudaSuccess;
  }
  if (used + n > capacity()) return fail(cudaErrorMemoryAllocation);
  void* q = std::aligned_alloc(256, (n + 255) / 256 * 256);
  if (!q) return fail(cudaErrorMemoryAllocation);
  std::memset(q, 0xff, n);
  blocks[q] = n;
  used += n;
  emu::register_region(q, n);
  *p = q;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  emu::flush();  // cudaFree waits for the device, as on hardware
  std::lock_guard<std::mutex> lk(mu);
  auto it = blocks.find(p);
  if (it == blocks.end()) return fail(cudaErrorInvalidDevicePointer);
  used -= it->second;
  blocks.erase(it);
  emu::unregister_region(p);
  std::free(p);
  return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  std::lock_guard<std::mutex> lk(mu);
  *free_bytes = capacity() - used;
  *total = capacity();
  return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t n, cudaMemcpyKind kind, cudaStream_t) {
  // Device-side ranges must lie inside cudaMalloc blocks (the bounds checker knows them).
  if (n && (kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice))
    emu::check_global(src, n, "cudaMemcpy src");
  if (n && (kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice))
    emu::check_global(dst, n, "cudaMemcpy dst");
  if (!n) return cudaSuccess;
  if (!emu::deferred) {
    std::memmove(dst, src, n);
    return cudaSuccess;
  }
  // Deferred (EMU_DEFERRED=1): the copy runs in stream order at the next synchronising call. A host
  // source is read now (the driver stages pageable memory, so the caller may reuse it at once); a host
  // destination is poisoned now and written only then, as with pinned memory: host code that reads it
  // before synchronising sees NaNs. Device ranges are checked again when the copy runs (a block freed
  // in between is an error).
  if (kind == cudaMemcpyHostToDevice) {
    auto staged = std::make_shared<std::vector<char>>((const char*)src, (const char*)src + n);
    emu::submit([dst, staged, n] {
      emu::check_global(dst, n, "cudaMemcpy dst (when it ran)");
      std::memcpy(dst, staged->data(), n);
    });
  } else {
    if (kind == cudaMemcpyDeviceToHost) std::memset(dst, 0xff, n);
    emu::submit([dst, src, n, kind] {
      emu::check_global(src, n, "cudaMemcpy src (when it ran)");
      if (kind == cudaMemcpyDeviceToDevice) emu::check_global(dst, n, "cudaMemcpy dst (when it ran)");
      std::memmove(dst, src, n);
    });
  }
  return cudaSuccess;
}

}  // extern "C"
