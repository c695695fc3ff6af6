// test/cuda_emu/ptx_probe.cu — compiled to PTX by test/cuda/ptx_tie.test.ts (nvcc -ptx, no GPU needed):
// one kernel per inline-asm wrapper of cuda/mma.cuh and cuda/wgmma.cuh, each operand read from its own slot of a volatile
// input and each result written to its own slot of a volatile output, so that the test can follow
// every C++ argument to its position in the PTX instruction and compare that with the fragment layout
// the emulator (shim/mma.cuh) implements.
#include "mma.cuh"
#include "wgmma.cuh"

using namespace llava::mma;

template <typename T>
__device__ void probe_mma(const volatile float* f, const volatile uint32_t* u, volatile float* out) {
  float d[4] = {f[0], f[1], f[2], f[3]};
  uint32_t a[4] = {u[0], u[1], u[2], u[3]};
  mma_16816<T>(d, a, u[4], u[5]);
  for (int i = 0; i < 4; i++) out[i] = d[i];
}
extern "C" __global__ void probe_mma_bf16(const volatile float* f, const volatile uint32_t* u, volatile float* out) {
  probe_mma<__nv_bfloat16>(f, u, out);
}
extern "C" __global__ void probe_mma_f16(const volatile float* f, const volatile uint32_t* u, volatile float* out) {
  probe_mma<__half>(f, u, out);
}
extern "C" __global__ void probe_ldsm_x4(const volatile uint32_t* u, volatile uint32_t* out) {
  uint32_t r[4];
  ldsm_x4(r, dyn_smem + u[0]);
  for (int i = 0; i < 4; i++) out[i] = r[i];
}
extern "C" __global__ void probe_ldsm_x4_trans(const volatile uint32_t* u, volatile uint32_t* out) {
  uint32_t r[4];
  ldsm_x4_trans(r, dyn_smem + u[0]);
  for (int i = 0; i < 4; i++) out[i] = r[i];
}
extern "C" __global__ void probe_cp_async(const volatile uint32_t* u, const char* g) {
  cp_async16(dyn_smem + u[0], g + u[1], u[2]);
  cp_async_commit();
  cp_async_wait<1>();
}

// The wgmma wrapper of cuda/wgmma.cuh (sm_90a only; the test compiles this file for sm_90a): d[0..63] from
// f, the two descriptors from u[0] and u[1] (8-byte slots), A K-major and B MN-major (the transpose flags
// 0 and 1), d after the instruction and its wait to out.
extern "C" __global__ void probe_wgmma_n128(const volatile float* f, const volatile uint64_t* u, volatile float* out) {
  float d[64];
  for (int i = 0; i < 64; i++) d[i] = f[i];
  llava::wgmma::fence();
  llava::wgmma::Wgmma<128>::run<0, 1>(d, u[0], u[1]);
  llava::wgmma::commit();
  llava::wgmma::wait<0>();
  llava::wgmma::fence_regs(d);
  for (int i = 0; i < 64; i++) out[i] = d[i];
}
