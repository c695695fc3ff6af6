// test/cuda_emu/test_nan.cc — NaN semantics of attention: the CUDA kernels (under the emulator) and the
// CPU kernels must agree on which outputs a NaN input poisons, and on every other value.
#include "test_util.h"

// A NaN in one query row (head 0, row T/2): the CUDA kernels and the CPU must agree on the pattern (that
// row's out, lse and dq are NaN, every key it saw gets NaN dk/dv, nothing else) and on the finite values.
void test_attention_nan(DType dt, int64_t T, int64_t S, int64_t D, int sms) {
  gpu::emu_sms = sms;
  const int64_t B = 1, H = 2, nr = T / 2;
  Tensor q = dense(dt, {B, H, T, D}, Device::CUDA), k = dense(dt, {B, H, S, D}, Device::CUDA);
  Tensor v = dense(dt, {B, H, S, D}, Device::CUDA), dout = dense(dt, {B, H, T, D}, Device::CUDA);
  for (Tensor* x : {&q, &k, &v, &dout}) fill_random(*x);
  from_double(dt, q.buf->p, nr * D + 3, NAN);
  q.vals[nr * D + 3] = NAN;
  const double scale = 1.0 / std::sqrt((double)D);
  std::vector<std::vector<double>> res[2];
  for (int dev = 0; dev < 2; dev++) {
    const Device d = dev ? Device::CUDA : Device::CPU;
    Tensor qc = clone_as(q, dt, d), kc = clone_as(k, dt, d), vc = clone_as(v, dt, d), dc = clone_as(dout, dt, d);
    Tensor o = dense(dt, {B, H, T, D}, d), l = dense(DType::F32, {B, H, T}, d), gq = dense(dt, {B, H, T, D}, d);
    Tensor gk = dense(dt, {B, H, S, D}, d), gv = dense(dt, {B, H, S, D}, d);
    run("attention_fwd", d, {o.t, l.t, qc.t, kc.t, vc.t, std::monostate{}, false, scale});
    run("attention_bwd", d, {gq.t, gk.t, gv.t, qc.t, kc.t, vc.t, o.t, dc.t, l.t, std::monostate{}, false, scale});
    for (Tensor* x : {&o, &l, &gq, &gk, &gv}) res[dev].push_back(read_all(*x));
  }
  const char* names[] = {"out", "lse", "dq", "dk", "dv"};
  std::string detail;
  bool ok = std::isnan(res[0][0][nr * D]) && std::isnan(res[0][1][nr]) && std::isnan(res[0][2][nr * D]) &&
            !std::isnan(res[0][0][T * D]) && !std::isnan(res[0][2][H * T * D - 1]);  // the CPU's pattern itself
  for (int i = 0; i < 5; i++) {
    long pattern = 0, nans = 0;
    double err = 0;
    for (size_t e = 0; e < res[0][i].size(); e++) {
      const double a = res[0][i][e], g = res[1][i][e];
      nans += std::isnan(a);
      if (std::isnan(a) != std::isnan(g))
        pattern++;
      else if (!std::isnan(a))
        err = std::max(err, std::fabs(a - g) / (1 + std::fabs(a)));
    }
    const bool oki = pattern == 0 && err < (dt == DType::F32 ? 1e-4 : 3e-2);
    ok = ok && oki;
    char s[128];
    std::snprintf(s, sizeof s, " %s: %ld NaN, %ld disagree, err %.2g%s", names[i], nans, pattern, err, oki ? "" : "<-");
    detail += s;
  }
  report(ok, std::string("attention NaN row ") + dtype_name(dt) + " T" + std::to_string(T) + " S" + std::to_string(S) +
                 " D" + std::to_string(D) + " sms=" + std::to_string(sms) + ":" + detail);
}
