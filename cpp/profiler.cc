// profiler.cc — see profiler.h.
#include "profiler.h"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <utility>

namespace llava {
namespace profiler {
namespace {

// One timed call: host milliseconds (CPU), or two device marks to resolve at stop(). `key` indexes the
// recording's (key, device) pairs: the same kernel and shapes on two devices are two entries.
struct Record {
  int key;
  Device device;
  double ms;
  void* begin;
  void* end;
};

// Past this many calls a recording counts the rest without timing them (each CUDA record holds two
// events until stop()).
constexpr size_t kMaxRecords = 1 << 20;

struct State {
  std::mutex mu;
  std::atomic<bool> on{false};
  std::vector<std::pair<std::string, Device>> keys;
  std::map<std::pair<std::string, Device>, int> key_index;
  std::vector<Record> records;
  int64_t dropped = 0;
};
State& state() {
  static State s;
  return s;
}

void release(Record& r) {
  if (!r.begin) return;
  if (const DeviceBackend* be = find_backend(r.device)) {
    try {
      r.ms = be->timing_elapsed_ms(r.begin, r.end);
    } catch (...) {
      r.ms = -1;  // the device failed; the kernel call itself has reported why
    }
  }
  r.begin = r.end = nullptr;
}

}  // namespace

bool active() { return state().on.load(std::memory_order_relaxed); }

void start() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.on) throw KernelError("[profile] a recording is already on; stop it first");
  s.keys.clear();
  s.key_index.clear();
  s.records.clear();
  s.dropped = 0;
  s.on = true;
}

std::vector<Entry> stop(int64_t* dropped) {
  State& s = state();
  std::vector<Record> records;
  std::vector<std::pair<std::string, Device>> keys;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (!s.on) throw KernelError("[profile] no recording is on");
    s.on = false;
    records.swap(s.records);
    keys.swap(s.keys);
    s.key_index.clear();
    if (dropped) *dropped = s.dropped;
  }
  // Every key was added with its first record, so every entry gets at least one call.
  std::vector<Entry> out(keys.size());
  for (size_t i = 0; i < keys.size(); i++) {
    out[i].key = keys[i].first;
    out[i].device = keys[i].second;
  }
  for (Record& r : records) {
    release(r);  // waits for the device work behind this record
    Entry& e = out[r.key];
    e.calls++;
    if (r.ms > 0) {
      e.total_ms += r.ms;
      e.max_ms = std::max(e.max_ms, r.ms);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.total_ms > b.total_ms; });
  return out;
}

std::string call_key(const std::string& name, const std::vector<KernelArg>& args) {
  std::string k = name;
  bool typed = false;
  for (const KernelArg& a : args) {
    const TensorArg* t = std::get_if<TensorArg>(&a);
    if (!t) continue;
    if (!typed) {
      k += std::string(" ") + dtype_name(t->dtype);
      typed = true;
    }
    k += " [";
    for (int i = 0; i < t->ndim; i++) k += (i ? "," : "") + std::to_string(t->shape[i]);
    k += "]";
  }
  return k;
}

Scope::Scope(std::string key, Device device) : key_(std::move(key)), device_(device) {
  const DeviceBackend* be = find_backend(device_);
  if (be && be->timing_mark) {
    try {
      mark_ = be->timing_mark();
    } catch (...) {
      failed_ = true;  // the device is in trouble; the kernel call will say so, this call goes untimed
    }
  }
  t0_ = std::chrono::steady_clock::now();
}

Scope::~Scope() {
  const double host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0_).count();
  const DeviceBackend* be = mark_ ? find_backend(device_) : nullptr;
  void* end = nullptr;
  if (be) {
    try {
      end = be->timing_mark();
    } catch (...) {}
  }
  State& s = state();
  std::unique_lock<std::mutex> lock(s.mu);
  if (!s.on || failed_ || s.records.size() >= kMaxRecords || (be && !end)) {
    if (s.on) s.dropped++;
    lock.unlock();
    if (be) {
      try {
        be->timing_elapsed_ms(mark_, end);  // releases the marks
      } catch (...) {}
    }
    return;
  }
  auto [it, added] = s.key_index.try_emplace({key_, device_}, (int)s.keys.size());
  if (added) s.keys.push_back(it->first);
  const int idx = it->second;
  s.records.push_back(Record{idx, device_, be ? 0.0 : host_ms, mark_, end});
}

}  // namespace profiler
}  // namespace llava
