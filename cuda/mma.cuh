// mma.cuh — the warp-level tensor-core and async-copy primitives that matmul.cu and the flash
// attention kernels are built from.
//
// Everything here is a thin wrapper over one PTX instruction (sm_80+, also valid on sm_90):
//   cp.async.cg 16 B global->shared with zero fill       (multistage pipelines)
//   ldmatrix.sync.aligned.m8n8.x4[.trans].b16             (shared -> mma fragments)
//   mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}      (f32 accumulate)
// Fragment convention used by every caller (PTX ISA, "Matrix fragments for mma.m16n8k16"), with
// g = lane / 4 and t = lane % 4:
//   A (16x16, row major): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
//   B (16x8, "col"):      b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
//   C/D (16x8, f32):      c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
// B read as an N x K matrix has exactly A's layout restricted to 8 rows, so one "16 rows x 16 k"
// ldmatrix.x4 recipe serves both operands (see ldsm_rows_k16 in the callers):
//   K contiguous in shared memory  -> ldmatrix (no trans), lane supplies row (lane & 15), k ((lane >> 4) * 8)
//   rows contiguous in shared mem  -> ldmatrix.trans,      lane supplies k ((lane >> 4) * 8 + (lane & 7)),
//                                                           row ((lane >> 3) & 1) * 8
// and both return r0 = (rows 0-7, k 0-7), r1 = (rows 8-15, k 0-7), r2 = (rows 0-7, k 8-15),
// r3 = (rows 8-15, k 8-15): an A fragment {r0,r1,r2,r3}, or two B fragments {r0,r2} and {r1,r3}.
//
// Keep this header to these primitives: the host-side emulator that tests the kernels on machines
// without a GPU replaces exactly these functions with software versions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace llava {
namespace mma {

// All dynamic shared memory of every kernel in matmul.cu / attention_*.cu is carved from this one
// array (16-byte aligned: cp.async and ldmatrix need it).
extern __shared__ __align__(16) unsigned char dyn_smem[];

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global->shared copy that bypasses L1. src_bytes in [0, 16]: the bytes past src_bytes are
// zero-filled, so src_bytes = 0 writes 16 zero bytes without reading global memory (callers still pass a
// valid address). Both addresses must be 16-byte aligned.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Wait until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Four 8x8 b16 matrices; lane i supplies the address of row (i % 8) of matrix (i / 8).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem)));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem)));
}

// d += a * b on one 16x8x16 tile, f32 accumulators. T is __nv_bfloat16 or __half.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <> __device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                                     uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two f32 -> one register of two 16-bit values, lo in the low half (the lower k / column index).
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

}  // namespace mma
}  // namespace llava
