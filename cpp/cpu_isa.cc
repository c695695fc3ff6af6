// cpu_isa.cc — the run-time choice of CPU instruction set (see cpu_isa.h).
#include "cpu_isa.h"

#include <atomic>
#include <cstdlib>

namespace llava {
namespace {

CpuIsa detect() {
#if LLAVA_X86_ISA
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")))
    return CpuIsa::Portable;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return __builtin_cpu_supports("avx512bf16") ? CpuIsa::Avx512Bf16 : CpuIsa::Avx512;
  return CpuIsa::Avx2;
#else
  return CpuIsa::Portable;
#endif
}

CpuIsa env_cap() {
  const char* p = std::getenv("LLAVA_CPU_PORTABLE");
  if (p && *p && std::string(p) != "0") return CpuIsa::Portable;
  const char* s = std::getenv("LLAVA_CPU_ISA");
  CpuIsa cap = CpuIsa::Avx512Bf16;
  if (s && *s) parse_cpu_isa(s, &cap);  // an unknown name leaves the level uncapped
  return cap;
}

std::atomic<int>& cap_slot() {
  static std::atomic<int> cap{static_cast<int>(env_cap())};
  return cap;
}

}  // namespace

CpuIsa cpu_isa_detected() {
  static const CpuIsa isa = detect();
  return isa;
}

CpuIsa cpu_isa() {
  int cap = cap_slot().load(std::memory_order_relaxed);
  int det = static_cast<int>(cpu_isa_detected());
  return static_cast<CpuIsa>(cap < det ? cap : det);
}

bool cpu_has_avx512_bf16() { return cpu_isa() >= CpuIsa::Avx512Bf16; }

void set_cpu_isa_cap(CpuIsa cap) { cap_slot().store(static_cast<int>(cap), std::memory_order_relaxed); }

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx2:
      return "avx2";
    case CpuIsa::Avx512:
      return "avx512";
    case CpuIsa::Avx512Bf16:
      return "avx512bf16";
    default:
      return "portable";
  }
}

bool parse_cpu_isa(const std::string& name, CpuIsa* out) {
  if (name == "portable")
    *out = CpuIsa::Portable;
  else if (name == "avx2")
    *out = CpuIsa::Avx2;
  else if (name == "avx512")
    *out = CpuIsa::Avx512;
  else if (name == "avx512bf16")
    *out = CpuIsa::Avx512Bf16;
  else
    return false;
  return true;
}

}  // namespace llava
