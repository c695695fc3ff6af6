// quant.cu — weight-only quantization on the GPU: `quantize`, `dequantize` and `quant_matmul`, with the
// arguments, checks, formats and NF4 codebook of cpp/cpu_quant.cc (quant_checks.h).
//
// quantize runs once per weight at load time: one thread per int8 row (absmax then codes) or per NF4
// block. dequantize is one thread per element. quant_matmul is the decode GEMV: one warp per weight
// row n; its lanes stride over K reading the codes once per x row (the row stays in L1 across the M
// rows of x), dequantize in registers, accumulate x * w in f32 (f64 for f64), and reduce with
// shuffles. Large M never comes here: lib/ops/quant.ts dequantizes into the tensor-core GEMM instead.
#include "cuda_common.cuh"
#include "quant_checks.h"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;

template <typename T> __global__ void __launch_bounds__(kBlock)
    quantize_int8_dev(uint8_t* q, float* sc, const T* w, int64_t N, int64_t K) {
  for (int64_t r = gtid(); r < N; r += gstride()) {
    float amax = 0.f;
    for (int64_t k = 0; k < K; k++) amax = fmaxf(amax, fabsf(float(load(w + r * K + k))));
    const float s = float(double(amax) / 127.0);
    sc[r] = s;
    for (int64_t k = 0; k < K; k++) {
      const float v = s > 0.f ? nearbyintf(float(load(w + r * K + k)) / s) : 0.f;
      q[r * K + k] = uint8_t(int8_t(fmaxf(-127.f, fminf(127.f, v))));
    }
  }
}

template <typename T> __global__ void __launch_bounds__(kBlock)
    quantize_nf4_dev(uint8_t* q, float* sc, const T* w, int64_t n, int64_t bs, int64_t nb) {
  for (int64_t blk = gtid(); blk < nb; blk += gstride()) {
    const int64_t lo = blk * bs, hi = lo + bs < n ? lo + bs : n;
    float amax = 0.f;
    for (int64_t i = lo; i < hi; i++) amax = fmaxf(amax, fabsf(float(load(w + i))));
    sc[blk] = amax;
    for (int64_t i = lo; i < hi; i += 2) {
      const int c0 = nf4_code(amax > 0.f ? float(load(w + i)) / amax : 0.f);
      const int c1 = i + 1 < hi ? nf4_code(amax > 0.f ? float(load(w + i + 1)) / amax : 0.f) : 0;
      q[i >> 1] = uint8_t((c0 << 4) | c1);
    }
  }
}

template <typename T> __global__ void __launch_bounds__(kBlock)
    dequantize_dev(T* out, const uint8_t* q, const float* sc, QuantFormat f, int64_t n, int64_t K, int64_t bs) {
  using F = acc_t<T>;
  for (int64_t e = gtid(); e < n; e += gstride()) {
    F v;
    if (f == QuantFormat::INT8)
      v = F(int8_t(q[e])) * F(sc[e / K]);
    else
      v = F(nf4_level((e & 1) ? (q[e >> 1] & 15) : (q[e >> 1] >> 4))) * F(sc[e / bs]);
    store(out + e, v);
  }
}

// One warp per weight row n, looping over the M rows of x.
template <typename T> __global__ void __launch_bounds__(kBlock)
    quant_matmul_dev(T* out, const T* x, int64_t sx, const uint8_t* q, const float* sc, QuantFormat f, int64_t M,
                     int64_t N, int64_t K, int64_t bs) {
  using F = acc_t<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
  for (int64_t n = blockIdx.x * (int64_t)(blockDim.x / 32) + threadIdx.x / 32; n < N; n += warps) {
    for (int64_t m = 0; m < M; m++) {
      F acc = F(0);
      for (int64_t k = lane; k < K; k += 32) {
        const int64_t e = n * K + k;
        F wv;
        if (f == QuantFormat::INT8)
          wv = F(int8_t(q[e])) * F(sc[n]);
        else
          wv = F(nf4_level((e & 1) ? (q[e >> 1] & 15) : (q[e >> 1] >> 4))) * F(sc[e / bs]);
        acc += F(load(x + m * sx + k)) * wv;
      }
      for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (lane == 0) store(out + m * N + n, acc);
    }
  }
}

void quantize_kernel(const KernelArgs& a) {
  const TensorArg* w = nullptr;
  const QuantArgs A = parse_quantize(a, w);
  const int64_t n = A.N * A.K;
  if (n == 0) return;
  uint8_t* q = A.q->data<uint8_t>();
  float* sc = A.scales->data<float>();
  GPU_DISPATCH_FLOAT(a, w->dtype, T_, {
    const T_* src = reinterpret_cast<const T_*>(w->bytes());
    if (A.format == QuantFormat::INT8) {
      launch(quantize_int8_dev<T_>, grid_for(A.N), kBlock, 0, stream(), q, sc, src, A.N, A.K);
    } else {
      const int64_t nb = (n + A.block - 1) / A.block;
      launch(quantize_nf4_dev<T_>, grid_for(nb), kBlock, 0, stream(), q, sc, src, n, A.block, nb);
    }
  });
  check_launch(a);
}

void dequantize_kernel(const KernelArgs& a) {
  const TensorArg* out = nullptr;
  const QuantArgs A = parse_dequantize(a, out);
  const int64_t n = A.N * A.K;
  if (n == 0) return;
  GPU_DISPATCH_FLOAT(a, out->dtype, T_, {
    launch(dequantize_dev<T_>, grid_for(n), kBlock, 0, stream(), reinterpret_cast<T_*>(out->bytes()),
           A.q->data<uint8_t>(), A.scales->data<float>(), A.format, n, A.K, A.block);
  });
  check_launch(a);
}

void quant_matmul_kernel(const KernelArgs& a) {
  const TensorArg *out = nullptr, *x = nullptr;
  const QuantArgs A = parse_quant_matmul(a, out, x);
  const int64_t M = x->shape[0];
  if (M * A.N == 0) return;
  GPU_DISPATCH_FLOAT(a, x->dtype, T_, {
    launch(quant_matmul_dev<T_>, grid_for(A.N * 32), kBlock, 0, stream(), reinterpret_cast<T_*>(out->bytes()),
           reinterpret_cast<const T_*>(x->bytes()), x->strides[0], A.q->data<uint8_t>(), A.scales->data<float>(),
           A.format, M, A.N, A.K, A.block);
  });
  check_launch(a);
}

REGISTER_KERNEL("quantize", Device::CUDA, quantize_kernel);
REGISTER_KERNEL("dequantize", Device::CUDA, dequantize_kernel);
REGISTER_KERNEL("quant_matmul", Device::CUDA, quant_matmul_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
