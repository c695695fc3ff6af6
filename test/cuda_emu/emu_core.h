// test/cuda_emu/emu_core.h — force-included (-include) before any CUDA source compiled for the host emulator.
// Every CUDA thread is a fiber (ucontext) of one OS thread; one block runs at a time; __syncthreads
// and warp collectives are barriers in a cooperative scheduler. cp.async copies are deferred to the
// cp.async.wait that retires their group (worst-case timing), shared memory is poisoned per block.
#pragma once
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <vector>

#undef __device__
#undef __global__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __device__
#define __global__
#define __host__
// A static __shared__ array becomes a function-local static: one copy that every fiber of the running
// block sees (blocks run one at a time), like shared memory. The build rewrites each declaration
// `__shared__ T name[...];` into EMU_STATIC_SHARED(T, name, [...]) (common.sh), which also poisons the
// array once per block: the first fiber of a block to reach the declaration fills it with 0xff.
#define __shared__ static
#define EMU_STATIC_SHARED(T, name, dims) \
  static T name dims;                    \
  ::emu::fresh_shared(name, sizeof(name))
#define __forceinline__ inline
#define __launch_bounds__(...)

namespace emu {

[[noreturn]] void die(const char* fmt, ...);

struct Copy {
  void* dst;
  const void* src;
  int n;
};

struct Fiber {
  void* ctx = nullptr;  // the saved stack pointer (x86-64) or a ucontext_t* (emu.cc)
  char* stack = nullptr;
  bool done = false;
  int tid = 0;
  uint3 tidx{0, 0, 0};
  std::vector<Copy> open;
  std::vector<std::vector<Copy>> groups;
  std::vector<std::function<void()>> wg_open;                 // wgmma issued since the last commit
  std::vector<std::vector<std::function<void()>>> wg_groups;  // committed wgmma groups not yet waited for
  const int* wait_gen = nullptr;
  int wait_val = 0;
  long cp_seq = 0;
};

struct Warp {
  int live = 0, count = 0, gen = 0;
  unsigned live_mask = 0, mask = 0;  // lanes still running; the member mask of the open collective
  const char* tag = nullptr;
  uint64_t in[32][8];
  uint64_t out[32][8];
};

extern Fiber* cur;
extern bool cp_eager;
extern uint3 g_blockIdx;
extern dim3 g_blockDim, g_gridDim;
extern unsigned char* smem_base;
alignas(128) inline unsigned char dyn_smem_buf[256 * 1024];  // dynamic shared memory of the running block
inline int launches = 0;                                     // kernel launches so far
extern size_t smem_size;

Warp& my_warp();
int lane();
void yield_wait(const int* gen, int val);
void syncthreads(const char* site);
void warp_collective(const char* tag, bool need_full, void (*compute)(Warp&, const void*), const void* ctx,
                     unsigned mask = 0xffffffffu);
void check_smem(const void* p, size_t n, const char* what);
void fresh_shared(void* p, size_t n);  // poison a static shared array once per block
void check_global(const void* p, size_t n, const char* what);
void run_block(int nthreads, const std::function<void()>& fn);
void memset_async(void* p, int v, size_t n);
void note_phase(const char* what, int ways);
void note_cp_async(const void* smem);
void begin_kernel(const void* fn);
void end_kernel();
// EMU_DEFERRED=1: launches, memsets and copies queue on the (one) stream and run at a synchronising
// call (runtime.cc: cudaStreamSynchronize, cudaDeviceSynchronize, cudaFree); otherwise they run at once.
extern bool deferred;
void submit(std::function<void()> work);
void flush();
void register_region(const void* p, size_t n);  // a global buffer the bounds checks accept
void unregister_region(const void* p);
void print_bank_stats();
bool find_region(uintptr_t a, uintptr_t* base, size_t* size);
const char* kernel_name();
uint32_t warp_gen(int warp);

// racecheck.cc (EMU_RACECHECK=1): every load/store of the emulated sources reaches it through GCC's
// thread-sanitizer instrumentation; `quiet` mutes that (atomics, the emulator's own collective code).
extern bool racecheck;
extern volatile int quiet;  // volatile: the compiler must not merge a Mute's ++ and -- around inline code
extern uint32_t serial;
void note_shared(const void* p, size_t n, bool write, int tid);  // an access the hooks cannot see
void race_static_shared(void* p, size_t n);
void race_begin_launch(const void* fn);
void race_begin_block();
void race_end_launch();
long hazards();
struct Mute {
  Mute() { quiet++; }
  ~Mute() { quiet--; }
};

}  // namespace emu

