// cpu_conv.cc — the convolution helpers on the CPU (CUDA twin: cuda/conv.cu): im2col and its
// adjoint col2im (a convolution is then one call to the matmul kernel, see conv_math.h),
// depthwise_conv2d and pool2d. All NHWC float32; the formulas live in conv_math.h, shared with
// CUDA. Work is split over output elements in contiguous chunks, so each thread writes its own range.
#include "conv_math.h"
#include "cpu_common.h"

namespace llava {
namespace {

constexpr int64_t kGrain = 4096;

void im2col_kernel(const KernelArgs& a) {
  const ConvGeom g = parse_im2col(a);
  float* cols = a.tensor(0).data<float>();
  const float* x = a.tensor(1).data<float>();
  const int64_t n = a.tensor(0).numel();
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) cols[i] = conv::im2col_at(x, g, i);
  });
}

void col2im_kernel(const KernelArgs& a) {
  const ConvGeom g = parse_col2im(a);
  float* dx = a.tensor(0).data<float>();
  const float* cols = a.tensor(1).data<float>();
  const int64_t n = a.tensor(0).numel();
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) dx[i] = conv::col2im_at(cols, g, i);
  });
}

void depthwise_conv2d_kernel(const KernelArgs& a) {
  int64_t M = 0;
  const ConvGeom g = parse_depthwise(a, &M);
  float* out = a.tensor(0).data<float>();
  const float *x = a.tensor(1).data<float>(), *w = a.tensor(2).data<float>();
  const int64_t n = a.tensor(0).numel();
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) out[i] = conv::depthwise_at(x, w, g, M, i);
  });
}

void pool2d_kernel(const KernelArgs& a) {
  ConvGeom g;
  const int avg = parse_pool(a, &g);
  float* out = a.tensor(0).data<float>();
  const float* x = a.tensor(1).data<float>();
  const int64_t n = a.tensor(0).numel();
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) out[i] = conv::pool_at(x, g, avg, i);
  });
}

REGISTER_KERNEL("im2col", Device::CPU, im2col_kernel);
REGISTER_KERNEL("col2im", Device::CPU, col2im_kernel);
REGISTER_KERNEL("depthwise_conv2d", Device::CPU, depthwise_conv2d_kernel);
REGISTER_KERNEL("pool2d", Device::CPU, pool2d_kernel);

}  // namespace
}  // namespace llava
