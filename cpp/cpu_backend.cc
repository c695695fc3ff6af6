// cpu_backend.cc — host memory (64-byte aligned, for AVX loads) and the worker pool behind
// parallel_for. The CUDA backend is cuda/backend.cu.
//
// The pool is sized to the machine's cores and created on first use. parallel_for splits [0, n)
// into one contiguous range per worker (no work stealing: our kernels hand it even work), runs the
// first range on the calling thread and waits for the rest. Nested calls run serially, so a kernel
// may call another parallel kernel without deadlocking the pool.
//
// Waiting, as OpenMP runtimes do it (KMP_BLOCKTIME): a worker that finishes its range spins (with the
// pause hint) for the block time waiting for the next region, then sleeps on a condition variable; the
// caller spins the same way for the workers to finish. Kernels come in quick succession separated by
// the JavaScript between them (tens to hundreds of microseconds), and waking a sleeping worker costs
// tens of microseconds plus, after an idle spell, the core's climb back out of its sleep state, so a
// 50 us window made every call after a short pause pay the wake-up. The block time is
// LLAVA_CPU_SPIN_US (default 2000 us; 0 sleeps at once; at most 1 s) or native.cpuSpinUs(us) at run
// time. Spinning ends with the window, so an idle process uses no CPU, and ends early when the
// waiter finds it was preempted (more runnable threads than cores: there spinning made a two-thread
// call wait for its descheduled partner, measured 2-3x slower than sleeping). One notify_all (one
// futex wake) wakes every sleeping worker; while regions keep coming nobody sleeps or is woken.
//
// Host memory goes through a size-bucketed cache, like the CUDA allocator: a freed block of 16 KiB or
// more is kept on a free list for its bucket (sizes rounded up to 1, 1.25, 1.5 or 1.75 times a power
// of two, so at most 25% is wasted) and handed to the next allocation of that bucket. Fresh memory
// from the OS arrives unmapped and is zeroed page by page on first touch, which made every large
// output cost a page-fault storm; a reused block is already mapped. The cache holds at most
// LLAVA_CPU_CACHE_MB (default 2048) MiB; emptyCache() returns it all; memoryStats reports
// bytes in use, cached, allocations from the OS and the peak. Blocks under 16 KiB go straight to
// the C library, whose own free lists already serve them well.
#include <algorithm>
#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <vector>
#include <mutex>
#include <thread>
#if defined(__linux__)
#include <pthread.h>
#endif

#include "kernel_api.h"

namespace llava {
namespace {

constexpr int64_t kDefaultSpinUs = 2000, kMaxSpinUs = 1000000;

int64_t spin_us_from_env() {
  const char* env = std::getenv("LLAVA_CPU_SPIN_US");
  if (!env || !*env) return kDefaultSpinUs;
  char* end = nullptr;
  long long v = std::strtoll(env, &end, 10);
  if (end == env || *end || v < 0) return kDefaultSpinUs;  // not a count of microseconds: the default
  return std::min<int64_t>(v, kMaxSpinUs);
}
std::atomic<int64_t>& spin_us_slot() {
  static std::atomic<int64_t> us{spin_us_from_env()};
  return us;
}

// The spin-wait hint of the architecture (lets the sibling hyperthread run), nothing elsewhere.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// Wait for pred() for up to the block time; true when it held. The first kPauseSpin spins with the
// pause hint (a region usually follows within it); after that each check yields the core. A gap of
// more than kPreempted between two checks means the scheduler took the core away: the machine has
// more runnable threads than cores, where a spinning thread only delays the others (and is itself
// queued behind them when its work arrives, while a sleeper is woken with priority), so the wait
// goes to sleep at once.
constexpr auto kPauseSpin = std::chrono::microseconds(50);
constexpr auto kPreempted = std::chrono::microseconds(200);
template <typename P> bool spin_until(P pred) {
  const auto window = std::chrono::microseconds(spin_us_slot().load(std::memory_order_relaxed));
  const auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  for (int i = 0;; i++) {
    if (pred()) return true;
    if ((i & 63) == 63) {
      const auto t = std::chrono::steady_clock::now();
      if (t - t0 > window || t - last > kPreempted) return false;
      last = t;
      if (t - t0 > kPauseSpin) {
        std::this_thread::yield();
        continue;
      }
    }
    cpu_relax();
  }
}

// Names a pool worker "llava-cpu-<i>" (Linux; at most 15 characters), so that top -H, perf and the tests
// (test/engine/cpu_pool.test.ts reads /proc/self/task/*/comm) can tell the pool's threads from V8's.
static void name_worker(int i) {
#if defined(__linux__)
  char name[16];
  std::snprintf(name, sizeof name, "llava-cpu-%d", i);
  pthread_setname_np(pthread_self(), name);
#else
  (void)i;
#endif
}

class Pool {
 public:
  Pool() {
    unsigned hc = std::thread::hardware_concurrency();
    const char* env = std::getenv("LLAVA_NUM_THREADS");
    int n = env ? std::atoi(env) : (int)(hc ? hc : 1);
    n_ = std::max(1, std::min(n, 256));
    for (int i = 1; i < n_; i++)
      workers_.emplace_back([this, i] {
        name_worker(i);
        loop(i);
      });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
      gen_++;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int size() const { return n_; }

  void run(int parts, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> call(call_mu_);  // one parallel region at a time
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      parts_ = parts;
      pending_ = parts - 1;
      pending_pub_.store(parts - 1, std::memory_order_release);
      error_ = nullptr;
      gen_++;
      gen_pub_.store(gen_, std::memory_order_release);
    }
    cv_.notify_all();
    try {
      fn(0);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      if (!error_) error_ = std::current_exception();
    }
    spin_until([this] { return pending_pub_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      const std::function<void(int)>* fn;
      spin_until([&] { return gen_pub_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_ != seen; });
        seen = gen_;
        if (stop_) return;
        if (id >= parts_) continue;
        fn = fn_;
      }
      try {
        (*fn)(id);
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      pending_pub_.store(--pending_, std::memory_order_release);
      if (pending_ == 0) done_cv_.notify_one();
    }
  }

  int n_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mu_, call_mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* fn_ = nullptr;
  int parts_ = 0, pending_ = 0;
  uint64_t gen_ = 0;
  // Lock-free mirrors of gen_ and pending_ for the spin phase (written under mu_).
  std::atomic<uint64_t> gen_pub_{0};
  std::atomic<int> pending_pub_{0};
  bool stop_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p;
  return p;
}

// ---------------------------------------------------------------- host memory cache
class HostCache {
 public:
  static constexpr size_t kMinCached = 16 << 10;
  HostCache() {
    const char* env = std::getenv("LLAVA_CPU_CACHE_MB");
    if (env && *env) limit_ = size_t(std::max(0L, std::atol(env))) << 20;
  }
  ~HostCache() { release(); }

