// test/cuda_emu/racecheck.cc — the emulator's racecheck (EMU_RACECHECK=1), in the manner of
// compute-sanitizer's racecheck, for shared and global memory.
//
// How accesses are seen: the emulated CUDA sources are compiled with GCC's thread-sanitizer
// instrumentation (common.sh: -fsanitize=thread, without linking its runtime), so every load and store
// in them calls __tsan_{read,write}N(addr) below (a read-modify-write calls both: kernel-address
// instrumentation would check the read only). The hooks only feed the race detector, and return at once
// outside a kernel, when it is off, or for memory that is neither shared nor a registered device buffer.
//
// Model. Every block barrier (and the start of every block) opens a new epoch (`serial`); every warp
// collective (__syncwarp, shuffles, ldmatrix, mma) opens a new epoch of that warp. Two accesses are
// ordered when they are in different block epochs, by the same thread, or by lanes of one warp in
// different warp epochs; two unordered accesses to the same byte, one of them a write, are a hazard:
//   shared memory: RAW, WAR and WAW, per byte; the last writer and the last two distinct readers of
//     each byte are kept. cp.async writes count when they land, each ldmatrix row as a read by the lane
//     that supplied its address (shim/mma.cuh calls note_shared).
//   global memory: a write, or a read, of a byte that another thread of the same launch wrote unordered
//     with it (another block: always; the same block: same epoch). Atomics are exempt (emu_core.h mutes
//     the hooks around them). Reads followed by another thread's write (global WAR) are not tracked.
// Each hazard is printed once per pair of source lines as an "EMU RACE ..." line on stderr with the
// kernel, block, the two threads, the address and both source lines (addr2line on the return address);
// emu::hazards() counts them all, and the process prints the total at exit.
#include <dlfcn.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>
#include <tuple>

