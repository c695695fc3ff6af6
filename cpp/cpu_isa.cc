// cpu_isa.cc — the run-time choice of CPU instruction set (see cpu_isa.h).
#include "cpu_isa.h"

#include <atomic>
#include <cstdlib>

#if LLAVA_X86_ISA
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace llava {
namespace {

// AMX-TILE and AMX-BF16 in CPUID (leaf 7: EDX bits 24 and 22), and Linux's leave to use the tile data state,
// which a process must request before its first tile instruction (arch_prctl ARCH_REQ_XCOMP_PERM for
// XFEATURE_XTILEDATA, Linux 5.16+). The grant is process-wide; a refusal (an older kernel, a signal stack too
// small for the larger state) leaves the AVX512-BF16 path.
bool amx_usable() {
#if LLAVA_X86_ISA && defined(__linux__)
  unsigned a, b, c, d;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  if (!((d >> 24) & 1) || !((d >> 22) & 1)) return false;
  constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

CpuIsa detect() {
#if LLAVA_X86_ISA
  __builtin_cpu_init();
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")))
    return CpuIsa::Portable;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq"))
    return !__builtin_cpu_supports("avx512bf16") ? CpuIsa::Avx512 : amx_usable() ? CpuIsa::Amx : CpuIsa::Avx512Bf16;
  return CpuIsa::Avx2;
#else
  return CpuIsa::Portable;
#endif
}

CpuIsa env_cap() {
  const char* p = std::getenv("LLAVA_CPU_PORTABLE");
  if (p && *p && std::string(p) != "0") return CpuIsa::Portable;
  const char* s = std::getenv("LLAVA_CPU_ISA");
  CpuIsa cap = CpuIsa::Amx;
  if (s && *s) parse_cpu_isa(s, &cap);  // an unknown name leaves the level uncapped
  return cap;
}

std::atomic<int>& cap_slot() {
  static std::atomic<int> cap{static_cast<int>(env_cap())};
  return cap;
}

bool env_amx_emulation() {
  const char* s = std::getenv("LLAVA_CPU_AMX_EMULATE");
  return s && *s && std::string(s) != "0";
}

std::atomic<bool>& emulation_slot() {
  static std::atomic<bool> on{env_amx_emulation()};
  return on;
}

// Emulation counts only on a CPU that runs everything else of the AMX path (AVX512-BF16) and lacks AMX.
bool emulating() {
  return emulation_slot().load(std::memory_order_relaxed) && cpu_isa_detected() == CpuIsa::Avx512Bf16;
}

}  // namespace

CpuIsa cpu_isa_detected() {
  static const CpuIsa isa = detect();
  return isa;
}

CpuIsa cpu_isa() {
  int cap = cap_slot().load(std::memory_order_relaxed);
  int det = static_cast<int>(emulating() ? CpuIsa::Amx : cpu_isa_detected());
  return static_cast<CpuIsa>(cap < det ? cap : det);
}

bool cpu_has_avx512_bf16() { return cpu_isa() >= CpuIsa::Avx512Bf16; }

bool cpu_amx_emulated() { return cpu_isa() == CpuIsa::Amx && emulating(); }

void set_cpu_isa_cap(CpuIsa cap) { cap_slot().store(static_cast<int>(cap), std::memory_order_relaxed); }

bool set_amx_emulation(bool on) {
  emulation_slot().store(on, std::memory_order_relaxed);
  return on;
}

const char* cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Avx2:
      return "avx2";
    case CpuIsa::Avx512:
      return "avx512";
    case CpuIsa::Avx512Bf16:
      return "avx512bf16";
    case CpuIsa::Amx:
      return "amx";
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
  else if (name == "amx")
    *out = CpuIsa::Amx;
  else
    return false;
  return true;
}

}  // namespace llava
