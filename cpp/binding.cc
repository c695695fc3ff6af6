// binding.cc — the N-API surface of the addon (with binding_knobs.cc, the only files that include napi.h).
//
// JS sees a handful of functions: storage management (alloc, free, read, write, copy between
// devices), device queries, and `run(kernel, args)`, which converts the JS argument list into
// KernelArgs, checks every tensor view against its storage, picks the kernel registered for the
// device of the tensors, and rethrows any C++ exception as a JS Error. Nothing here decides shapes,
// broadcasting or dtypes: that is TypeScript's job; this layer only refuses what would be unsafe.
#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "dist_api.h"
#include "kernel_api.h"
#include "profiler.h"

namespace llava {

// binding_knobs.cc: cpuIsa, cpuSpinUs, cudaGemmTile and profile.
void add_knob_exports(Napi::Env env, Napi::Object exports);

// ---------------------------------------------------------------- storage
namespace {
struct Counters {
  int64_t live[2] = {0, 0};
  int64_t bytes[2] = {0, 0};
} counters;

// Storage handles are numbers, not N-API externals: an external's finalizer runs only when the event
// loop turns, so a synchronous training loop that never yields would pile up one pending finalizer
// (and its Storage) per disposed tensor. A handle is `generation * 2^32 + slot`; `free` deletes the
// Storage and retires the slot's generation at once, so a stale or forged number is refused instead
// of reaching freed memory. Tensors that JS never disposes are freed by a FinalizationRegistry on the
// JS side (lib/core/memory.ts). The table is guarded by a mutex because worker threads load the addon
// too.
struct Slot {
  Storage* storage = nullptr;
  uint32_t generation = 0;
};
struct HandleTable {
  std::mutex mu;
  std::vector<Slot> slots;
  std::vector<uint32_t> free_slots;
} handles;
constexpr double kSlotSpan = 4294967296.0;     // 2^32
constexpr uint32_t kMaxGeneration = 1u << 20;  // keeps handles below 2^52, exact in a double

double add_handle(Storage* s) {
  std::lock_guard<std::mutex> lock(handles.mu);
  uint32_t slot;
  if (!handles.free_slots.empty()) {
    slot = handles.free_slots.back();
    handles.free_slots.pop_back();
  } else {
    if (handles.slots.size() >= 0xffffffffu) throw KernelError("[alloc] too many live storages");
    slot = (uint32_t)handles.slots.size();
    handles.slots.emplace_back();
  }
  handles.slots[slot].storage = s;
  return handles.slots[slot].generation * kSlotSpan + slot;
}

// The slot a handle names, or null when the handle is not a live one.
Slot* find_slot(const Napi::Value& v) {
  if (!v.IsNumber()) return nullptr;
  double h = v.As<Napi::Number>().DoubleValue();
  if (!(h >= 0) || h != std::floor(h) || h >= kMaxGeneration * kSlotSpan) return nullptr;
  uint32_t slot = (uint32_t)std::fmod(h, kSlotSpan), gen = (uint32_t)std::floor(h / kSlotSpan);
  if (slot >= handles.slots.size()) return nullptr;
  Slot& sl = handles.slots[slot];
  return sl.storage && sl.generation == gen ? &sl : nullptr;
}

Storage* get_storage(const Napi::Value& v, const char* op) {
  std::lock_guard<std::mutex> lock(handles.mu);
  if (!v.IsNumber()) throw KernelError(std::string("[") + op + "] expected a storage handle");
  Slot* sl = find_slot(v);
  if (!sl) throw KernelError(std::string("[") + op + "] storage was already freed (tensor disposed)");
  return sl->storage;
}

void release(Storage* s) {
  auto* be = find_backend(s->device);
  if (be && s->ptr) be->free(s->ptr, s->nbytes);
  int d = static_cast<int>(s->device);
  counters.live[d]--;
  counters.bytes[d] -= (int64_t)s->nbytes;
  s->ptr = nullptr;
}

// Frees the storage a handle names and retires the handle; a handle that is not live is refused.
void free_handle(const Napi::Value& v) {
  Storage* s;
  {
    std::lock_guard<std::mutex> lock(handles.mu);
    if (!v.IsNumber()) throw KernelError("[free] expected a storage handle");
    Slot* sl = find_slot(v);
    if (!sl) throw KernelError("[free] storage was already freed (tensor disposed)");
    s = sl->storage;
    sl->storage = nullptr;
    uint32_t slot = (uint32_t)(sl - handles.slots.data());
    // A slot whose generations are used up is never reused, so no old handle can name it again.
    if (++sl->generation < kMaxGeneration) handles.free_slots.push_back(slot);
  }
  release(s);
  delete s;
}

Device parse_device(const Napi::Value& v, const char* op) {
  if (!v.IsNumber()) throw KernelError(std::string("[") + op + "] device must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != 0 && d != 1) throw KernelError(std::string("[") + op + "] unknown device " + v.ToString().Utf8Value());
  return static_cast<Device>(static_cast<int>(d));
}

const DeviceBackend& usable_backend(Device d, const char* op) {
  auto* be = find_backend(d);
  if (!be)
    throw KernelError(std::string("[") + op + "] this build has no CUDA support (nvcc was not found at build time)");
  if (!be->available()) throw KernelError(std::string("[") + op + "] device not available: " + be->describe());
  return *be;
}

// Shapes, strides and offsets are bounded by 2^48 (far beyond any real storage), so that
// (size - 1) * stride summed over 8 dims is exact in __int128 and int64 element offsets never wrap.
constexpr double kMaxIndex = 281474976710656.0;  // 2^48

double get_number(const Napi::Object& o, const char* key, const char* op) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw KernelError(std::string("[") + op + "] tensor field '" + key + "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

void get_int_array(const Napi::Value& v, int64_t* out, int n, const char* key, const char* op) {
  if (!v.IsArray()) throw KernelError(std::string("[") + op + "] tensor field '" + key + "' must be an array");
  auto arr = v.As<Napi::Array>();
  if ((int)arr.Length() != n)
    throw KernelError(std::string("[") + op + "] tensor field '" + key + "' has the wrong length");
  for (int i = 0; i < n; i++) {
    Napi::Value e = arr.Get(i);
    if (!e.IsNumber()) throw KernelError(std::string("[") + op + "] tensor field '" + key + "' must hold numbers");
    double x = e.As<Napi::Number>().DoubleValue();
    if (x != std::floor(x))
      throw KernelError(std::string("[") + op + "] tensor field '" + key + "' must hold integers");
    // Bounding every field keeps the extent arithmetic below (and in the kernels) free of overflow.
    if (std::fabs(x) > kMaxIndex)
      throw KernelError(std::string("[") + op + "] tensor field '" + key + "' holds a value beyond 2^48");
    out[i] = static_cast<int64_t>(x);
  }
}

// A JS tensor view: {s: storage handle, d: dtype code, sh: shape, st: strides, o: offset}.
TensorArg parse_tensor(const Napi::Object& o, const char* op) {
  TensorArg t;
  t.storage = get_storage(o.Get("s"), op);
  double d = get_number(o, "d", op);
  if (d < 0 || d > 7 || d != std::floor(d)) throw KernelError(std::string("[") + op + "] unknown dtype code");
  t.dtype = static_cast<DType>(static_cast<int>(d));
  Napi::Value sh = o.Get("sh");
  if (!sh.IsArray()) throw KernelError(std::string("[") + op + "] tensor shape must be an array");
  uint32_t nd = sh.As<Napi::Array>().Length();
  if (nd > (uint32_t)kMaxDims) throw KernelError(std::string("[") + op + "] tensors have at most 8 dims");
  t.ndim = static_cast<int>(nd);
  get_int_array(sh, t.shape, t.ndim, "sh", op);
  get_int_array(o.Get("st"), t.strides, t.ndim, "st", op);
  double off = get_number(o, "o", op);
  if (!(off >= 0) || off != std::floor(off) || off > kMaxIndex)
    throw KernelError(std::string("[") + op + "] tensor offset must be a non-negative integer below 2^48");
  t.offset = static_cast<int64_t>(off);
  // 128-bit arithmetic: with 64 bits, e.g. shape [5] stride [2^62] wraps to an extent of 0 and
  // the view would pass while its elements lie far outside the storage.
  __int128 lo = t.offset, hi = t.offset, numel = 1;
  bool empty = false;
  for (int i = 0; i < t.ndim; i++) {
    if (t.shape[i] < 0) throw KernelError(std::string("[") + op + "] negative dimension in shape");
    if (t.shape[i] == 0) empty = true;
    numel *= t.shape[i];
    if (numel > ((__int128)1 << 53)) throw KernelError(std::string("[") + op + "] tensor has more than 2^53 elements");
    __int128 ext = (__int128)(t.shape[i] - 1) * t.strides[i];
    if (ext < 0)
      lo += ext;
    else
      hi += ext;
  }
  __int128 item = (__int128)dtype_size(t.dtype);
  if (!empty && (lo < 0 || (hi + 1) * item > (__int128)t.storage->nbytes))
    throw KernelError(std::string("[") + op + "] tensor view reaches outside its storage");
  return t;
}

// True when two elements of a non-empty view share an address: sorted by stride, each dim's stride
// must reach past the extent of the dims below it (dims of size 1 never step).
bool self_overlapping(const TensorArg& t) {
  std::pair<int64_t, int64_t> dims[kMaxDims];
  int n = 0;
  for (int i = 0; i < t.ndim; i++) {
    if (t.shape[i] == 0) return false;
    if (t.shape[i] > 1) dims[n++] = {t.strides[i] < 0 ? -t.strides[i] : t.strides[i], t.shape[i]};
  }
  std::sort(dims, dims + n);
  __int128 extent = 1;
  for (int i = 0; i < n; i++) {
    if (dims[i].first < extent) return true;
    extent += (__int128)dims[i].first * (dims[i].second - 1);
  }
  return false;
}

KernelArg parse_arg(const Napi::Value& v, const char* op) {
  if (v.IsNull() || v.IsUndefined()) return std::monostate{};
  if (v.IsNumber()) return v.As<Napi::Number>().DoubleValue();
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (v.IsArray()) {
    auto arr = v.As<Napi::Array>();
    std::vector<int64_t> out(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value e = arr.Get(i);
      if (!e.IsNumber()) throw KernelError(std::string("[") + op + "] list arguments must hold numbers");
      double x = e.As<Napi::Number>().DoubleValue();
      if (x != std::floor(x) || std::fabs(x) > 9007199254740992.0)
        throw KernelError(std::string("[") + op + "] list arguments must hold integers of magnitude <= 2^53");
      out[i] = static_cast<int64_t>(x);
    }
    return out;
  }
  if (v.IsObject()) return parse_tensor(v.As<Napi::Object>(), op);
  throw KernelError(std::string("[") + op + "] unsupported argument type");
}

template <typename F> Napi::Value guarded(const Napi::CallbackInfo& info, F&& f) {
  try {
    return f();
  } catch (const Napi::Error&) { throw; } catch (const std::bad_alloc&) {
    throw Napi::Error::New(info.Env(), "[native] out of host memory");
  } catch (const std::exception& e) { throw Napi::Error::New(info.Env(), e.what()); }
}

// ---------------------------------------------------------------- JS functions
Napi::Value Alloc(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Device dev = parse_device(info[0], "alloc");
    if (!info[1].IsNumber()) throw KernelError("[alloc] nbytes must be a number");
    double nb = info[1].As<Napi::Number>().DoubleValue();
    if (nb < 0 || nb != std::floor(nb) || nb > 1e15) throw KernelError("[alloc] nbytes must be a non-negative integer");
    const DeviceBackend& be = usable_backend(dev, "alloc");
    auto* s = new Storage();
    s->nbytes = static_cast<size_t>(nb);
    s->device = dev;
    try {
      s->ptr = be.alloc(s->nbytes);
    } catch (...) {
      delete s;
      throw;
    }
    counters.live[(int)dev]++;
    counters.bytes[(int)dev] += (int64_t)s->nbytes;
    try {
      return Napi::Number::New(info.Env(), add_handle(s));
    } catch (...) {
      release(s);
      delete s;
      throw;
    }
  });
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    free_handle(info[0]);
    return info.Env().Undefined();
  });
}

