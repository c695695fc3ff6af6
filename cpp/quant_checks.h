// quant_checks.h — argument parsing of the weight-only quantization kernels (`quantize`, `dequantize`,
// `quant_matmul`), shared by cpp/cpu_quant.cc and cuda/quant.cu so both devices accept the same inputs
// and fail with the same messages (docs/design.md "One definition per op"), and the NF4 codebook.
//
// Two storage formats of a frozen weight W [N, K] (N output rows, K input features):
//   int8  q [N, K] uint8 holding int8 two's-complement codes, scales [N] f32 = absmax(row) / 127;
//         W[n, k] ~= int8(q[n, k]) * scales[n]                       (per-output-channel, LLM.int8 storage)
//   nf4   q [ceil(N*K / 2)] uint8, two codes per byte (even element in the high nibble, as bitsandbytes
//         packs), scales [ceil(N*K / block)] f32 = absmax of each block of `block` consecutive
//         elements of the flattened weight; W[e] ~= NF4[code(e)] * scales[e / block]
// The NF4 levels are the 16 quantiles of the normal distribution QLoRA (Dettmers et al. 2023) defines,
// copied as bitsandbytes stores them (float32 values).
#pragma once

#include <cstdint>
#include <string>

#include "kernel_api.h"

namespace llava {

#if defined(__CUDACC__)
#define LLAVA_HD __host__ __device__
#else
#define LLAVA_HD
#endif

enum class QuantFormat : int { INT8 = 0, NF4 = 1 };

LLAVA_HD inline float nf4_level(int code) {
  switch (code & 15) {
    case 0:
      return -1.0f;
    case 1:
      return -0.6961928009986877f;
    case 2:
      return -0.5250730514526367f;
    case 3:
      return -0.39491748809814453f;
    case 4:
      return -0.28444138169288635f;
    case 5:
      return -0.18477343022823334f;
    case 6:
      return -0.09105003625154495f;
    case 7:
      return 0.0f;
    case 8:
      return 0.07958029955625534f;
    case 9:
      return 0.16093020141124725f;
    case 10:
      return 0.24611230194568634f;
    case 11:
      return 0.33791524171829224f;
    case 12:
      return 0.44070982933044434f;
    case 13:
      return 0.5626170039176941f;
    case 14:
      return 0.7229568362236023f;
    default:
      return 1.0f;
  }
}

// The nearest NF4 level to v (v in [-1, 1] after division by the block's absmax); ties go up. A
// search over the 15 midpoints, the same decision bitsandbytes' quantizer makes.
LLAVA_HD inline int nf4_code(float v) {
  int code = 0;
  for (int c = 1; c < 16; c++)
    if (v >= 0.5f * (nf4_level(c - 1) + nf4_level(c))) code = c;
  return code;
}

// Element e of a quantized weight as a float (f32 maths; the scale multiplies last).
LLAVA_HD inline float dequant_at(QuantFormat f, const uint8_t* q, const float* scales, int64_t e, int64_t K,
                                 int64_t block) {
  if (f == QuantFormat::INT8) return float(int8_t(q[e])) * scales[e / K];
  const uint8_t byte = q[e >> 1];
  const int code = (e & 1) ? (byte & 15) : (byte >> 4);
  return nf4_level(code) * scales[e / block];
}

struct QuantArgs {
  QuantFormat format;
  int64_t N, K, block;
  const TensorArg *q, *scales;
};

namespace checks {

inline QuantFormat quant_format(const KernelArgs& a, size_t i) {
  const std::string& s = a.str(i);
  if (s == "int8") return QuantFormat::INT8;
  if (s == "nf4") return QuantFormat::NF4;
  a.fail("unknown quantization format '" + s + "' (int8 or nf4)");
}

// q, scales, format, N, K, block: the quantized weight's tensors checked against its logical shape.
inline QuantArgs quant_weight(const KernelArgs& a, size_t qi, size_t fi) {
  QuantArgs r;
  r.q = &a.tensor(qi), r.scales = &a.tensor(qi + 1);
  r.format = quant_format(a, fi);
  r.N = a.int_(fi + 1), r.K = a.int_(fi + 2), r.block = a.int_(fi + 3);
  if (r.N < 0 || r.K < 0) a.fail("weight dims must be >= 0");
  if (r.block < 2 || r.block > 4096 || (r.block & 1)) a.fail("block size must be an even number in [2, 4096]");
  a.check_dtype(*r.q, DType::U8, "quantized codes");
  a.check_dtype(*r.scales, DType::F32, "scales");
  a.check_contiguous(*r.q, "quantized codes");
  a.check_contiguous(*r.scales, "scales");
  const int64_t n = r.N * r.K;
  if (r.format == QuantFormat::INT8) {
    a.check_numel(*r.q, n, "int8 codes");
    a.check_numel(*r.scales, r.N, "int8 scales (one per output row)");
  } else {
    a.check_numel(*r.q, (n + 1) / 2, "nf4 codes (two per byte)");
    a.check_numel(*r.scales, (n + r.block - 1) / r.block, "nf4 scales (one per block)");
  }
  return r;
}

}  // namespace checks

// quantize(q, scales, w[N,K], format, N, K, block): w float, contiguous, [N, K].
inline QuantArgs parse_quantize(const KernelArgs& a, const TensorArg*& w) {
  QuantArgs r = checks::quant_weight(a, 0, 3);
  w = &a.tensor(2);
  a.check_float(*w, "weight");
  a.check_contiguous(*w, "weight");
  a.check_shape(*w, {r.N, r.K}, "weight");
  a.check_no_overlap(*r.q, *w, "quantize");
  a.check_no_overlap(*r.scales, *w, "quantize");
  a.check_no_overlap(*r.q, *r.scales, "quantize");
  return r;
}

// dequantize(out[N,K], q, scales, format, N, K, block): out float, contiguous.
inline QuantArgs parse_dequantize(const KernelArgs& a, const TensorArg*& out) {
  QuantArgs r = checks::quant_weight(a, 1, 3);
  out = &a.tensor(0);
  a.check_float(*out, "output");
  a.check_contiguous(*out, "output");
  a.check_shape(*out, {r.N, r.K}, "output");
  a.check_no_overlap(*out, *r.q, "dequantize");
  a.check_no_overlap(*out, *r.scales, "dequantize");
  return r;
}

// quant_matmul(out[M,N], x[M,K], q, scales, format, N, K, block): out = x @ dequant(W)^T; x may have any
// row stride but unit column stride; out contiguous and of x's dtype.
inline QuantArgs parse_quant_matmul(const KernelArgs& a, const TensorArg*& out, const TensorArg*& x) {
  QuantArgs r = checks::quant_weight(a, 2, 4);
  out = &a.tensor(0), x = &a.tensor(1);
  a.check_float(*x, "x");
  a.check_same_dtype(*out, *x, "output");
  a.check_ndim(*x, 2, "x");
  if (x->shape[1] != r.K)
    a.fail("x has " + std::to_string(x->shape[1]) + " features, the weight expects " + std::to_string(r.K));
  if (x->shape[1] > 1 && x->strides[1] != 1) a.fail("x must have unit stride in its last dim");
  a.check_contiguous(*out, "output");
  a.check_shape(*out, {x->shape[0], r.N}, "output");
  for (const TensorArg* in : {x, r.q, r.scales}) a.check_no_overlap(*out, *in, "quant_matmul");
  return r;
}

}  // namespace llava
