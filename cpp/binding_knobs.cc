// binding_knobs.cc — the addon's tuning and measuring functions, beside binding.cc (the storage and
// kernel surface): the CPU kernels' instruction set and pool block time, the CUDA GEMM's tile, and the
// kernel profiler. Each reads its setting, after setting it when an argument is given.
#include <napi.h>

#include <cmath>
#include <string>

#include "cpu_isa.h"
#include "kernel_api.h"
#include "profiler.h"

namespace llava {
namespace {

// cpuIsa(cap?: 'portable' | 'avx2' | 'avx512' | 'avx512bf16' | 'amx', amxEmulation?: boolean)
//   -> { active, detected, avx512bf16, amxEmulated }: the instruction set the CPU kernels use, after setting the
// cap and the AMX emulation when given (see cpu_isa.h; the parity tests run every path).
Napi::Value CpuIsaInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsBoolean()) throw Napi::TypeError::New(env, "cpuIsa: amxEmulation must be a boolean");
    set_amx_emulation(info[1].As<Napi::Boolean>());
  }
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "cpuIsa: the cap must be a string");
    const std::string name = info[0].As<Napi::String>();
    CpuIsa cap;
    if (!parse_cpu_isa(name, &cap))
      throw Napi::Error::New(
          env, "cpuIsa: unknown instruction set '" + name + "' (portable, avx2, avx512, avx512bf16 or amx)");
    set_cpu_isa_cap(cap);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("active", cpu_isa_name(cpu_isa()));
  o.Set("detected", cpu_isa_name(cpu_isa_detected()));
  o.Set("avx512bf16", cpu_has_avx512_bf16());
  o.Set("amxEmulated", cpu_amx_emulated());
  return o;
}

// cpuSpinUs(us?) -> us: the CPU pool's block time in microseconds (cpu_backend.cc), set first when given.
Napi::Value CpuSpinUs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsNumber())
      throw Napi::TypeError::New(env, "cpuSpinUs: the block time must be a number of microseconds");
    double us = info[0].As<Napi::Number>().DoubleValue();
    if (!(us >= 0 && us <= 1e6) || us != std::floor(us))
      throw Napi::RangeError::New(env, "cpuSpinUs: the block time must be an integer from 0 to 1000000 microseconds");
    set_cpu_spin_us(int64_t(us));
  }
  return Napi::Number::New(env, double(cpu_spin_us()));
}

// cudaGemmTile(name?) -> { active, tiles }: the CUDA GEMM's block tile (kCudaGemmTiles) after setting it
// when a name is given, and every name. A benchmark knob: every build takes it; a CPU-only one never
// reads it.
Napi::Value CudaGemmTile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array tiles = Napi::Array::New(env, kNumCudaGemmTiles);
  std::string known;
  for (int i = 0; i < kNumCudaGemmTiles; i++) {
    tiles.Set(uint32_t(i), kCudaGemmTiles[i]);
    known += (i ? ", " : "") + std::string(kCudaGemmTiles[i]);
  }
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "cudaGemmTile: the tile must be a string");
    const std::string name = info[0].As<Napi::String>();
    int found = -1;
    for (int i = 0; i < kNumCudaGemmTiles; i++)
      if (name == kCudaGemmTiles[i]) found = i;
    if (found < 0) throw Napi::Error::New(env, "cudaGemmTile: unknown tile '" + name + "' (" + known + ")");
    set_cuda_gemm_tile(found);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("active", kCudaGemmTiles[cuda_gemm_tile()]);
  o.Set("tiles", tiles);
  return o;
}

// profile(true) starts recording every kernel call's time; profile(false) stops and returns
// { kernels: [{ key, device, calls, totalMs, maxMs }] (largest total first), dropped }. CUDA kernels are
// timed with events on the stream and resolved at the stop, which waits for them (cpp/profiler.h).
Napi::Value Profile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsBoolean())
    throw Napi::TypeError::New(env, "profile: pass true to start, false to stop");
  try {
    if (info[0].As<Napi::Boolean>()) {
      profiler::start();
      return env.Undefined();
    }
    int64_t dropped = 0;
    const std::vector<profiler::Entry> entries = profiler::stop(&dropped);
    Napi::Array arr = Napi::Array::New(env, entries.size());
    for (size_t i = 0; i < entries.size(); i++) {
      const profiler::Entry& e = entries[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("key", e.key);
      o.Set("device", device_name(e.device));
      o.Set("calls", double(e.calls));
      o.Set("totalMs", e.total_ms);
      o.Set("maxMs", e.max_ms);
      arr.Set(uint32_t(i), o);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("kernels", arr);
    out.Set("dropped", double(dropped));
    return out;
  } catch (const KernelError& e) { throw Napi::Error::New(env, e.what()); }
}

}  // namespace

void add_knob_exports(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuIsa", Napi::Function::New(env, CpuIsaInfo));
  exports.Set("cpuSpinUs", Napi::Function::New(env, CpuSpinUs));
  exports.Set("cudaGemmTile", Napi::Function::New(env, CudaGemmTile));
  exports.Set("profile", Napi::Function::New(env, Profile));
}

}  // namespace llava