namespace emu {

bool racecheck = std::getenv("EMU_RACECHECK") != nullptr;
volatile int quiet = 0;
uint32_t serial = 1;  // block epoch, global: bumped at each block start and each completed barrier
static uint32_t launch_serial0 = 0, block_in_launch = 0;
static long n_hazards = 0;
static std::set<std::tuple<int, uint32_t, uint32_t>> reported;
static uintptr_t code_base = 0;
static uintptr_t static_lo = UINTPTR_MAX, static_hi = 0;
static std::string code_file;

struct SRec {  // one byte of shared memory
  uint32_t w_serial = 0, w_wgen = 0, w_pc = 0;
  uint16_t w_tid = 0;
  uint32_t r_serial = 0;
  uint16_t r_tid[2] = {0, 0};
  uint32_t r_wgen[2] = {0, 0}, r_pc[2] = {0, 0};
  uint8_t nr = 0;
};
struct GRec {  // one byte of a device buffer, written in this launch
  uint32_t serial = 0, who = 0, pc = 0;
};

static std::vector<SRec> dyn_shadow(sizeof(dyn_smem_buf));
static std::map<uintptr_t, std::pair<size_t, std::vector<SRec>>> static_shadow;  // static __shared__ arrays
static std::map<uintptr_t, std::pair<size_t, GRec*>> gshadow;  // base -> (size, shadow) for this launch
static uintptr_t gcache_base = 0, gcache_end = 0;
static GRec* gcache = nullptr;

long hazards() { return n_hazards; }

// "file:line" of a code offset, with the inlining chain out to the kernel: "mma.cuh:41 < attention_fwd.cu:160".
static std::string where(uint32_t pc) {
  if (!pc) return "?";
  char cmd[1200];
  std::snprintf(cmd, sizeof cmd, "addr2line -i -e '%s' 0x%x 2>/dev/null", code_file.c_str(), pc - 1);
  FILE* f = popen(cmd, "r");
  char line[1024];
  std::string out;
  while (f && fgets(line, sizeof line, f)) {
    std::string s(line);
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    const size_t slash = s.rfind('/');
    if (slash != std::string::npos) s = s.substr(slash + 1);
    const size_t disc = s.find(" (discriminator");
    if (disc != std::string::npos) s.erase(disc);
    if (s.empty() || out.find(s) != std::string::npos) continue;
    out += (out.empty() ? "" : " < ") + s;
  }
  if (f) pclose(f);
  return out.empty() ? "?" : out;
}
// An address in words: the offset into dynamic or static shared memory, or a device pointer.
static std::string addr_name(uintptr_t a) {
  char b[96];
  const uintptr_t d0 = (uintptr_t)dyn_smem_buf;
  if (a >= d0 && a < d0 + sizeof(dyn_smem_buf))
    std::snprintf(b, sizeof b, "dynamic shared offset %lu", (unsigned long)(a - d0));
  else if (a >= static_lo && a < static_hi)
    std::snprintf(b, sizeof b, "static shared array byte %lu",
                  (unsigned long)(a - std::prev(static_shadow.upper_bound(a))->first));
  else
    std::snprintf(b, sizeof b, "device address %p", (void*)a);
  return b;
}

static void hazard(const char* space, const char* kind, uintptr_t addr, uint16_t other, uint32_t other_pc,
                   const char* other_op, uint32_t pc, const char* op) {
  n_hazards++;
  const int k = (space[0] == 's' ? 0 : 8) + kind[0] + kind[1];
  if (!reported.insert({k, std::min(pc, other_pc), std::max(pc, other_pc)}).second || reported.size() > 200) return;
  std::fprintf(stderr,
               "EMU RACE %s-memory %s hazard in %s: block (%u,%u,%u) thread %d %s at %s vs thread %d %s at %s, "
               "%s\n",
               space, kind, kernel_name(), g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, cur->tid, op, where(pc).c_str(),
               (int)other, other_op, where(other_pc).c_str(), addr_name(addr).c_str());
}

static inline bool ordered(uint16_t tid, uint32_t wgen, int me, uint32_t my_wgen) {
  return tid == me || ((tid >> 5) == (me >> 5) && wgen != my_wgen);
}

static void shared_access(SRec* sh, uintptr_t a, size_t n, bool write, int me, uint32_t pc) {
  const uint32_t wg = warp_gen(me >> 5);
  for (size_t i = 0; i < n; i++) {
    SRec& r = sh[i];
    if (r.w_serial == serial && !ordered(r.w_tid, r.w_wgen, me, wg))
      hazard("shared", write ? "WAW" : "RAW", a + i, r.w_tid, r.w_pc, "write", pc, write ? "write" : "read");
    if (r.r_serial != serial) r.nr = 0, r.r_serial = serial;
    if (write) {
      for (int k = 0; k < r.nr; k++)
        if (!ordered(r.r_tid[k], r.r_wgen[k], me, wg))
          hazard("shared", "WAR", a + i, r.r_tid[k], r.r_pc[k], "read", pc, "write");
      r.w_serial = serial, r.w_tid = (uint16_t)me, r.w_wgen = wg, r.w_pc = pc;
    } else {
      int k = 0;
      while (k < r.nr && r.r_tid[k] != me) k++;
      if (k == 2) k = 1;  // a third reader replaces the second
      if (k == r.nr) r.nr++;
      r.r_tid[k] = (uint16_t)me, r.r_wgen[k] = wg, r.r_pc[k] = pc;
    }
  }
}

static uintptr_t gap_lo = 1, gap_hi = 0;  // the last gap between device buffers looked up

static GRec* gshadow_for(uintptr_t a, bool create) {
  if (a >= gcache_base && a < gcache_end) return gcache + (a - gcache_base);
  if (a >= gap_lo && a < gap_hi) return nullptr;  // not device memory (a global of the emulator, ...)
  uintptr_t base;
  size_t size;
  if (!find_region(a, &base, &size)) {
    gap_lo = base, gap_hi = base + size;
    return nullptr;
  }
  auto it = gshadow.find(base);
  if (it == gshadow.end()) {
    if (!create) return nullptr;
    GRec* s = static_cast<GRec*>(std::calloc(size, sizeof(GRec)));  // lazily zeroed pages
    if (!s) die("racecheck: no memory for the shadow of a %zu-byte buffer", size);
    it = gshadow.emplace(base, std::make_pair(size, s)).first;
  }
  gcache_base = base, gcache_end = base + it->second.first, gcache = it->second.second;
  return gcache + (a - base);
}

static void global_access(uintptr_t a, size_t n, bool write, int me, uint32_t pc) {
  GRec* g = gshadow_for(a, write);
  if (!g) return;
  if (a + n > gcache_end) n = gcache_end - a;
  const uint32_t who = (block_in_launch << 10) | (uint32_t)me;
  for (size_t i = 0; i < n; i++) {
    GRec& r = g[i];
    if (r.serial >= launch_serial0 && r.who != who && ((r.who >> 10) != block_in_launch || r.serial == serial))
      hazard("global", write ? "WAW" : "RAW", a + i, (uint16_t)(r.who & 1023), r.pc, "write", pc,
             write ? "write" : "read");
    if (write) r.serial = serial, r.who = who, r.pc = pc;
  }
}

void note_access(const void* p, size_t n, bool write, int tid, const void* ret) {
  const uintptr_t a = (uintptr_t)p;
  const uint32_t pc = (uint32_t)((uintptr_t)ret - code_base);
  const uintptr_t d0 = (uintptr_t)dyn_smem_buf;
  if (a >= d0 && a < d0 + sizeof(dyn_smem_buf)) return shared_access(&dyn_shadow[a - d0], a, n, write, tid, pc);
  if (a >= static_lo && a < static_hi) {
    auto it = static_shadow.upper_bound(a);
    if (it != static_shadow.begin() && a < (--it)->first + it->second.first)
      return shared_access(&it->second.second[a - it->first], a, n, write, tid, pc);
  }
  global_access(a, n, write, tid, pc);
}

inline void hook(uintptr_t a, size_t n, bool write, const void* ret) {
  if (!racecheck || !cur || quiet) return;
  if (a - (uintptr_t)cur->stack < (512u << 10)) return;  // the fiber's own stack
  note_access((const void*)a, n, write, cur->tid, ret);
}

void note_shared(const void* p, size_t n, bool write, int tid) {
  if (racecheck && cur) note_access(p, n, write, tid, __builtin_return_address(0));
}
void race_static_shared(void* p, size_t n) {
  if (!racecheck) return;
  auto& e = static_shadow[(uintptr_t)p];
  if (e.second.size() != n) e = {n, std::vector<SRec>(n)};
  static_lo = std::min(static_lo, (uintptr_t)p);
  static_hi = std::max(static_hi, (uintptr_t)p + n);
}
void race_begin_launch(const void* fn) {
  if (!code_base) {
    Dl_info self;
    dladdr(fn, &self);
    code_base = (uintptr_t)self.dli_fbase;
    code_file = self.dli_fname ? self.dli_fname : "";
    if (code_file.empty() || code_file.find('/') == std::string::npos) {
      char exe[1024] = {0};
      if (readlink("/proc/self/exe", exe, sizeof exe - 1) > 0) code_file = exe;
    }
  }
  launch_serial0 = ++serial;
  block_in_launch = 0;
}
void race_begin_block() {
  serial++;
  block_in_launch++;
}
void race_end_launch() {
  gap_lo = 1, gap_hi = 0;  // buffers may come and go between launches
  for (auto& kv : gshadow) std::free(kv.second.second);
  gshadow.clear();
  gcache_base = gcache_end = 0;
  gcache = nullptr;
}

static struct AtExit {
  ~AtExit() {
    if (racecheck) std::fprintf(stderr, "EMU racecheck: %ld hazard(s)\n", n_hazards);
  }
} at_exit;

}  // namespace emu

