// native_util.h — what the standalone kernel labs (test/native, bench/native) share: host tensors
// built by hand (a Storage plus a TensorArg view) and calling a kernel through the registry, the
// same way the N-API binding does, without Node.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cpu_common.h"
#include "kernel_api.h"

namespace llava_native {
using namespace llava;

// A host buffer and a view of it. The storage is 64-byte aligned like the CPU backend's.
struct HostTensor {
  std::shared_ptr<Storage> storage;
  TensorArg view;
};

inline std::shared_ptr<Storage> make_storage(size_t nbytes) {
  auto s = std::shared_ptr<Storage>(new Storage, [](Storage* p) {
    std::free(p->ptr);
    delete p;
  });
  s->nbytes = nbytes;
  s->ptr = std::aligned_alloc(64, (std::max<size_t>(nbytes, 1) + 63) / 64 * 64);
  std::memset(s->ptr, 0, nbytes);
  return s;
}

// View over `storage` with explicit shape/strides (elements) and element offset.
inline HostTensor make_view(std::shared_ptr<Storage> s, DType dt, std::vector<int64_t> shape,
                            std::vector<int64_t> strides, int64_t offset = 0) {
  HostTensor t{std::move(s), {}};
  t.view.storage = t.storage.get();
  t.view.dtype = dt;
  t.view.ndim = int(shape.size());
  for (size_t i = 0; i < shape.size(); i++) {
    t.view.shape[i] = shape[i];
    t.view.strides[i] = strides[i];
  }
  t.view.offset = offset;
  return t;
}

inline HostTensor make_contiguous(DType dt, std::vector<int64_t> shape) {
  int64_t n = 1;
  std::vector<int64_t> strides(shape.size());
  for (int i = int(shape.size()) - 1; i >= 0; i--) {
    strides[i] = n;
    n *= shape[i];
  }
  return make_view(make_storage(size_t(n) * dtype_size(dt)), dt, shape, strides);
}

// Element access through the storage at an element offset, as double.
inline void put(const TensorArg& t, int64_t off, double v) {
  char* p = static_cast<char*>(t.storage->ptr) + (t.offset + off) * int64_t(dtype_size(t.dtype));
  switch (t.dtype) {
    case DType::F32:
      store(reinterpret_cast<float*>(p), v);
      break;
    case DType::F64:
      store(reinterpret_cast<double*>(p), v);
      break;
    case DType::BF16:
      store(reinterpret_cast<bf16*>(p), v);
      break;
    case DType::F16:
      store(reinterpret_cast<f16*>(p), v);
      break;
    case DType::I32:
      store(reinterpret_cast<int32_t*>(p), v);
      break;
    default:
      throw std::runtime_error("put: dtype not supported");
  }
}
inline double get(const TensorArg& t, int64_t off) {
  const char* p = static_cast<const char*>(t.storage->ptr) + (t.offset + off) * int64_t(dtype_size(t.dtype));
  switch (t.dtype) {
    case DType::F32:
      return load(reinterpret_cast<const float*>(p));
    case DType::F64:
      return load(reinterpret_cast<const double*>(p));
    case DType::BF16:
      return load(reinterpret_cast<const bf16*>(p));
    case DType::F16:
      return load(reinterpret_cast<const f16*>(p));
    case DType::I32:
      return *reinterpret_cast<const int32_t*>(p);
    default:
      throw std::runtime_error("get: dtype not supported");
  }
}

inline void call(const char* name, std::vector<KernelArg> args) {
  const KernelFn* fn = find_kernel(name, Device::CPU);
  if (!fn) throw std::runtime_error(std::string("kernel not registered: ") + name);
  (*fn)(KernelArgs(name, std::move(args)));
}

inline double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Small deterministic generator (xorshift) so failures reproduce.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  double uniform() {  // [-1, 1)
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return double(s >> 11) / double(1ull << 52) - 1.0;
  }
};

// ---------------------------------------------------------------- the labs' tally
// Pass/fail counts, a report line per failure (and per pass with LLAVA_TEST_VERBOSE set), the
// elements of a view as doubles, and the rule for invalid calls: they must throw KernelError.
inline int g_pass = 0, g_fail = 0;
inline const bool g_verbose = std::getenv("LLAVA_TEST_VERBOSE") != nullptr;

inline void report(bool ok, const std::string& name, const std::string& detail = "") {
  if (ok) {
    g_pass++;
    if (g_verbose) std::printf("ok   %s %s\n", name.c_str(), detail.c_str());
  } else {
    g_fail++;
    std::printf("FAIL %s %s\n", name.c_str(), detail.c_str());
  }
}

inline std::vector<double> values(const TensorArg& t) {
  std::vector<double> v(t.numel());
  for (int64_t i = 0; i < t.numel(); i++) v[i] = get(t, strided_offset(t, i));
  return v;
}

inline void expect_throw(const std::string& name, const std::function<void()>& f) {
  try {
    f();
    report(false, "invalid call accepted: " + name);
  } catch (const KernelError&) { report(true, name); } catch (const std::exception& e) {
    report(false, "invalid call threw a non-KernelError: " + name, e.what());
  }
}

}  // namespace llava_native
