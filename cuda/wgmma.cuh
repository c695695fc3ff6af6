// wgmma.cuh — the Hopper (sm_90a) warpgroup primitives that the wgmma GEMM in matmul_sm90.cu is built
// from. Like mma.cuh, every function is a thin wrapper over PTX, and the host emulator
// (test/cuda_emu/shim/wgmma.cuh) replaces exactly these with software versions.
//
//   wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16   D[64 x N] += A[64 x 16] B[16 x N], both
//                                                         operands read from shared memory through
//                                                         64-bit matrix descriptors, f32 accumulators
//   wgmma.fence / commit_group / wait_group               ordering of the asynchronous multiplies
//   fence.proxy.async.shared::cta                         makes this thread's ordinary shared-memory
//                                                         writes (cp.async included) visible to wgmma
//
// A warpgroup is four consecutive warps (128 threads) that issue the same wgmma together; warp w of the
// group holds rows 16w..16w+15 of D. Accumulator layout (PTX ISA, "wgmma .m64nNk16 register fragment
// for D"), with g = lane / 4 and t = lane % 4: d[4j + 0..1] = (row 16w + g, columns 8j + 2t, +1),
// d[4j + 2..3] = (row 16w + g + 8, same columns); i.e. the mma.m16n8 C fragment repeated over N / 8.
//
// Matrix descriptor (64 bits): start address >> 4 in bits 0-13, leading byte offset (LBO) >> 4 in 16-29,
// stride byte offset (SBO) >> 4 in 32-45, base offset 0 in 49-51, layout type in 62-63 (1: 128-byte
// swizzle). The kernel encodes them (matmul_sm90.cu, wg_desc) and the emulator decodes them.
// Shared-memory operands, 128-byte swizzle only. An "atom" is 8 rows of 128
// bytes (1 KB, 1 KB-aligned) whose 16-byte chunks are stored at chunk ^ (row % 8); the hardware applies
// that XOR to address bits [4:6] from bits [7:9], so the atoms must sit on 1 KB boundaries.
//   K-major operand (K contiguous: A of x @ W, B of x @ W^T): a row of an atom is 64 k of one m (or n).
//     Element (r, k) of the 64 x 16 (A) or N x 16 (B) slice is at start + (r / 8) * SBO + (r % 8) * 128
//     + 2k, swizzled; SBO = 1024 for rows packed one after another; LBO is unused (1). The next 16 k
//     of the same rows: start + 32 bytes.
//   MN-major operand (M or N contiguous, selected by the instruction's transpose flag): a row of an atom
//     is 64 consecutive m (or n) of one k. Element (r, k) is at start + (r / 64) * LBO + (k / 8) * SBO +
//     (k % 8) * 128 + 2 (r % 64), swizzled. The next 16 k: start + 2 * SBO.
// (These are the canonical layouts CUTLASS's make_gmma_desc encodes for Major::K and Major::MN, B128.)
//
// The instructions exist only in the arch-specific sm_90a target. Elsewhere (sm_80, the compute_90 PTX)
// the bodies compile to a trap; the host never launches them there (gpu::sm_version() must be 90).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LLAVA_WGMMA_ARCH 1
#else
#define LLAVA_WGMMA_ARCH 0
#endif

namespace llava {
namespace wgmma {

__device__ __forceinline__ void fence_proxy_async() {
#if LLAVA_WGMMA_ARCH
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Orders this thread's earlier register and shared-memory accesses before the wgmma that follow.
__device__ __forceinline__ void fence() {
#if LLAVA_WGMMA_ARCH
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void commit() {
#if LLAVA_WGMMA_ARCH
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
// Wait until at most N committed groups of this warpgroup are still running. The accumulators of a
// group are undefined (and its shared-memory operands must not change) until then.
template <int N> __device__ __forceinline__ void wait() {
#if LLAVA_WGMMA_ARCH
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Pins the accumulators to this point of the program (an empty asm that reads and writes each register):
// called after a wait and before a fence, it keeps the compiler from moving their uses above the wait or
// their definitions below the fence, which the "memory" clobbers of those two do not cover.
template <int R> __device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
  for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}

// D[64 x N] += A B^T, bf16 operands. TA / TB: 0 = K-major, 1 = MN-major (the transpose flags).
template <int N> struct Wgmma;
template <> struct Wgmma<128> {
  template <int TA, int TB> static __device__ __forceinline__ void run(float (&d)[64], uint64_t da, uint64_t db) {
#if LLAVA_WGMMA_ARCH
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, %64, %65, p, 1, 1, %67, %68;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
          "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
          "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
          "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(da), "l"(db), "r"(1), "n"(TA), "n"(TB));
#else
    __trap();
#endif
  }
};
template <> struct Wgmma<256> {
  template <int TA, int TB> static __device__ __forceinline__ void run(float (&d)[128], uint64_t da, uint64_t db) {
#if LLAVA_WGMMA_ARCH
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15,"
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31,"
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47,"
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63,"
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79,"
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95,"
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111,"
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, %128, %129, p, 1, 1, %131, %132;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
          "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
          "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
          "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
          "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
          "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
          "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
          "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]),
          "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),
          "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]),
          "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]),
          "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),
          "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),
          "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),
          "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),
          "+f"(d[126]), "+f"(d[127])
        : "l"(da), "l"(db), "r"(1), "n"(TA), "n"(TB));
#else
    __trap();
#endif
  }
};

}  // namespace wgmma
}  // namespace llava
