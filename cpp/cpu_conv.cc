// cpu_conv.cc — the convolution helpers on the CPU (CUDA twin: cuda/conv.cu): im2col and its
// adjoint col2im (a convolution is then one call to the matmul kernel, see conv_math.h),
// depthwise_conv2d and pool2d. All NHWC float32, parsed by conv_math.h (shared with CUDA). Work is
// split over output pixels in contiguous chunks, so each thread writes its own range.
#include "conv_math.h"
#include <cstring>

#include "cpu_common.h"

namespace llava {
namespace {

// The CPU kernels walk output pixels and copy or reduce whole channel vectors (C contiguous floats),
// so the index arithmetic of conv_math.h's per-element formulas runs once per pixel and tap, not per
// element (conv_math.h stays the reference the CUDA kernels use).
constexpr int64_t kPixelGrain = 16;

// cols row r = (b, oy, ox): KH*KW channel vectors, zeros where the tap falls in the padding.
void im2col_kernel(const KernelArgs& a) {
  const ConvGeom g = parse_cols(a, true);
  float* cols = a.tensor(0).data<float>();
  const float* x = a.tensor(1).data<float>();
  const int64_t rows = g.B * g.OH * g.OW, K = g.KH * g.KW * g.C;
  parallel_for(rows, kPixelGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const int64_t ox = r % g.OW, oy = (r / g.OW) % g.OH, b = r / (g.OW * g.OH);
      float* dst = cols + r * K;
      for (int64_t kh = 0; kh < g.KH; kh++) {
        const int64_t iy = oy * g.sh - g.pt + kh * g.dh;
        for (int64_t kw = 0; kw < g.KW; kw++, dst += g.C) {
          const int64_t ix = ox * g.sw - g.pl + kw * g.dw;
          if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W)
            std::memset(dst, 0, sizeof(float) * g.C);
          else
            std::memcpy(dst, x + ((b * g.H + iy) * g.W + ix) * g.C, sizeof(float) * g.C);
        }
      }
    }
  });
}

// dx pixel (b, y, x): the sum of the cols channel vectors im2col copied from it (a gather).
void col2im_kernel(const KernelArgs& a) {
  const ConvGeom g = parse_cols(a, false);
  float* dx = a.tensor(0).data<float>();
  const float* cols = a.tensor(1).data<float>();
  const int64_t pixels = g.B * g.H * g.W;
  parallel_for(pixels, kPixelGrain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      const int64_t x = p % g.W, y = (p / g.W) % g.H, b = p / (g.W * g.H);
      float* dst = dx + p * g.C;
      std::memset(dst, 0, sizeof(float) * g.C);
      conv::for_each_col_of(g, b, y, x, [&](int64_t o) {
        const float* src = cols + o;
        for (int64_t c = 0; c < g.C; c++) dst[c] += src[c];
      });
    }
  });
}

// One output pixel of a depthwise convolution with M == 1, channels [c0, c0 + n): the n sums stay in a
// local block (registers when CB, the block size, is a compile-time constant; CB == 0 is the tail,
// cb < kDepthwiseBlock channels) over the taps and are stored once.
constexpr int64_t kDepthwiseBlock = 64;
template <int CB> inline void depthwise_block(const ConvGeom& g, const float* x, const float* w, float* dst, int64_t b,
                                              int64_t oy, int64_t ox, int64_t c0, int64_t cb) {
  float acc[kDepthwiseBlock];
  const int64_t n = CB > 0 ? CB : cb;
  for (int64_t c = 0; c < n; c++) acc[c] = 0.f;
  conv::for_each_tap(g, b, oy, ox, [&](int64_t xo, int64_t t) {
    const float *src = x + xo + c0, *wt = w + t * g.C + c0;
    for (int64_t c = 0; c < n; c++) acc[c] += src[c] * wt[c];
  });
  for (int64_t c = 0; c < n; c++) dst[c0 + c] = acc[c];
}

// out pixel (b, oy, ox): the taps' channel vectors times the filter's, summed. M == 1 (MobileNet's
// case) accumulates 64-channel blocks locally; M > 1 accumulates the C*M output vector in place.
void depthwise_conv2d_kernel(const KernelArgs& a) {
  int64_t M = 0;
  const ConvGeom g = parse_depthwise(a, &M);
  float* out = a.tensor(0).data<float>();
  const float *x = a.tensor(1).data<float>(), *w = a.tensor(2).data<float>();
  const int64_t pixels = g.B * g.OH * g.OW, CM = g.C * M;
  parallel_for(pixels, kPixelGrain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      const int64_t ox = p % g.OW, oy = (p / g.OW) % g.OH, b = p / (g.OW * g.OH);
      float* dst = out + p * CM;
      if (M == 1) {
        int64_t c0 = 0;
        for (; c0 + kDepthwiseBlock <= g.C; c0 += kDepthwiseBlock)
          depthwise_block<kDepthwiseBlock>(g, x, w, dst, b, oy, ox, c0, kDepthwiseBlock);
        if (c0 < g.C) depthwise_block<0>(g, x, w, dst, b, oy, ox, c0, g.C - c0);
        continue;
      }
      std::memset(dst, 0, sizeof(float) * CM);
      conv::for_each_tap(g, b, oy, ox, [&](int64_t xo, int64_t t) {
        const float *src = x + xo, *wt = w + t * CM;
        for (int64_t q = 0; q < CM; q++) dst[q] += src[q / M] * wt[q];
      });
    }
  });
}

// out pixel (b, oy, ox): max or mean over the taps inside x, channel vector at a time.
void pool2d_kernel(const KernelArgs& a) {
  ConvGeom g;
  const int avg = parse_pool(a, &g);
  float* out = a.tensor(0).data<float>();
  const float* x = a.tensor(1).data<float>();
  const int64_t pixels = g.B * g.OH * g.OW;
  parallel_for(pixels, kPixelGrain, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; p++) {
      const int64_t ox = p % g.OW, oy = (p / g.OW) % g.OH, b = p / (g.OW * g.OH);
      float* dst = out + p * g.C;
      for (int64_t c = 0; c < g.C; c++) dst[c] = avg ? 0.f : -INFINITY;
      int64_t n = 0;
      conv::for_each_tap(g, b, oy, ox, [&](int64_t xo, int64_t) {
        const float* src = x + xo;
        n++;
        if (avg)
          for (int64_t c = 0; c < g.C; c++) dst[c] += src[c];
        else
          for (int64_t c = 0; c < g.C; c++) dst[c] = src[c] > dst[c] ? src[c] : dst[c];
      });
      if (avg) {
        for (int64_t c = 0; c < g.C; c++) dst[c] = n ? dst[c] / float(n) : NAN;
      }
    }
  });
}

REGISTER_KERNEL("im2col", Device::CPU, im2col_kernel);
REGISTER_KERNEL("col2im", Device::CPU, col2im_kernel);
REGISTER_KERNEL("depthwise_conv2d", Device::CPU, depthwise_conv2d_kernel);
REGISTER_KERNEL("pool2d", Device::CPU, pool2d_kernel);

}  // namespace
}  // namespace llava
