// conv.cu — the convolution helpers on the GPU (CPU twin: cpp/cpu_conv.cc): im2col, col2im,
// depthwise_conv2d and pool2d, NHWC float32. Same parsing and per-element formulas as the CPU
// (cpp/conv_math.h); one thread per output element in a grid-stride loop, no atomics (col2im gathers).
#include "conv_math.h"
#include "cuda_common.cuh"

namespace llava {
namespace gpu {
namespace {

constexpr int kBlock = 256;

__global__ void __launch_bounds__(kBlock) im2col_dev(float* cols, const float* x, ConvGeom g, int64_t n) {
  for (int64_t e = gtid(); e < n; e += gstride()) cols[e] = conv::im2col_at(x, g, e);
}
__global__ void __launch_bounds__(kBlock) col2im_dev(float* dx, const float* cols, ConvGeom g, int64_t n) {
  for (int64_t e = gtid(); e < n; e += gstride()) dx[e] = conv::col2im_at(cols, g, e);
}
__global__ void __launch_bounds__(kBlock)
    depthwise_dev(float* out, const float* x, const float* w, ConvGeom g, int64_t M, int64_t n) {
  for (int64_t e = gtid(); e < n; e += gstride()) out[e] = conv::depthwise_at(x, w, g, M, e);
}
__global__ void __launch_bounds__(kBlock) pool_dev(float* out, const float* x, ConvGeom g, int avg, int64_t n) {
  for (int64_t e = gtid(); e < n; e += gstride()) out[e] = conv::pool_at(x, g, avg, e);
}

void im2col_kernel(const KernelArgs& a) {
  const ConvGeom g = parse_cols(a, true);
  const int64_t n = a.tensor(0).numel();
  if (n == 0) return;
  launch(im2col_dev, grid_for(n), kBlock, 0, stream(), a.tensor(0).data<float>(), a.tensor(1).data<float>(), g, n);
  check_launch(a);
}

void col2im_kernel(const KernelArgs& a) {
  const ConvGeom g = parse_cols(a, false);
  const int64_t n = a.tensor(0).numel();
  if (n == 0) return;
  launch(col2im_dev, grid_for(n), kBlock, 0, stream(), a.tensor(0).data<float>(), a.tensor(1).data<float>(), g, n);
  check_launch(a);
}

void depthwise_conv2d_kernel(const KernelArgs& a) {
  int64_t M = 0;
  const ConvGeom g = parse_depthwise(a, &M);
  const int64_t n = a.tensor(0).numel();
  if (n == 0) return;
  launch(depthwise_dev, grid_for(n), kBlock, 0, stream(), a.tensor(0).data<float>(), a.tensor(1).data<float>(),
         a.tensor(2).data<float>(), g, M, n);
  check_launch(a);
}

void pool2d_kernel(const KernelArgs& a) {
  ConvGeom g;
  const int avg = parse_pool(a, &g);
  const int64_t n = a.tensor(0).numel();
  if (n == 0) return;
  launch(pool_dev, grid_for(n), kBlock, 0, stream(), a.tensor(0).data<float>(), a.tensor(1).data<float>(), g, avg, n);
  check_launch(a);
}

REGISTER_KERNEL("im2col", Device::CUDA, im2col_kernel);
REGISTER_KERNEL("col2im", Device::CUDA, col2im_kernel);
REGISTER_KERNEL("depthwise_conv2d", Device::CUDA, depthwise_conv2d_kernel);
REGISTER_KERNEL("pool2d", Device::CUDA, pool2d_kernel);

}  // namespace
}  // namespace gpu
}  // namespace llava
