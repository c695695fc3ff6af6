// attention_common.cuh — what the CUDA attention forward (attention_fwd.cu) and backward
// (attention_bwd.cu) share: the problem description passed to every kernel, argument validation
// with the CPU kernel's rules and messages (cpp/cpu_attention.cc), and the shared-memory tile helpers
// of the tensor-core kernels.
//
// Shapes: q[B,H,T,D], k/v[B,Hkv,S,D], out/dout[B,H,T,D], lse[B,H,T] (f32, or f64 as the CPU accepts);
// query head h reads kv head h / G, G = H / Hkv. Causal is bottom-right aligned: key j is visible to
// query i iff j <= i + S - T. mask is a bool view [B,H,T,S] with any strides (0 = broadcast).
//
// Tensor-core tiles hold rows of D 16-bit values padded to D + 8: a row is then an odd number of
// 16-byte chunks (9, 11, 17 for D = 64, 80, 128), so the eight rows one ldmatrix phase reads fall in
// eight different bank slots. (The XOR swizzle used by the GEMM needs a power-of-two chunk count per
// row, which D = 80 does not have; the padding costs 1/9 to 1/17 more shared memory.)
#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cuda_common.cuh"
#include "kernel_checks.h"
#include "mma.cuh"

namespace llava {
namespace attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct AttnParams {
  const void* q;
  const void* k;
  const void* v;
  const void* o;     // bwd: the forward output (read)
  const void* dout;  // bwd
  void* out;         // fwd: output [B,H,T,D] contiguous
  void* lse;         // fwd: written, bwd: read; [B,H,T] contiguous
  bool lse_f64;
  const unsigned char* mask;  // null = no mask
  int B, H, Hkv, G, T, S, D;
  int64_t q_s[3], k_s[3], v_s[3], o_s[3], do_s[3];  // strides of the b, h, t dims (the d stride is 1)
  int64_t m_s[4];
  bool causal;
  double scale;
  float scale_log2;  // scale * log2(e): scores go straight into exp2
};

// Outputs and scratch of the backward kernels.
struct BwdOut {
  void* dq;      // [B,H,T,D] contiguous
  void* dk;      // [B,Hkv,S,D] contiguous
  void* dv;      // [B,Hkv,S,D] contiguous
  void* delta;   // scratch [B,H,T], compute type
  void* dq_acc;  // scratch [B,H,T,D]: f32 (tensor cores), compute type (SIMT)
};

__device__ __forceinline__ double load_lse(const AttnParams& p, int64_t row) {
  return p.lse_f64 ? static_cast<const double*>(p.lse)[row] : static_cast<const float*>(p.lse)[row];
}

// key j visible to query i (both in range) under the causal rule and the mask.
__device__ __forceinline__ bool visible(const AttnParams& p, int b, int h, int i, int j) {
  if (p.causal && j > i + p.S - p.T) return false;
  if (p.mask && !p.mask[b * p.m_s[0] + h * p.m_s[1] + i * p.m_s[2] + j * p.m_s[3]]) return false;
  return true;
}

// Does the (query tile from q0, key tile of bc keys from k0) pair need per-element masking: a mask,
// keys past S, or (causal) a key past the last one its first row sees? Otherwise every pair is visible.
__device__ __forceinline__ bool tile_needs_mask(const AttnParams& p, int q0, int k0, int bc) {
  return p.mask != nullptr || k0 + bc > p.S || (p.causal && k0 + bc - 1 > q0 + p.S - p.T);
}

// ------------------------------------------------------------------ validation (mirrors the CPU)
using Inputs = AttnInputs;  // parse_attention_inputs in kernel_checks.h, shared with the CPU kernels

inline void check_head_view(const KernelArgs& a, const TensorArg& t, const char* what) {
  checks::attn_head_view(a, t, what, Device::CUDA);
}

inline Inputs check_inputs(const KernelArgs& a, size_t iq, size_t imask, size_t icausal) {
  Inputs p = parse_attention_inputs(a, iq, imask, icausal, Device::CUDA);
  // Grid limits (gridDim.y/z) and 32-bit row/column indices inside the kernels.
  if (p.B > 65535 || p.H > 65535) a.fail("B and H must each be at most 65535 on CUDA");
  if (p.T > INT32_MAX / 2 || p.S > INT32_MAX / 2) a.fail("T and S must be below 2^30 on CUDA");
  return p;
}

inline void check_no_overlaps(const KernelArgs& a, std::initializer_list<const TensorArg*> outs,
                              std::initializer_list<const TensorArg*> ins) {
  checks::no_overlaps(a, outs, ins, "attention");
}

inline void check_lse(const KernelArgs& a, const TensorArg& lse, const Inputs& p) {
  check_attention_lse(a, lse, p.B, p.H, p.T, Device::CUDA);
}

// Strides of dims b, h, t; a size-1 dim gets stride 0 (it is never stepped, and 0 keeps the
// alignment test below from rejecting an arbitrary stride there).
inline void head_strides(const TensorArg& t, int64_t (&s)[3]) {
  for (int d = 0; d < 3; d++) s[d] = t.shape[d] == 1 ? 0 : t.strides[d];
}

// Fills everything but the output pointers.
inline AttnParams make_params(const Inputs& in, const TensorArg& lse) {
  AttnParams p{};
  p.q = in.q->bytes();
  p.k = in.k->bytes();
  p.v = in.v->bytes();
  p.lse = lse.bytes();
  p.lse_f64 = lse.dtype == DType::F64;
  p.mask = in.mask ? reinterpret_cast<const unsigned char*>(in.mask->bytes()) : nullptr;
  p.B = (int)in.B, p.H = (int)in.H, p.Hkv = (int)in.Hkv, p.G = (int)(in.H / in.Hkv);
  p.T = (int)in.T, p.S = (int)in.S, p.D = (int)in.D;
  head_strides(*in.q, p.q_s);
  head_strides(*in.k, p.k_s);
  head_strides(*in.v, p.v_s);
  if (in.mask)
    for (int d = 0; d < 4; d++) p.m_s[d] = in.mask->shape[d] == 1 ? 0 : in.mask->strides[d];
  p.causal = in.causal;
  p.scale = in.scale;
  p.scale_log2 = (float)(in.scale * 1.4426950408889634);
  return p;
}

// Can a [.., rows, D] view be staged with 16-byte cp.async (every row start 16-byte aligned)?
inline bool rows_chunkable(const void* base, const int64_t (&s)[3]) {
  return gpu::aligned_to(base, 16) && s[0] % 8 == 0 && s[1] % 8 == 0 && s[2] % 8 == 0;
}

// ------------------------------------------------------------------ tensor-core tile helpers
// Stage rows [row0, row0 + ROWS) of a [rows, D] matrix (row stride ld, unit column stride) into
// s[ROWS][D + 8]; rows at or past `rows` are zero-filled (so padded keys/queries contribute exact
// zeros, never stale NaNs).
template <int ROWS, int D, int THREADS> __device__ __forceinline__ void load_rows_async(uint16_t* s, const uint16_t* g,
                                                                                        int64_t ld, int row0, int rows,
                                                                                        int tid) {
  constexpr int kCpr = D / 8, kLds = D + 8;
#pragma unroll
  for (int i = 0; i < (ROWS * kCpr + THREADS - 1) / THREADS; i++) {
    const int c = tid + i * THREADS;
    if (ROWS * kCpr % THREADS != 0 && c >= ROWS * kCpr) break;
    const int r = c / kCpr, ch = (c % kCpr) * 8;
    const bool ok = row0 + r < rows;
    mma::cp_async16(s + r * kLds + ch, ok ? g + (int64_t)(row0 + r) * ld + ch : g, ok ? 16 : 0);
  }
}

// 16 x 16 ldmatrix.x4 at (row0, k0) of a tile whose rows are contiguous along k (row stride ld):
// r0 = rows 0-7/k 0-7, r1 = rows 8-15/k 0-7, r2 = rows 0-7/k 8-15, r3 = rows 8-15/k 8-15.
__device__ __forceinline__ void ldsm_k(uint32_t (&r)[4], const uint16_t* s, int ld, int row0, int k0, int lane) {
  mma::ldsm_x4(r, s + (row0 + (lane & 15)) * ld + k0 + ((lane >> 4) << 3));
}
// The same fragments (rows = the operand's M or N, contiguous in shared memory) from a tile stored
// k-major (element (row, k) at s[k * ld + row]), through ldmatrix.trans.
__device__ __forceinline__ void ldsm_t(uint32_t (&r)[4], const uint16_t* s, int ld, int row0, int k0, int lane) {
  mma::ldsm_x4_trans(r, s + (k0 + ((lane >> 4) << 3) + (lane & 7)) * ld + row0 + (((lane >> 3) & 1) << 3));
}

// Max / sum over the 4 lanes of a quad (the lanes that share an accumulator row).
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace attn
}  // namespace llava
