// isa/act_bf16_avx512.cc — isa/act_avx512.cc's activations for CPUs with AVX512-BF16: the same 16-lane
// code, with bf16 results stored by vcvtneps2bf16 (isa/act_lanes.h, LLAVA_ACT_HW_BF16). The whole file is
// built for that extension by the pragma; cpu_elementwise.cc calls it only when cpu_has_avx512_bf16().
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#pragma GCC target("avx512bf16")
#define LLAVA_ACT_HW_BF16 1
#include "act_lanes.h"
#include "act_math.h"

namespace llava {
namespace isa {

const ActKernels& act_kernels_avx512bf16() { return Act<Lanes<16>>::table(); }

}  // namespace isa
}  // namespace llava
#endif
