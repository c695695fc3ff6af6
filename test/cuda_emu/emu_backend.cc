// test/cuda_emu/emu_backend.cc — for the kernel test binary only: the host functions that cuda/backend.cu
// provides to cuda_common.cuh, reduced to what the kernel tests need (poisoned scratch registered with
// the bounds checker, an SM count the tests can change, sm_90). The emulated addon (build_addon.sh) compiles
// the real backend.cu against runtime.cc instead.
#include <immintrin.h>

#include "cuda_common.cuh"

namespace llava {
namespace gpu {
int emu_sms = 4;
void throw_cuda_error(cudaError_t e, const char* expr, const char* file, int line) {
  throw KernelError(std::string("[cuda] ") + expr + " failed (" + std::to_string((int)e) + ") at " + file + ":" +
                    std::to_string(line));
}
void check_launch(const KernelArgs&) {}
cudaStream_t stream() { return nullptr; }
int num_sms() { return emu_sms; }
int sm_version() { return 90; }  // an H100: the forced wgmma tiles run
void* device_alloc(size_t bytes) {
  void* p = std::aligned_alloc(256, (bytes + 255) / 256 * 256 + 256);
  std::memset(p, 0xff, bytes);  // poison scratch
  emu::register_region(p, bytes);
  return p;
}
void device_free(void* p) {
  emu::unregister_region(p);
  std::free(p);
}
uint16_t host_f32_to_f16(float f) { return _cvtss_sh(f, 0); }
}  // namespace gpu
}  // namespace llava