void check_range(const Storage* s, double off, double n, const char* op) {
  if (off < 0 || n < 0 || off != std::floor(off) || n != std::floor(n) || off + n > (double)s->nbytes)
    throw KernelError(std::string("[") + op + "] byte range outside the storage");
}

// write(storage, byteOffset, typedArray)
Napi::Value Write(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = get_storage(info[0], "write");
    if (!info[1].IsNumber()) throw KernelError("[write] offset must be a number");
    if (!info[2].IsTypedArray()) throw KernelError("[write] data must be a typed array");
    auto ta = info[2].As<Napi::TypedArray>();
    double off = info[1].As<Napi::Number>().DoubleValue();
    size_t n = ta.ByteLength();
    check_range(s, off, (double)n, "write");
    const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    usable_backend(s->device, "write").copy_from_host(static_cast<char*>(s->ptr) + (size_t)off, src, n);
    return info.Env().Undefined();
  });
}

// read(storage, byteOffset, nbytes) -> ArrayBuffer (a copy)
Napi::Value Read(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = get_storage(info[0], "read");
    if (!info[1].IsNumber() || !info[2].IsNumber()) throw KernelError("[read] offset and size must be numbers");
    double off = info[1].As<Napi::Number>().DoubleValue(), n = info[2].As<Napi::Number>().DoubleValue();
    check_range(s, off, n, "read");
    const DeviceBackend& be = usable_backend(s->device, "read");
    // Napi::ArrayBuffer::New(env, n) lets V8 allocate the bytes, and V8 aborts the process when that
    // fails; allocating them here turns a short memory into a JS error. The buffer then owns them.
    void* host = std::malloc(n > 0 ? (size_t)n : 1);
    if (!host)
      throw KernelError("[read] out of host memory: cannot allocate " + std::to_string((int64_t)n) +
                        " bytes to read the tensor back");
    try {
      be.copy_to_host(host, static_cast<char*>(s->ptr) + (size_t)off, (size_t)n);
    } catch (...) {
      std::free(host);
      throw;
    }
    try {
      return Napi::ArrayBuffer::New(info.Env(), host, (size_t)n, [](Napi::Env, void* p) { std::free(p); });
    } catch (...) {
      std::free(host);  // not handed over: New throws before the buffer owns the bytes
      throw;
    }
  });
}

