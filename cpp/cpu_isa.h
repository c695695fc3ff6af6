// cpu_isa.h — which instruction set the CPU kernels use, chosen at run time.
//
// The addon is built for the baseline of its architecture (x86-64 without AVX, or aarch64), so it
// loads anywhere. Code that needs more lives in translation units built with their own flags and is
// only called after the CPU has been asked (__builtin_cpu_supports):
//   portable  every .cc in cpp/ (plain C++ the compiler vectorises for the baseline: SSE2 / NEON)
//   avx2      AVX2 + FMA + F16C: the cpp/ files listed in scripts/sources.js (AVX2_COPIES) compiled a
//             second time (LLAVA_ISA_BUILD=1), plus cpp/isa/*_avx2.cc
//   avx512    AVX-512 F/BW/VL/DQ: cpp/isa/*_avx512.cc
//   avx512bf16  the same plus AVX512-BF16 (vdpbf16ps, vcvtneps2bf16: Cooper Lake, Sapphire Rapids, Zen 4):
//             the functions of cpp/isa/*_avx512.cc built for it (a target attribute or pragma)
//   amx       the same plus AMX-TILE and AMX-BF16 (Sapphire Rapids and later), once Linux has granted the
//             process the tile data state (arch_prctl ARCH_REQ_XCOMP_PERM): the bf16 GEMM's AMX tile
//             (cpp/isa/gemm_amx_avx512.cc)
// scripts/sources.js lists the files of each level; binding.gyp and CMakeLists.txt build every level
// above portable as a static library with that level's flags (x86-64 only).
//
// Environment (read once, at first use):
//   LLAVA_CPU_PORTABLE=1          use the portable path only
//   LLAVA_CPU_ISA=portable|avx2|avx512|avx512bf16|amx   cap the level (never above what the CPU has)
//   LLAVA_CPU_AMX_EMULATE=1       on a CPU with AVX512-BF16 but no usable AMX, count AMX as present and run
//                                 the AMX tile's instructions in software (a test aid: slow, exact to the
//                                 instructions' definition; this is how CI covers the AMX path)
// set_cpu_isa_cap() and set_amx_emulation() change these at run time (the parity tests run every path in
// one process).
#pragma once

#include <string>

namespace llava {

enum class CpuIsa : int { Portable = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3, Amx = 4 };

// Whether this build carries x86 ISA code at all (not on aarch64, nor when LLAVA_PORTABLE_ONLY is set).
#if defined(__x86_64__) && !defined(LLAVA_PORTABLE_ONLY)
#define LLAVA_X86_ISA 1
#else
#define LLAVA_X86_ISA 0
#endif

// Which copy of a multi-built file this translation unit is (0 portable, 1 avx2).
#ifndef LLAVA_ISA_BUILD
#define LLAVA_ISA_BUILD 0
#endif

CpuIsa cpu_isa();            // the level in use: min(detected, cap), where emulation may add Amx to detected
CpuIsa cpu_isa_detected();   // what this CPU (and this build, and the OS for AMX) supports
bool cpu_has_avx512_bf16();  // cpu_isa() >= Avx512Bf16: the bf16 instructions may be used
bool cpu_amx_emulated();     // cpu_isa() is Amx by emulation: the AMX tile runs its instructions in software
void set_cpu_isa_cap(CpuIsa cap);
// Emulated AMX on or off; on takes effect only where the CPU has AVX512-BF16 and no usable AMX. Returns
// whether it is on.
bool set_amx_emulation(bool on);
const char* cpu_isa_name(CpuIsa isa);
bool parse_cpu_isa(const std::string& name, CpuIsa* out);

}  // namespace llava

// Registration for a file compiled twice (portable and avx2). The avx2 copy exports `sym_avx2`; the
// portable copy registers a kernel that calls it when the CPU allows and the cap permits. Use it
// outside any anonymous namespace, inside namespace llava.
#if LLAVA_ISA_BUILD == 1
#define LLAVA_CPU_KERNEL(name, fn, sym) \
  void sym##_avx2(const ::llava::KernelArgs& a) { fn(a); }
#elif LLAVA_X86_ISA
#define LLAVA_CPU_KERNEL(name, fn, sym)                                          \
  void sym##_avx2(const ::llava::KernelArgs& a);                                 \
  REGISTER_KERNEL(name, ::llava::Device::CPU, [](const ::llava::KernelArgs& a) { \
    if (::llava::cpu_isa() >= ::llava::CpuIsa::Avx2) return sym##_avx2(a);       \
    fn(a);                                                                       \
  })
#else
#define LLAVA_CPU_KERNEL(name, fn, sym) REGISTER_KERNEL(name, ::llava::Device::CPU, fn)
#endif
