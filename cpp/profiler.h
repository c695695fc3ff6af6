// profiler.h — per-kernel timing of everything the addon runs between start() and stop().
//
// binding.cc wraps each kernel call in a Scope while a recording is on. CPU kernels run on the calling
// thread and are timed with the host clock; a device with a timeline of its own (CUDA) is timed with
// the backend's marks (events on the stream), resolved only at stop(), so recording does not
// synchronise anything. stop() sums the calls per key (kernel name, device, dtype and argument shapes).
// Plain C++ (no napi.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace llava {
namespace profiler {

struct Entry {
  std::string key;  // "matmul bfloat16 [8192,11008] [8192,4096] [4096,11008]"
  Device device;
  int64_t calls = 0;
  double total_ms = 0, max_ms = 0;
};

bool active();
void start();  // throws KernelError if a recording is already on
// Ends the recording: waits for the device work it timed and returns one entry per key, largest total
// first, plus how many calls past the record cap went untimed.
std::vector<Entry> stop(int64_t* dropped = nullptr);

// The key of one kernel call, built only while recording.
std::string call_key(const std::string& name, const std::vector<KernelArg>& args);

// Times one kernel call from construction to destruction (also when the kernel throws).
class Scope {
 public:
  Scope(std::string key, Device device);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  std::string key_;
  Device device_;
  void* mark_ = nullptr;
  bool failed_ = false;
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace profiler
}  // namespace llava