  // Bucket size for n bytes: 64-byte multiples below kMinCached, else the next of 4 steps per octave.
  static size_t bucket(size_t n) {
    size_t sz = std::max<size_t>(64, (n + 63) / 64 * 64);
    if (sz < kMinCached) return sz;
    size_t p = size_t(1) << (63 - __builtin_clzll(sz));  // largest power of two <= sz
    size_t step = p / 4;
    return (sz + step - 1) / step * step;
  }

  void* alloc(size_t n) {
    const size_t sz = bucket(n);
    if (sz >= kMinCached) {
      std::lock_guard<std::mutex> lk(mu_);
      auto it = free_.find(sz);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= sz;
        in_use_ += sz;
        peak_ = std::max(peak_, in_use_);
        return p;
      }
    }
    void* p = std::aligned_alloc(64, sz);
    if (!p && sz >= kMinCached) {  // out of memory: give the cache back and try once more
      release();
      p = std::aligned_alloc(64, sz);
    }
    if (!p) throw KernelError("[alloc] out of host memory: asked for " + std::to_string(n) + " bytes");
    std::lock_guard<std::mutex> lk(mu_);
    in_use_ += sz;
    mallocs_++;
    peak_ = std::max(peak_, in_use_);
    return p;
  }

  void free(void* p, size_t n) {
    if (!p) return;
    const size_t sz = bucket(n);
    {
      std::lock_guard<std::mutex> lk(mu_);
      in_use_ -= sz;
      if (sz >= kMinCached && cached_ + sz <= limit_) {
        free_[sz].push_back(p);
        cached_ += sz;
        return;
      }
    }
    std::free(p);
  }

  void release() {
    std::map<size_t, std::vector<void*>> blocks;
    {
      std::lock_guard<std::mutex> lk(mu_);
      blocks.swap(free_);
      cached_ = 0;
    }
    for (auto& kv : blocks)
      for (void* p : kv.second) std::free(p);
  }

  void stats(double* st) {
    std::lock_guard<std::mutex> lk(mu_);
    st[0] = double(in_use_);
    st[1] = double(cached_);
    st[2] = double(mallocs_);
    st[3] = double(peak_);
  }

 private:
  std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;
  size_t in_use_ = 0, cached_ = 0, peak_ = 0, mallocs_ = 0;
  size_t limit_ = size_t(2048) << 20;
};

HostCache& host_cache() {
  static HostCache* c = new HostCache();  // never destroyed: storages may be freed during exit
  return *c;
}
thread_local bool in_parallel = false;

}  // namespace

int num_threads() { return pool().size(); }

int64_t cpu_spin_us() { return spin_us_slot().load(std::memory_order_relaxed); }
void set_cpu_spin_us(int64_t us) { spin_us_slot().store(std::max<int64_t>(0, std::min(us, kMaxSpinUs))); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  int64_t parts = std::min<int64_t>(pool().size(), (n + std::max<int64_t>(grain, 1) - 1) / std::max<int64_t>(grain, 1));
  if (parts <= 1 || in_parallel) {
    fn(0, n);
    return;
  }
  pool().run((int)parts, [&](int p) {
    int64_t b = n * p / parts, e = n * (p + 1) / parts;
    in_parallel = true;
    try {
      if (b < e) fn(b, e);
    } catch (...) {
      in_parallel = false;
      throw;
    }
    in_parallel = false;
  });
}

// No timing hooks (the last two): CPU kernels run on the calling thread, so the profiler uses the host clock.
static BackendRegistrar cpu_backend(Device::CPU, DeviceBackend{
                                                     [] { return true; },
                                                     [] {
                                                       return std::string("cpu (") + std::to_string(num_threads()) +
                                                              " threads)";
                                                     },
                                                     [](size_t n) -> void* { return host_cache().alloc(n); },
                                                     [](void* p, size_t n) { host_cache().free(p, n); },
                                                     [](void* d, const void* s, size_t n) { std::memmove(d, s, n); },
                                                     [](void* d, const void* s, size_t n) { std::memmove(d, s, n); },
                                                     [](void* d, const void* s, size_t n) { std::memmove(d, s, n); },
                                                     [] {},
                                                     [](double* st) { host_cache().stats(st); },
                                                     [] { host_cache().release(); },
                                                     {},
                                                     {},
                                                 });

}  // namespace llava