// hostView(storage) -> ArrayBuffer over the storage's own bytes (CPU only, no copy). The buffer does
// not own the bytes: the caller must drop every view before it frees the storage (lib/tfjs keeps its
// views private to the backend's data map and hands out copies).
Napi::Value HostView(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* s = get_storage(info[0], "hostView");
    if (s->device != Device::CPU) throw KernelError("[hostView] only CPU storages can be viewed from JS");
    if (s->nbytes == 0 || !s->ptr) return Napi::ArrayBuffer::New(info.Env(), 0);
    return Napi::ArrayBuffer::New(info.Env(), s->ptr, s->nbytes);
  });
}

// copyBytes(dst, dstOff, src, srcOff, n): byte copy between any two devices (used by to(device)).
Napi::Value CopyBytes(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Storage* d = get_storage(info[0], "copy");
    Storage* s = get_storage(info[2], "copy");
    for (int i : {1, 3, 4})
      if (!info[i].IsNumber()) throw KernelError("[copy] offsets and size must be numbers");
    double doff = info[1].As<Napi::Number>().DoubleValue(), soff = info[3].As<Napi::Number>().DoubleValue(),
           n = info[4].As<Napi::Number>().DoubleValue();
    check_range(d, doff, n, "copy");
    check_range(s, soff, n, "copy");
    char* dp = static_cast<char*>(d->ptr) + (size_t)doff;
    const char* sp = static_cast<const char*>(s->ptr) + (size_t)soff;
    if (d->device == Device::CPU && s->device == Device::CPU)
      std::memmove(dp, sp, (size_t)n);
    else if (d->device == s->device)
      usable_backend(d->device, "copy").copy_within(dp, sp, (size_t)n);
    else if (s->device == Device::CPU)
      usable_backend(d->device, "copy").copy_from_host(dp, sp, (size_t)n);
    else
      usable_backend(s->device, "copy").copy_to_host(dp, sp, (size_t)n);
    return info.Env().Undefined();
  });
}

