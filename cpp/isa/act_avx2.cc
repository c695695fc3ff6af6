// isa/act_avx2.cc — the vectorised activations at 8 lanes, built with -mavx2 -mfma -mf16c on x86-64
// (empty elsewhere): isa/act_math.h over isa/act_lanes.h's Lanes<8>. Called by cpu_elementwise.cc.
#include "isa_kernels.h"

#if LLAVA_X86_ISA
#include "act_lanes.h"
#include "act_math.h"

namespace llava {
namespace isa {

const ActKernels& act_kernels_avx2() { return Act<Lanes<8>>::table(); }

}  // namespace isa
}  // namespace llava
#endif
