// test/cuda_emu/test_util.h — what the emulator's test binary shares between its files (test_main.cc,
// test_nan.cc): guarded buffers, tensors with a host copy of their values, running a kernel from the
// registry, and the PASS/FAIL report. Header-only; included once per test source.
#pragma once
#include <immintrin.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace llava {
namespace gpu {
extern int emu_sms;
}
}  // namespace llava
using namespace llava;

inline std::mt19937_64 rng(1234);
inline int failures = 0, passes = 0;

// ------------------------------------------------------------------ buffers
struct Buf {
  char* raw = nullptr;
  char* p = nullptr;
  size_t n = 0;
  Storage st;
  static constexpr size_t kGuard = 256;
  Buf(size_t bytes, Device dev) : n(bytes) {
    raw = static_cast<char*>(std::aligned_alloc(256, bytes + 2 * kGuard + 256));
    p = raw + kGuard;
    std::memset(raw, 0xA5, bytes + 2 * kGuard);
    st.ptr = p;
    st.nbytes = bytes;
    st.device = dev;
    if (dev == Device::CUDA) emu::register_region(p, bytes);
  }
  ~Buf() {
    if (st.device == Device::CUDA) emu::unregister_region(p);
    std::free(raw);
  }
  bool guards_ok() const {
    for (size_t i = 0; i < kGuard; i++)
      if ((unsigned char)raw[i] != 0xA5 || (unsigned char)p[n + i] != 0xA5) return false;
    return true;
  }
};

inline double to_double(DType dt, const void* base, int64_t i) {
  switch (dt) {
    case DType::F32:
      return static_cast<const float*>(base)[i];
    case DType::F64:
      return static_cast<const double*>(base)[i];
    case DType::BF16: {
      uint32_t u = uint32_t(static_cast<const uint16_t*>(base)[i]) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    case DType::F16:
      return _cvtsh_ss(static_cast<const uint16_t*>(base)[i]);
    case DType::BOOL:
      return static_cast<const uint8_t*>(base)[i];
    default:
      return 0;
  }
}
inline uint16_t f2bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline void from_double(DType dt, void* base, int64_t i, double v) {
  switch (dt) {
    case DType::F32:
      static_cast<float*>(base)[i] = (float)v;
      break;
    case DType::F64:
      static_cast<double*>(base)[i] = v;
      break;
    case DType::BF16:
      static_cast<uint16_t*>(base)[i] = f2bf((float)v);
      break;
    case DType::F16:
      static_cast<uint16_t*>(base)[i] = _cvtss_sh((float)v, 0);
      break;
    case DType::BOOL:
      static_cast<uint8_t*>(base)[i] = v != 0;
      break;
    default:
      break;
  }
}

// A tensor: storage + view + host copy of its values (as double, exactly representable).
struct Tensor {
  std::shared_ptr<Buf> buf;
  TensorArg t;
  std::vector<double> vals;  // over the storage elements
  DType dt;
  int64_t nelem;
};

inline Tensor make_tensor(DType dt, std::vector<int64_t> shape, std::vector<int64_t> strides, int64_t offset,
                          int64_t storage_elems, Device dev) {
  Tensor x;
  x.dt = dt;
  x.nelem = storage_elems;
  x.buf = std::make_shared<Buf>(storage_elems * dtype_size(dt), dev);
  x.t.storage = &x.buf->st;
  x.t.dtype = dt;
  x.t.ndim = (int)shape.size();
  for (size_t i = 0; i < shape.size(); i++) {
    x.t.shape[i] = shape[i];
    x.t.strides[i] = strides[i];
  }
  x.t.offset = offset;
  x.vals.assign(storage_elems, 0.0);
  return x;
}
inline std::vector<int64_t> contig(const std::vector<int64_t>& shape) {
  std::vector<int64_t> s(shape.size());
  int64_t e = 1;
  for (int i = (int)shape.size() - 1; i >= 0; i--) {
    s[i] = e;
    e *= shape[i];
  }
  return s;
}
inline int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto v : shape) n *= v;
  return n;
}
inline Tensor dense(DType dt, std::vector<int64_t> shape, Device dev) {
  return make_tensor(dt, shape, contig(shape), 0, std::max<int64_t>(1, numel(shape)), dev);
}
inline void fill_random(Tensor& x, double scale = 1.0) {
  std::normal_distribution<double> nd(0.0, scale);
  for (int64_t i = 0; i < x.nelem; i++) {
    from_double(x.dt, x.buf->p, i, nd(rng));
    x.vals[i] = to_double(x.dt, x.buf->p, i);
  }
}
inline void fill_value(Tensor& x, double v) {
  for (int64_t i = 0; i < x.nelem; i++) {
    from_double(x.dt, x.buf->p, i, v);
    x.vals[i] = to_double(x.dt, x.buf->p, i);
  }
}
// Copy of x's storage (values converted) with another dtype / device.
inline Tensor clone_as(const Tensor& x, DType dt, Device dev) {
  Tensor y = make_tensor(dt, std::vector<int64_t>(x.t.shape, x.t.shape + x.t.ndim),
                         std::vector<int64_t>(x.t.strides, x.t.strides + x.t.ndim), x.t.offset, x.nelem, dev);
  for (int64_t i = 0; i < x.nelem; i++) {
    from_double(dt, y.buf->p, i, x.vals[i]);
    y.vals[i] = to_double(dt, y.buf->p, i);
  }
  return y;
}
inline double at(const Tensor& x, std::vector<int64_t> idx) {
  int64_t off = x.t.offset;
  for (size_t i = 0; i < idx.size(); i++) off += idx[i] * x.t.strides[i];
  return to_double(x.dt, x.buf->p, off);
}
inline std::vector<double> read_all(const Tensor& x) {  // contiguous tensors
  const int64_t n = std::min<int64_t>(x.nelem, x.t.numel());
  std::vector<double> r(n);
  for (int64_t i = 0; i < n; i++) r[i] = to_double(x.dt, x.buf->p, i);
  return r;
}

inline void run(const char* name, Device dev, std::vector<KernelArg> args) {
  const KernelFn* fn = find_kernel(name, dev);
  if (!fn) {
    std::printf("no kernel %s\n", name);
    std::exit(1);
  }
  (*fn)(KernelArgs(name, std::move(args)));
}

inline void report(bool ok, const std::string& what) {
  if (ok)
    passes++;
  else
    failures++;
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  std::fflush(stdout);
}
