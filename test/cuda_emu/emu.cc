// test/cuda_emu/emu.cc — host CUDA emulator runtime (see README.md): fiber scheduler, barriers, warp
// collectives, memory checks and the bank-conflict report.
#include <dlfcn.h>
#include <ucontext.h>
#include <unistd.h>
#include <cxxabi.h>

#include <cstdarg>
#include <deque>
#include <map>
#include <stdexcept>

namespace emu {

Fiber* cur = nullptr;
bool cp_eager = std::getenv("EMU_CP_EAGER") != nullptr;
static bool random_order = std::getenv("EMU_RANDOM") != nullptr;
static unsigned long long rs = 88172645463325252ull;
static unsigned rnd() {
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return (unsigned)rs;
}
uint3 g_blockIdx;
dim3 g_blockDim, g_gridDim;
unsigned char* smem_base = nullptr;
size_t smem_size = 0;

static const char* cur_kernel_name();
static std::vector<Fiber> fibers;
static std::vector<Warp> warps;
static int blk_live = 0, blk_count = 0, blk_gen = 0;
static long progress = 0;
static const std::function<void()>* block_fn = nullptr;
static constexpr size_t kStack = 512 * 1024;
static std::vector<char*> stacks;

void die(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::fprintf(stderr, "EMU FATAL: ");
  std::vfprintf(stderr, fmt, ap);
  std::fprintf(stderr, " (block %u,%u,%u thread %d)\n", g_blockIdx.x, g_blockIdx.y, g_blockIdx.z, cur ? cur->tid : -1);
  va_end(ap);
  std::abort();
}

Warp& my_warp() { return warps[cur->tid / 32]; }
int lane() { return cur->tid % 32; }

// ---------------------------------------------------------------- fiber switching
// A thread of the emulated block is a fiber on its own stack; the scheduler (run_block) runs one until it
// waits (yield_wait) or exits. swapcontext also saves and restores the signal mask: a system call per
// switch, two per wait, millions per emulated GEMM; with it the emulator ran ten times slower (35 GEMM and
// attention parity cases: 120 s, against 11 s now). On x86-64 a switch needs only what the ABI says a
// call preserves (rbx, rbp, r12-r15, the stack pointer, MXCSR and the x87 control word), which emu_switch
// saves on the stack it leaves and restores from the one it enters. Elsewhere (or with -DEMU_UCONTEXT)
// ucontext stays; that build passed `test fuzz 12` and `test attn` on 2026-12-07 (a g++ wrapper adding
// -DEMU_UCONTEXT as CXX for build.sh).
static void trampoline();
#if defined(__x86_64__) && !defined(EMU_UCONTEXT)
extern "C" void emu_switch(void** save_sp, void* load_sp);
asm(R"(
  .text
  .globl emu_switch
  .hidden emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
)");
static void* sched_sp = nullptr;
// A new fiber's stack as emu_switch leaves one: the control words, six zeroed registers and trampoline as
// the return address, above it a null return address for trampoline (which never returns), 16-aligned as
// a call would leave it.
static void fiber_start(Fiber& f) {
  auto* sp = reinterpret_cast<uint64_t*>(reinterpret_cast<uintptr_t>(f.stack + kStack) & ~uintptr_t(15));
  *--sp = 0;
  *--sp = reinterpret_cast<uint64_t>(&trampoline);
  for (int i = 0; i < 6; i++) *--sp = 0;
  uint32_t mxcsr;
  uint16_t fpcw;
  asm volatile("stmxcsr %0" : "=m"(mxcsr));
  asm volatile("fnstcw %0" : "=m"(fpcw));
  *--sp = mxcsr | uint64_t(fpcw) << 32;
  f.ctx = sp;
}
static void to_fiber(Fiber& f) { emu_switch(&sched_sp, f.ctx); }
static void to_scheduler() { emu_switch(&cur->ctx, sched_sp); }
#else
static ucontext_t sched_ctx;
static std::deque<ucontext_t> ctxs;  // a deque: growing it keeps the earlier fibers' contexts in place
static void fiber_start(Fiber& f) {
  if ((int)ctxs.size() <= f.tid) ctxs.resize(f.tid + 1);
  ucontext_t& c = ctxs[f.tid];
  getcontext(&c);
  c.uc_stack.ss_sp = f.stack;
  c.uc_stack.ss_size = kStack;
  c.uc_link = &sched_ctx;
  makecontext(&c, trampoline, 0);
  f.ctx = &c;
}
static void to_fiber(Fiber& f) { swapcontext(&sched_ctx, static_cast<ucontext_t*>(f.ctx)); }
static void to_scheduler() { swapcontext(static_cast<ucontext_t*>(cur->ctx), &sched_ctx); }
#endif

void yield_wait(const int* gen, int val) {
  cur->wait_gen = gen;
  cur->wait_val = val;
  to_scheduler();
  cur->wait_gen = nullptr;
}

static const char* blk_site = nullptr;  // call site of the open __syncthreads
static int blk_threads = 0;             // threads the block was launched with

// synccheck: every thread of the block must reach the same __syncthreads; one that exited, or waits at
// another one, is an error (hardware may hang or, worse, pair the barriers up silently).
static void barrier_done() {
  if (blk_live != blk_threads)
    die("synccheck: __syncthreads at %s completed by %d of the block's %d threads (the others exited) in %s", blk_site,
        blk_live, blk_threads, cur_kernel_name());
  blk_count = 0;
  blk_gen++;
  serial++;
  blk_site = nullptr;
}

void syncthreads(const char* site) {
  progress++;
  if (blk_count == 0)
    blk_site = site;
  else if (std::strcmp(blk_site, site) != 0)
    die("synccheck: threads of one block wait at different __syncthreads (%s and %s) in %s", blk_site, site,
        cur_kernel_name());
  if (++blk_count == blk_live) {
    barrier_done();
    return;
  }
  const int g = blk_gen;
  while (blk_gen == g) yield_wait(&blk_gen, g);
}

void warp_collective(const char* tag, bool need_full, void (*compute)(Warp&, const void*), const void* ctx,
                     unsigned mask) {
  Warp& w = my_warp();
  if (need_full && w.live != 32) die("%s with %d live lanes", tag, w.live);
  // synccheck: the member mask must name exactly the lanes that take part, the same in every lane.
  if (!(mask >> lane() & 1)) die("synccheck: %s with mask 0x%08x that leaves out the calling lane", tag, mask);
  if (w.count == 0) {
    w.tag = tag;
    w.mask = mask;
  } else if (std::strcmp(w.tag, tag) != 0) {
    die("warp divergence: %s vs %s", w.tag, tag);
  } else if (w.mask != mask) {
    die("synccheck: lanes of one warp call %s with different masks (0x%08x, 0x%08x)", tag, w.mask, mask);
  }
  progress++;
  if (++w.count == w.live) {
    if (w.mask != w.live_mask)
      die("synccheck: %s with mask 0x%08x but the active lanes are 0x%08x", tag, w.mask, w.live_mask);
    {
      Mute m;  // the collective's own reads (ldmatrix rows) are recorded per lane by the shim
      compute(w, ctx);
    }
    w.count = 0;
    w.gen++;
    return;
  }
  const int g = w.gen;
  while (w.gen == g) yield_wait(&w.gen, g);
}

static void trampoline() {
  (*block_fn)();
  Fiber* f = cur;
  // retire outstanding copies (harmless); a wgmma never waited for leaves its accumulators undefined
  if (!f->wg_open.empty() || !f->wg_groups.empty())
    die("wgmma: thread %d of %s exited with wgmma not waited for (wgmma.wait_group 0 missing)", f->tid, kernel_name());
  f->done = true;
  progress++;
  blk_live--;
  Warp& w = warps[f->tid / 32];
  w.live--;
  w.live_mask &= ~(1u << (f->tid % 32));
  if (blk_count > 0 && blk_count == blk_live) barrier_done();
  if (w.count > 0 && w.count == w.live) die("warp collective %s completed by exiting lanes", w.tag);
  to_scheduler();  // for good: a finished fiber is never resumed
  die("a finished fiber was resumed");
}

static long block_serial = 0;  // counts blocks run, so static shared arrays are poisoned once per block
static std::map<void*, long> static_smem_block;

void fresh_shared(void* p, size_t n) {
  long& seen = static_smem_block[p];
  if (seen == block_serial) return;
  seen = block_serial;
  std::memset(p, 0xff, n);
  race_static_shared(p, n);
}

void run_block(int nthreads, const std::function<void()>& fn) {
  block_serial++;
  fibers.assign(nthreads, Fiber());
  warps.assign((nthreads + 31) / 32, Warp());
  while ((int)stacks.size() < nthreads) stacks.push_back(static_cast<char*>(std::malloc(kStack)));
  blk_live = blk_threads = nthreads;
  blk_count = 0;
  blk_site = nullptr;
  race_begin_block();
  block_fn = &fn;
  for (int i = 0; i < nthreads; i++) {
    Fiber& f = fibers[i];
    f.tid = i;
    f.tidx = make_uint3(i % g_blockDim.x, (i / g_blockDim.x) % g_blockDim.y, i / (g_blockDim.x * g_blockDim.y));
    f.stack = stacks[i];
    fiber_start(f);
    warps[i / 32].live++;
    warps[i / 32].live_mask |= 1u << (i % 32);
  }
  int remaining = nthreads;
  while (remaining > 0) {
    const long before = progress;
    bool ran = false;
    std::vector<int> order(fibers.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = (int)i;
    if (random_order)
      for (size_t i = order.size(); i > 1; i--) std::swap(order[i - 1], order[rnd() % i]);
    for (int oi : order) {
      Fiber& f = fibers[oi];
      if (f.done) continue;
      if (f.wait_gen && *f.wait_gen == f.wait_val) continue;
      cur = &f;
      ran = true;
      to_fiber(f);
      if (f.done) remaining--;
    }
    cur = nullptr;
    if (!ran || progress == before) {
      if (remaining > 0)
        die("deadlock: %d threads blocked (block barrier count %d/%d)", remaining, blk_count, blk_live);
    }
  }
}

// ---------------------------------------------------------------- memory registry
static std::map<uintptr_t, size_t> regions;
void register_region(const void* p, size_t n) { regions[(uintptr_t)p] = n; }
// The buffer holding a, or (false) the gap around a between buffers: [*base, *base + *size).
bool find_region(uintptr_t a, uintptr_t* base, size_t* size) {
  auto it = regions.upper_bound(a);
  const uintptr_t next = it == regions.end() ? UINTPTR_MAX : it->first;
  if (it == regions.begin()) {
    *base = 0, *size = next;
    return false;
  }
  --it;
  if (a >= it->first + it->second) {
    *base = it->first + it->second, *size = next - *base;
    return false;
  }
  *base = it->first;
  *size = it->second;
  return true;
}
void unregister_region(const void* p) { regions.erase((uintptr_t)p); }
void check_global(const void* p, size_t n, const char* what) {
  uintptr_t a = (uintptr_t)p;
  auto it = regions.upper_bound(a);
  if (it == regions.begin()) die("%s: %p outside any buffer", what, p);
  --it;
  if (a + n > it->first + it->second)
    die("%s: [%p, +%zu) outside buffer [%p, +%zu)", what, p, n, (void*)it->first, it->second);
}
void check_smem(const void* p, size_t n, const char* what) {
  const unsigned char* a = (const unsigned char*)p;
  if (a < smem_base || a + n > smem_base + smem_size)
    die("%s: shared offset %ld (+%zu) outside dynamic smem of %zu", what, (long)(a - smem_base), n, smem_size);
}
void memset_async(void* p, int v, size_t n) {
  if (n) check_global(p, n, "cudaMemsetAsync");
  submit([p, v, n] {
    if (n) check_global(p, n, "cudaMemsetAsync (when it ran)");
    std::memset(p, v, n);
  });
}

// ---------------------------------------------------------------- the stream (deferred mode)
bool deferred = std::getenv("EMU_DEFERRED") != nullptr;
static std::vector<std::function<void()>> queue;
static bool flushing = false;
void submit(std::function<void()> work) {
  if (!deferred || flushing) return work();
  queue.push_back(std::move(work));
}
void flush() {
  if (flushing) return;
  flushing = true;
  for (size_t i = 0; i < queue.size(); i++) queue[i]();
  queue.clear();
  flushing = false;
}

}  // namespace emu

namespace emu {
struct Stats {
  long phases = 0, conflicted = 0, worst = 1;
};
static std::map<std::string, std::map<std::string, Stats>> stats;  // kernel -> kind -> stats
static std::string cur_kernel, cur_mangled;
static std::map<std::pair<int, long>, std::vector<uintptr_t>> cp_calls;  // (warp, seq) -> lane addresses
void note_phase(const char* what, int ways) {
  Stats& s = stats[cur_kernel][what];
  s.phases++;
  if (ways > 1) s.conflicted++;
  s.worst = std::max<long>(s.worst, ways);
}
void note_cp_async(const void* smem) {
  auto& v = cp_calls[{cur->tid / 32, cur->cp_seq++}];
  v.resize(32, 0);
  v[cur->tid % 32] = (uintptr_t)smem + 1;
}
static void flush_cp() {
  for (auto& kv : cp_calls) {
    for (int ph = 0; ph < 4; ph++) {
      int cnt[8] = {0}, worst = 0, n = 0;
      for (int l = ph * 8; l < ph * 8 + 8; l++) {
        if (!kv.second[l]) continue;
        n++;
        worst = std::max(worst, ++cnt[((kv.second[l] - 1) / 16) % 8]);
      }
      if (n) note_phase("cp.async store", worst);
    }
  }
  cp_calls.clear();
}
void begin_kernel(const void* fn) {
  static std::map<uintptr_t, std::string> syms;
  race_begin_launch(fn);
  Dl_info self;
  dladdr((const void*)&begin_kernel, &self);
  if (syms.empty()) {
    char exe[1024] = {0};
    ssize_t ne = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (ne < 0) ne = 0;
    if (self.dli_fname && std::strchr(self.dli_fname, '/')) std::snprintf(exe, sizeof exe, "%s", self.dli_fname);
    FILE* f = popen((std::string("nm --defined-only ") + exe).c_str(), "r");
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
      char* end;
      uintptr_t a = std::strtoull(line, &end, 16);
      if (std::strlen(end) > 3) {
        std::string n(end + 3);
        n.pop_back();
        syms[a] = n;
      }
    }
    if (f) pclose(f);
  }
  // PIE: translate the runtime address to the link-time one through our own symbol
  uintptr_t rel = (uintptr_t)fn - (uintptr_t)self.dli_fbase;
  cur_kernel = "?";
  auto it = syms.find(rel);
  if (std::getenv("EMU_DEBUG_SYMS"))
    std::fprintf(stderr, "syms %zu rel %lx found %d\n", syms.size(), (unsigned long)rel, it != syms.end());
  cur_mangled = it != syms.end() ? it->second : "?";
  if (it != syms.end()) {
    int st = 0;
    char* dm = abi::__cxa_demangle(it->second.c_str(), nullptr, nullptr, &st);
    cur_kernel = st == 0 && dm ? dm : it->second;
    std::free(dm);
    for (const char* strip : {"llava::", "(anonymous namespace)::", "attn::", "void "}) {
      size_t q;
      while ((q = cur_kernel.find(strip)) != std::string::npos) cur_kernel.erase(q, std::strlen(strip));
    }
    auto p = cur_kernel.rfind('(');
    if (p != std::string::npos) cur_kernel = cur_kernel.substr(0, p);
  }
}
// EMU_LAUNCH_LOG=FILE: every kernel launched, with its largest block and dynamic shared memory, as
// JSON lines at exit (test/cuda/cuda_emu_addon.test.ts checks them against ptxas's resource usage).
struct LaunchStat {
  std::string name;
  long count = 0;
  unsigned threads = 0;
  size_t smem = 0;
};
static std::map<std::string, LaunchStat> launch_stats;
static struct LaunchLog {
  ~LaunchLog() {
    const char* path = std::getenv("EMU_LAUNCH_LOG");
    if (!path || launch_stats.empty()) return;
    FILE* f = std::fopen(path, "w");
    if (!f) return;
    for (auto& kv : launch_stats)
      std::fprintf(f, "{\"mangled\":\"%s\",\"launches\":%ld,\"threads\":%u,\"smem\":%zu}\n", kv.first.c_str(),
                   kv.second.count, kv.second.threads, kv.second.smem);
    std::fclose(f);
  }
} launch_log;

void end_kernel() {
  LaunchStat& ls = launch_stats[cur_mangled];
  ls.count++;
  ls.threads = std::max(ls.threads, g_blockDim.x * g_blockDim.y * g_blockDim.z);
  ls.smem = std::max(ls.smem, smem_size);
  flush_cp();
  race_end_launch();
}
static const char* cur_kernel_name() { return cur_kernel.c_str(); }
const char* kernel_name() { return cur_kernel.c_str(); }
uint32_t warp_gen(int warp) { return (uint32_t)warps[warp].gen; }
void print_bank_stats() {
  for (auto& k : stats)
    for (auto& s : k.second)
      if (s.second.phases)
        std::printf("bank: %-90.90s %-15s phases %8ld conflicted %6.2f%% worst %ld-way\n", k.first.c_str(),
                    s.first.c_str(), s.second.phases, 100.0 * s.second.conflicted / s.second.phases, s.second.worst);
}
}  // namespace emu