#define threadIdx (::emu::cur->tidx)
#define blockIdx (::emu::g_blockIdx)
#define blockDim (::emu::g_blockDim)
#define gridDim (::emu::g_gridDim)

// A macro, so the barrier knows its call site: threads of a block meeting different __syncthreads are
// a synccheck error.
#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define __syncthreads() ::emu::syncthreads(__FILE__ ":" EMU_STR(__LINE__))
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::emu::warp_collective(
      "syncwarp", false, [](::emu::Warp&, const void*) {}, nullptr, mask);
}

template <typename V> inline V __shfl_xor_sync(unsigned mask, V v, int lm) {
  static_assert(sizeof(V) <= 8, "shfl of <= 8 bytes");
  ::emu::Warp& w = ::emu::my_warp();
  const int L = ::emu::lane();
  std::memcpy(&w.in[L][0], &v, sizeof(V));
  w.in[L][1] = (uint64_t)lm;
  ::emu::warp_collective(
      "shfl_xor", true,
      [](::emu::Warp& w, const void*) {
        for (int l = 0; l < 32; l++) {
          if (w.in[l][1] != w.in[0][1]) ::emu::die("shfl_xor with different lane masks");
          w.out[l][0] = w.in[l ^ (int)w.in[l][1]][0];
        }
      },
      nullptr, mask);
  V r;
  std::memcpy(&r, &w.out[L][0], sizeof(V));
  return r;
}

// Atomics are plain read-modify-writes: fibers only switch at barriers, so nothing interleaves them.
// Racecheck exempts them (Mute).
template <typename T> inline T atomicAdd(T* p, T v) {
  ::emu::Mute m;
  T o = *p;
  *p = o + v;
  return o;
}
inline __nv_bfloat162 atomicAdd(__nv_bfloat162* p, __nv_bfloat162 v) {
  ::emu::Mute m;
  __nv_bfloat162 o = *p;
  *p = __floats2bfloat162_rn(__low2float(o) + __low2float(v), __high2float(o) + __high2float(v));
  return o;
}
inline __half2 atomicAdd(__half2* p, __half2 v) {
  ::emu::Mute m;
  __half2 o = *p;
  *p = __floats2half2_rn(__low2float(o) + __low2float(v), __high2float(o) + __high2float(v));
  return o;
}
template <typename T> inline T atomicMin(T* p, T v) {
  ::emu::Mute m;
  T o = *p;
  if (v < o) *p = v;
  return o;
}

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long min(long a, long b) { return a < b ? a : b; }
inline long max(long a, long b) { return a > b ? a : b; }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
using std::erf;
using std::exp;
using std::fma;
using std::fmax;
using std::isinf;
using std::isnan;
using std::log;
using std::tanh;

#define cudaMemsetAsync(p, v, n, s) (::emu::memset_async((p), (v), (n)), cudaSuccess)

// cuda_runtime.h declares these typed conveniences only for nvcc; the host build needs them too.
template <typename T> inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, T* entry) {
  return ::cudaFuncGetAttributes(a, reinterpret_cast<const void*>(entry));
}
template <typename T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, T* entry, int block, size_t smem) {
  return ::cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, reinterpret_cast<const void*>(entry), block, smem);
}