// The hooks GCC's thread-sanitizer instrumentation calls (see the top of this file): a read and a write
// hook per access (a read-modify-write calls both), plus function entry/exit, which we ignore. Hidden,
// so that the calls from the kernels are direct calls inside the addon rather than through its PLT.
#define EMU_HOOK_API extern "C" __attribute__((visibility("hidden")))
#define EMU_HOOK(N)                                                                                             \
  EMU_HOOK_API void __tsan_read##N(void* a) { emu::hook((uintptr_t)a, N, false, __builtin_return_address(0)); } \
  EMU_HOOK_API void __tsan_write##N(void* a) { emu::hook((uintptr_t)a, N, true, __builtin_return_address(0)); } \
  EMU_HOOK_API void __tsan_unaligned_read##N(void* a) {                                                         \
    emu::hook((uintptr_t)a, N, false, __builtin_return_address(0));                                             \
  }                                                                                                             \
  EMU_HOOK_API void __tsan_unaligned_write##N(void* a) {                                                        \
    emu::hook((uintptr_t)a, N, true, __builtin_return_address(0));                                              \
  }                                                                                                             \
  EMU_HOOK_API void __tsan_volatile_read##N(void* a) {                                                          \
    emu::hook((uintptr_t)a, N, false, __builtin_return_address(0));                                             \
  }                                                                                                             \
  EMU_HOOK_API void __tsan_volatile_write##N(void* a) { emu::hook((uintptr_t)a, N, true, __builtin_return_address(0)); }
EMU_HOOK(1)
EMU_HOOK(2)
EMU_HOOK(4)
EMU_HOOK(8)
EMU_HOOK(16)
EMU_HOOK_API void __tsan_read_range(void* a, size_t n) {
  emu::hook((uintptr_t)a, n, false, __builtin_return_address(0));
}
EMU_HOOK_API void __tsan_write_range(void* a, size_t n) {
  emu::hook((uintptr_t)a, n, true, __builtin_return_address(0));
}
EMU_HOOK_API void __tsan_init() {}
EMU_HOOK_API void __tsan_func_entry(void*) {}
EMU_HOOK_API void __tsan_func_exit() {}
EMU_HOOK_API void __tsan_vptr_read(void**) {}
EMU_HOOK_API void __tsan_vptr_update(void**, void*) {}
// Atomic operations of the host code in the instrumented files (static-local guards, std::call_once):
// done directly (the racecheck model exempts atomics).
#define EMU_TSAN_ATOMIC(N, T)                                                                                       \
  EMU_HOOK_API T __tsan_atomic##N##_load(const volatile T* a, int) { return __atomic_load_n(a, __ATOMIC_SEQ_CST); } \
  EMU_HOOK_API void __tsan_atomic##N##_store(volatile T* a, T v, int) { __atomic_store_n(a, v, __ATOMIC_SEQ_CST); }
EMU_TSAN_ATOMIC(8, uint8_t)
EMU_TSAN_ATOMIC(16, uint16_t)
EMU_TSAN_ATOMIC(32, uint32_t)
EMU_TSAN_ATOMIC(64, uint64_t)
