// isa/act_avx512.cc — the vectorised activations at 16 lanes, built with the AVX-512 flags on x86-64
// (empty elsewhere): isa/act_math.h over isa/act_lanes.h's Lanes<16>. Called by cpu_elementwise.cc.
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#include "act_lanes.h"
#include "act_math.h"

namespace llava {
namespace isa {

const ActKernels& act_kernels_avx512() { return Act<Lanes<16>>::table(); }

}  // namespace isa
}  // namespace llava
#endif
