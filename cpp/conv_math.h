// conv_math.h — 2-D convolution and pooling over NHWC tensors, shared by cpp/cpu_conv.cc and
// cuda/conv.cu: the argument parsing (one definition, one message per kernel) and the per-element
// formulas, written once as __host__ __device__ functions (LLAVA_HD).
//
// A convolution is a GEMM over an im2col matrix (the packed-GEMM route of Caffe and cuDNN's
// IMPLICIT_GEMM without the implicit part): cols[B*OH*OW, KH*KW*C] @ W[KH*KW*C, Cout], with W in
// TensorFlow's [KH, KW, Cin, Cout] layout, so W needs no repacking. col2im is written as a gather
// (each input pixel sums the column entries that read it), so threads never write the same element.
// The geometry list, in this order: KH KW strideH strideW padTop padLeft dilationH dilationW OH OW.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "elementwise_math.h"
#include "kernel_api.h"

namespace llava {

struct ConvGeom {
  int64_t B, H, W, C;  // input
  int64_t KH, KW, sh, sw, pt, pl, dh, dw, OH, OW;
};

// geometry ints (10 of them) against an NHWC input shape; every size positive, pads non-negative.
inline ConvGeom parse_geom(const KernelArgs& a, size_t i, const TensorArg& x) {
  const std::vector<int64_t>& g = a.ints(i);
  if (g.size() != 10) a.fail("geometry must hold 10 ints (KH KW sH sW padTop padLeft dH dW OH OW)");
  if (x.ndim != 4) a.fail("input must be 4-d NHWC, got " + std::to_string(x.ndim) + "-d");
  ConvGeom r{x.shape[0], x.shape[1], x.shape[2], x.shape[3], g[0], g[1], g[2],
             g[3],       g[4],       g[5],       g[6],       g[7], g[8], g[9]};
  if (r.KH < 1 || r.KW < 1 || r.sh < 1 || r.sw < 1 || r.dh < 1 || r.dw < 1)
    a.fail("filter size, strides and dilations must be >= 1");
  if (r.pt < 0 || r.pl < 0 || r.OH < 0 || r.OW < 0) a.fail("pads and output sizes must be >= 0");
  return r;
}

inline void check_f32_dense(const KernelArgs& a, const TensorArg& t, const char* what) {
  a.check_dtype(t, DType::F32, what);
  a.check_contiguous(t, what);
}

// im2col(cols[B*OH*OW, KH*KW*C], x[B,H,W,C], geom) when into_cols; else its adjoint
// col2im(dx[B,H,W,C], cols[B*OH*OW, KH*KW*C], geom) (dx overwritten). Output first, as always.
inline ConvGeom parse_cols(const KernelArgs& a, bool into_cols) {
  const TensorArg &out = a.tensor(0), &in = a.tensor(1);
  const TensorArg &img = into_cols ? in : out, &cols = into_cols ? out : in;
  ConvGeom g = parse_geom(a, 2, img);
  check_f32_dense(a, out, into_cols ? "cols" : "dx");
  check_f32_dense(a, in, into_cols ? "x" : "cols");
  a.check_shape(cols, {g.B * g.OH * g.OW, g.KH * g.KW * g.C}, "cols");
  a.check_no_overlap(out, in, into_cols ? "cols" : "dx");
  return g;
}

// depthwise_conv2d(out[B,OH,OW,C*M], x[B,H,W,C], w[KH,KW,C,M], geom)
inline ConvGeom parse_depthwise(const KernelArgs& a, int64_t* M) {
  const TensorArg &out = a.tensor(0), &x = a.tensor(1), &w = a.tensor(2);
  ConvGeom g = parse_geom(a, 3, x);
  check_f32_dense(a, out, "out");
  check_f32_dense(a, x, "x");
  check_f32_dense(a, w, "w");
  a.check_ndim(w, 4, "w");
  if (w.shape[0] != g.KH || w.shape[1] != g.KW || w.shape[2] != g.C)
    a.fail("w must be [KH, KW, C, M] with the geometry's KH, KW and x's C");
  *M = w.shape[3];
  a.check_shape(out, {g.B, g.OH, g.OW, g.C * *M}, "out");
  a.check_no_overlap(out, x, "out");
  a.check_no_overlap(out, w, "out");
  return g;
}

// pool2d(out[B,OH,OW,C], x[B,H,W,C], op 'max'|'avg', geom); returns 0 for max, 1 for avg
inline int parse_pool(const KernelArgs& a, ConvGeom* g) {
  const TensorArg &out = a.tensor(0), &x = a.tensor(1);
  const std::string& op = a.str(2);
  if (op != "max" && op != "avg") a.fail("op must be 'max' or 'avg', got '" + op + "'");
  *g = parse_geom(a, 3, x);
  check_f32_dense(a, out, "out");
  check_f32_dense(a, x, "x");
  a.check_shape(out, {g->B, g->OH, g->OW, g->C}, "out");
  a.check_no_overlap(out, x, "out");
  return op == "max" ? 0 : 1;
}

namespace conv {

// Element e of cols: row r = (b, oy, ox), column k = (kh, kw, c); 0 where the tap falls in the padding.
LLAVA_HD inline float im2col_at(const float* x, const ConvGeom& g, int64_t e) {
  const int64_t K = g.KH * g.KW * g.C;
  const int64_t r = e / K, k = e - r * K;
  const int64_t c = k % g.C, kw = (k / g.C) % g.KW, kh = k / (g.C * g.KW);
  const int64_t ox = r % g.OW, oy = (r / g.OW) % g.OH, b = r / (g.OW * g.OH);
  const int64_t iy = oy * g.sh - g.pt + kh * g.dh, ix = ox * g.sw - g.pl + kw * g.dw;
  if (iy < 0 || iy >= g.H || ix < 0 || ix >= g.W) return 0.f;
  return x[((b * g.H + iy) * g.W + ix) * g.C + c];
}

// The taps of output pixel (b, oy, ox) that land inside x: f(xo, t) with xo the offset in x of the
// input pixel's channel vector and t = kh*KW + kw the tap (taps in the padding are skipped).
template <typename F> LLAVA_HD inline void for_each_tap(const ConvGeom& g, int64_t b, int64_t oy, int64_t ox, F&& f) {
  for (int64_t kh = 0; kh < g.KH; kh++) {
    const int64_t iy = oy * g.sh - g.pt + kh * g.dh;
    if (iy < 0 || iy >= g.H) continue;
    for (int64_t kw = 0; kw < g.KW; kw++) {
      const int64_t ix = ox * g.sw - g.pl + kw * g.dw;
      if (ix < 0 || ix >= g.W) continue;
      f(((b * g.H + iy) * g.W + ix) * g.C, kh * g.KW + kw);
    }
  }
}

// The adjoint walk of im2col: for input pixel (b, y, x), f(o) for the offset o in cols of every
// channel vector im2col copied from it (output pixel (oy, ox), tap (kh, kw) with
// iy = oy*sh - pt + kh*dh == y, likewise for x). Shared by col2im_at and the CPU's col2im.
template <typename F> LLAVA_HD inline void for_each_col_of(const ConvGeom& g, int64_t b, int64_t y, int64_t x, F&& f) {
  const int64_t K = g.KH * g.KW * g.C;
  for (int64_t kh = 0; kh < g.KH; kh++) {
    const int64_t ty = y + g.pt - kh * g.dh;
    if (ty < 0 || ty % g.sh) continue;
    const int64_t oy = ty / g.sh;
    if (oy >= g.OH) continue;
    for (int64_t kw = 0; kw < g.KW; kw++) {
      const int64_t tx = x + g.pl - kw * g.dw;
      if (tx < 0 || tx % g.sw) continue;
      const int64_t ox = tx / g.sw;
      if (ox >= g.OW) continue;
      f(((b * g.OH + oy) * g.OW + ox) * K + (kh * g.KW + kw) * g.C);
    }
  }
}

// Element e of dx (b, y, x, c): the sum of every cols entry that im2col copied from it.
LLAVA_HD inline float col2im_at(const float* cols, const ConvGeom& g, int64_t e) {
  const int64_t c = e % g.C, x = (e / g.C) % g.W, y = (e / (g.C * g.W)) % g.H, b = e / (g.C * g.W * g.H);
  float s = 0.f;
  for_each_col_of(g, b, y, x, [&](int64_t o) { s += cols[o + c]; });
  return s;
}

// Element e of out (b, oy, ox, c*M + m) of a depthwise convolution.
LLAVA_HD inline float depthwise_at(const float* x, const float* w, const ConvGeom& g, int64_t M, int64_t e) {
  const int64_t CM = g.C * M;
  const int64_t q = e % CM, c = q / M, m = q % M;
  const int64_t ox = (e / CM) % g.OW, oy = (e / (CM * g.OW)) % g.OH, b = e / (CM * g.OW * g.OH);
  float s = 0.f;
  for_each_tap(g, b, oy, ox, [&](int64_t xo, int64_t t) { s += x[xo + c] * w[(t * g.C + c) * M + m]; });
  return s;
}

// Element e of a pooled output. max: the largest tap (NaN taps skipped, -inf over an empty window,
// as tfjs does); avg: the mean of the taps inside the input (padding not counted; NaN if none).
LLAVA_HD inline float pool_at(const float* x, const ConvGeom& g, int avg, int64_t e) {
  const int64_t c = e % g.C, ox = (e / g.C) % g.OW, oy = (e / (g.C * g.OW)) % g.OH, b = e / (g.C * g.OW * g.OH);
  float best = -INFINITY, sum = 0.f;
  int64_t n = 0;
  for_each_tap(g, b, oy, ox, [&](int64_t xo, int64_t) {
    const float v = x[xo + c];
    if (v > best) best = v;
    sum += v;
    n++;
  });
  return avg ? (n ? sum / float(n) : NAN) : best;
}

}  // namespace conv
}  // namespace llava
