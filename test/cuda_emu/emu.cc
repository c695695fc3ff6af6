// test/cuda_emu/emu.cc — host CUDA emulator runtime (see README.md): fiber scheduler, barriers, warp
// collectives, memory checks and the bank-conflict report.
#include <ucontext.h>
#include <dlfcn.h>
#include <unistd.h>
#include <cxxabi.h>

#include <cstdarg>
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

static ucontext_t sched_ctx;
static std::vector<Fiber> fibers;
static std::vector<ucontext_t> ctxs;
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

void yield_wait(const int* gen, int val) {
  cur->wait_gen = gen;
  cur->wait_val = val;
  swapcontext((ucontext_t*)cur->ctx, &sched_ctx);
  cur->wait_gen = nullptr;
}

void syncthreads() {
  if (!cur->open.empty()) {
    // not an error (the pipelines commit right after), but remember it
  }
  progress++;
  if (++blk_count == blk_live) {
    blk_count = 0;
    blk_gen++;
    return;
  }
  const int g = blk_gen;
  while (blk_gen == g) yield_wait(&blk_gen, g);
}

void warp_collective(const char* tag, bool need_full, void (*compute)(Warp&, const void*), const void* ctx) {
  Warp& w = my_warp();
  if (need_full && w.live != 32) die("%s with %d live lanes", tag, w.live);
  if (w.count == 0)
    w.tag = tag;
  else if (std::strcmp(w.tag, tag) != 0)
    die("warp divergence: %s vs %s", w.tag, tag);
  progress++;
  if (++w.count == w.live) {
    compute(w, ctx);
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
  // retire outstanding copies (harmless)
  f->done = true;
  progress++;
  blk_live--;
  Warp& w = warps[f->tid / 32];
  w.live--;
  if (blk_count > 0 && blk_count == blk_live) {
    blk_count = 0;
    blk_gen++;
  }
  if (w.count > 0 && w.count == w.live) die("warp collective %s completed by exiting lanes", w.tag);
}

static long block_serial = 0;  // counts blocks run, so static shared arrays are poisoned once per block
static std::map<void*, long> static_smem_block;

void fresh_shared(void* p, size_t n) {
  long& seen = static_smem_block[p];
  if (seen == block_serial) return;
  seen = block_serial;
  std::memset(p, 0xff, n);
}

void run_block(int nthreads, const std::function<void()>& fn) {
  block_serial++;
  fibers.assign(nthreads, Fiber());
  ctxs.resize(nthreads);
  warps.assign((nthreads + 31) / 32, Warp());
  while ((int)stacks.size() < nthreads) stacks.push_back(static_cast<char*>(std::malloc(kStack)));
  blk_live = nthreads;
  blk_count = 0;
  block_fn = &fn;
  for (int i = 0; i < nthreads; i++) {
    Fiber& f = fibers[i];
    f.tid = i;
    f.tidx = make_uint3(i % g_blockDim.x, (i / g_blockDim.x) % g_blockDim.y, i / (g_blockDim.x * g_blockDim.y));
    f.ctx = &ctxs[i];
    getcontext(&ctxs[i]);
    ctxs[i].uc_stack.ss_sp = stacks[i];
    ctxs[i].uc_stack.ss_size = kStack;
    ctxs[i].uc_link = &sched_ctx;
    makecontext(&ctxs[i], trampoline, 0);
    warps[i / 32].live++;
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
      swapcontext(&sched_ctx, (ucontext_t*)f.ctx);
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
  std::memset(p, v, n);
}

}  // namespace emu

namespace emu {
struct Stats {
  long phases = 0, conflicted = 0, worst = 1;
};
static std::map<std::string, std::map<std::string, Stats>> stats;  // kernel -> kind -> stats
static std::string cur_kernel;
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
  if (syms.empty()) {
    char exe[1024] = {0};
    ssize_t ne = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (ne < 0) ne = 0;
    FILE* f = popen((std::string("nm -C --defined-only ") + exe).c_str(), "r");
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
  Dl_info self;
  dladdr((const void*)&begin_kernel, &self);
  uintptr_t rel = (uintptr_t)fn - (uintptr_t)self.dli_fbase;
  cur_kernel = "?";
  auto it = syms.find(rel);
  if (std::getenv("EMU_DEBUG_SYMS"))
    std::fprintf(stderr, "syms %zu rel %lx found %d\n", syms.size(), (unsigned long)rel, it != syms.end());
  if (it != syms.end()) {
    cur_kernel = it->second;
    for (const char* strip : {"llava::", "(anonymous namespace)::", "attn::", "void "}) {
      size_t q;
      while ((q = cur_kernel.find(strip)) != std::string::npos) cur_kernel.erase(q, std::strlen(strip));
    }
    auto p = cur_kernel.rfind('(');
    if (p != std::string::npos) cur_kernel = cur_kernel.substr(0, p);
  }
}
void end_kernel() { flush_cp(); }
void print_bank_stats() {
  for (auto& k : stats)
    for (auto& s : k.second)
      if (s.second.phases)
        std::printf("bank: %-90.90s %-15s phases %8ld conflicted %6.2f%% worst %ld-way\n", k.first.c_str(),
                    s.first.c_str(), s.second.phases, 100.0 * s.second.conflicted / s.second.phases, s.second.worst);
}
}  // namespace emu