// run(kernelName, argsArray)
Napi::Value Run(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsString()) throw KernelError("[run] kernel name must be a string");
    std::string name = info[0].As<Napi::String>().Utf8Value();
    if (!info[1].IsArray()) throw KernelError("[" + name + "] arguments must be an array");
    auto arr = info[1].As<Napi::Array>();
    std::vector<KernelArg> args;
    args.reserve(arr.Length());
    int device = -1;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      args.push_back(parse_arg(arr.Get(i), name.c_str()));
      if (auto* t = std::get_if<TensorArg>(&args.back())) {
        int d = static_cast<int>(t->device());
        if (device >= 0 && d != device) throw KernelError("[" + name + "] tensors are on different devices");
        device = d;
      }
    }
    // Argument 0 of every kernel is written (cpp/KERNELS.md). A view of it whose elements share
    // memory (stride 0 from expand, overlapping strides) is refused here as well as in TypeScript:
    // the result would depend on the order of the writes, and a stride-0 view of 2^40 elements
    // would keep a kernel busy for hours over a few bytes.
    if (!args.empty())
      if (auto* out = std::get_if<TensorArg>(&args[0]); out && self_overlapping(*out))
        throw KernelError("[" + name +
                          "] unsupported operation: more than one element of the written-to tensor refers to a "
                          "single memory location");
    Device dev = device < 0 ? Device::CPU : static_cast<Device>(device);
    const KernelFn* fn = find_kernel(name, dev);
    if (!fn) throw KernelError("[" + name + "] no kernel for device " + device_name(dev));
    std::optional<profiler::Scope> timed;  // while a profile records (cpp/profiler.h)
    if (profiler::active()) timed.emplace(profiler::call_key(name, args), dev);
    (*fn)(KernelArgs(name, std::move(args)));
    return info.Env().Undefined();
  });
}

// dist(name, argsArray) -> number: the collective-communication entry points (dist_api.h). Same
// argument parsing as run(); the entry point returns a rank, a size or a work id.
Napi::Value Dist(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsString()) throw KernelError("[dist] entry point name must be a string");
    std::string name = info[0].As<Napi::String>().Utf8Value();
    if (!info[1].IsArray()) throw KernelError("[" + name + "] arguments must be an array");
    auto arr = info[1].As<Napi::Array>();
    std::vector<KernelArg> args;
    for (uint32_t i = 0; i < arr.Length(); i++) args.push_back(parse_arg(arr.Get(i), name.c_str()));
    const DistFn* fn = find_dist(name);
    if (!fn) throw KernelError("[" + name + "] no such distributed entry point");
    return Napi::Number::New(info.Env(), (*fn)(KernelArgs(name, std::move(args))));
  });
}

Napi::Value DeviceInfo(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Device dev = parse_device(info[0], "device_info");
    auto o = Napi::Object::New(info.Env());
    auto* be = find_backend(dev);
    bool ok = be && be->available();
    o.Set("compiled", be != nullptr);
    o.Set("available", ok);
    o.Set("description",
          be ? be->describe() : std::string("this build has no CUDA support (nvcc was not found at build time)"));
    return o;
  });
}

Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Device dev = parse_device(info[0], "memory");
    auto o = Napi::Object::New(info.Env());
    o.Set("liveStorages", (double)counters.live[(int)dev]);
    o.Set("bytes", (double)counters.bytes[(int)dev]);
    auto* be = find_backend(dev);
    if (be && be->available() && be->stats) {
      double st[4] = {0, 0, 0, 0};
      be->stats(st);
      o.Set("bytesInUse", st[0]);
      o.Set("bytesCached", st[1]);
      o.Set("deviceMallocs", st[2]);
      o.Set("peakBytes", st[3]);
    }
    return o;
  });
}

Napi::Value Synchronize(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Device dev = parse_device(info[0], "synchronize");
    auto* be = find_backend(dev);
    if (be && be->available() && be->synchronize) be->synchronize();
    return info.Env().Undefined();
  });
}

Napi::Value EmptyCache(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Device dev = parse_device(info[0], "empty_cache");
    auto* be = find_backend(dev);
    if (be && be->available() && be->empty_cache) be->empty_cache();
    return info.Env().Undefined();
  });
}

Napi::Value Kernels(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    Device dev = parse_device(info[0], "kernels");
    auto names = kernel_names(dev);
    auto arr = Napi::Array::New(info.Env(), names.size());
    for (size_t i = 0; i < names.size(); i++) arr.Set((uint32_t)i, names[i]);
    return arr;
  });
}

Napi::Value NumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), num_threads()); }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // A kernel registered twice for one device is a build error that static constructors could not
  // report: refuse to load, naming it.
  try {
    check_registrations();
  } catch (const std::exception& e) { throw Napi::Error::New(env, e.what()); }
  exports.Set("alloc", Napi::Function::New(env, Alloc));
  exports.Set("free", Napi::Function::New(env, Free));
  exports.Set("write", Napi::Function::New(env, Write));
  exports.Set("read", Napi::Function::New(env, Read));
  exports.Set("copyBytes", Napi::Function::New(env, CopyBytes));
  exports.Set("hostView", Napi::Function::New(env, HostView));
  exports.Set("run", Napi::Function::New(env, Run));
  exports.Set("dist", Napi::Function::New(env, Dist));
  exports.Set("deviceInfo", Napi::Function::New(env, DeviceInfo));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats));
  exports.Set("synchronize", Napi::Function::New(env, Synchronize));
  exports.Set("emptyCache", Napi::Function::New(env, EmptyCache));
  exports.Set("kernels", Napi::Function::New(env, Kernels));
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  add_knob_exports(env, exports);
  return exports;
}

}  // namespace
}  // namespace llava

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return llava::Init(env, exports); }
NODE_API_MODULE(llava_native, InitAddon)
