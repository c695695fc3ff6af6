// registry.cc — the kernel and backend registries and KernelArgs' typed accessors and checks.
// Plain C++ (no napi.h), so standalone kernel tests and benchmarks (CMakeLists.txt) link it too.
//
// Kernels register from static constructors, before anything could report an error, so a second
// registration of a (name, device) pair is not applied (the first one stays) but remembered;
// check_registrations() turns the list into an error, and the addon's module init calls it, so
// loading an addon with a duplicate fails with the kernel's name.
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "kernel_api.h"

namespace llava {

const char* dtype_name(DType d) {
  static const char* names[] = {"float32", "float64", "bfloat16", "float16", "int32", "int64", "uint8", "bool"};
  int i = static_cast<int>(d);
  return (i >= 0 && i < 8) ? names[i] : "unknown";
}

// ---------------------------------------------------------------- registry
namespace {
std::map<std::pair<std::string, int>, KernelFn>& kernel_table() {
  static std::map<std::pair<std::string, int>, KernelFn> table;
  return table;
}
std::map<int, DeviceBackend>& backend_table() {
  static std::map<int, DeviceBackend> table;
  return table;
}
std::vector<std::string>& duplicate_list() {
  static std::vector<std::string> list;
  return list;
}
}  // namespace

namespace {
// LLAVA_CUDA_GEMM_TILE=<name> forces a tile from the start (e.g. a wgmma one for a whole training run); an
// unknown name is reported on stderr and leaves "auto".
int env_gemm_tile() {
  const char* s = std::getenv("LLAVA_CUDA_GEMM_TILE");
  if (!s || !*s) return 0;
  std::string known;
  for (int i = 0; i < kNumCudaGemmTiles; i++) {
    if (std::strcmp(s, kCudaGemmTiles[i]) == 0) return i;
    known += (i ? ", " : "") + std::string(kCudaGemmTiles[i]);
  }
  std::fprintf(stderr, "llava-node: LLAVA_CUDA_GEMM_TILE='%s' is not a tile (%s); using auto\n", s, known.c_str());
  return 0;
}
std::atomic<int>& gemm_tile_slot() {
  static std::atomic<int> tile{env_gemm_tile()};
  return tile;
}
}  // namespace
int cuda_gemm_tile() { return gemm_tile_slot().load(std::memory_order_relaxed); }
void set_cuda_gemm_tile(int index) {
  if (index >= 0 && index < kNumCudaGemmTiles) gemm_tile_slot().store(index, std::memory_order_relaxed);
}

const char* device_name(Device d) { return d == Device::CPU ? "cpu" : d == Device::CUDA ? "cuda" : "unknown"; }

void register_kernel(const std::string& name, Device device, KernelFn fn) {
  auto& table = kernel_table();
  std::pair<std::string, int> key{name, static_cast<int>(device)};
  if (table.count(key)) {
    duplicate_list().push_back("'" + name + "' for " + device_name(device));
    return;
  }
  table.emplace(std::move(key), std::move(fn));
}
std::vector<std::string> duplicate_registrations() { return duplicate_list(); }
void check_registrations() {
  const auto& dups = duplicate_list();
  if (dups.empty()) return;
  std::string msg = "[registry] kernel registered more than once: ";
  for (size_t i = 0; i < dups.size(); i++) msg += (i ? ", " : "") + dups[i];
  throw KernelError(msg + " (each kernel name may be registered once per device)");
}
const KernelFn* find_kernel(const std::string& name, Device device) {
  auto it = kernel_table().find({name, static_cast<int>(device)});
  return it == kernel_table().end() ? nullptr : &it->second;
}
std::vector<std::string> kernel_names(Device device) {
  std::vector<std::string> out;
  for (auto& kv : kernel_table())
    if (kv.first.second == static_cast<int>(device)) out.push_back(kv.first.first);
  return out;
}
void register_backend(Device device, DeviceBackend backend) {
  backend_table()[static_cast<int>(device)] = std::move(backend);
}
const DeviceBackend* find_backend(Device device) {
  auto it = backend_table().find(static_cast<int>(device));
  return it == backend_table().end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------- KernelArgs
const KernelArg& KernelArgs::at(size_t i, const char* kind) const {
  if (i >= args_.size()) fail("missing argument " + std::to_string(i) + " (" + kind + ")");
  return args_[i];
}
const TensorArg& KernelArgs::tensor(size_t i) const {
  auto* t = std::get_if<TensorArg>(&at(i, "tensor"));
  if (!t) fail("argument " + std::to_string(i) + " must be a tensor");
  return *t;
}
bool KernelArgs::is_none(size_t i) const {
  return i >= args_.size() || std::holds_alternative<std::monostate>(args_[i]);
}
const TensorArg* KernelArgs::optional_tensor(size_t i) const { return is_none(i) ? nullptr : &tensor(i); }
double KernelArgs::num(size_t i) const {
  auto* v = std::get_if<double>(&at(i, "number"));
  if (!v) fail("argument " + std::to_string(i) + " must be a number");
  return *v;
}
int64_t KernelArgs::int_(size_t i) const {
  double v = num(i);
  if (!(v == std::floor(v)) || std::fabs(v) > 9007199254740992.0)
    fail("argument " + std::to_string(i) + " must be an integer");
  return static_cast<int64_t>(v);
}
bool KernelArgs::flag(size_t i) const {
  auto* v = std::get_if<bool>(&at(i, "boolean"));
  if (!v) fail("argument " + std::to_string(i) + " must be a boolean");
  return *v;
}
const std::string& KernelArgs::str(size_t i) const {
  auto* v = std::get_if<std::string>(&at(i, "string"));
  if (!v) fail("argument " + std::to_string(i) + " must be a string");
  return *v;
}
const std::vector<int64_t>& KernelArgs::ints(size_t i) const {
  auto* v = std::get_if<std::vector<int64_t>>(&at(i, "int list"));
  if (!v) fail("argument " + std::to_string(i) + " must be a list of integers");
  return *v;
}
static std::string shape_str(const TensorArg& t) {
  std::string s = "[";
  for (int i = 0; i < t.ndim; i++) s += (i ? ", " : "") + std::to_string(t.shape[i]);
  return s + "]";
}
void KernelArgs::check_dtype(const TensorArg& t, DType d, const char* what) const {
  if (t.dtype != d) fail(std::string(what) + " must be " + dtype_name(d) + ", got " + dtype_name(t.dtype));
}
void KernelArgs::check_float(const TensorArg& t, const char* what) const {
  if (!is_float(t.dtype)) fail(std::string(what) + " must be a floating dtype, got " + dtype_name(t.dtype));
}
void KernelArgs::check_same_dtype(const TensorArg& a, const TensorArg& b, const char* what) const {
  if (a.dtype != b.dtype)
    fail(std::string(what) + ": dtypes differ (" + dtype_name(a.dtype) + " vs " + dtype_name(b.dtype) + ")");
}
void KernelArgs::check_contiguous(const TensorArg& t, const char* what) const {
  if (!t.is_contiguous()) fail(std::string(what) + " must be contiguous");
}
void KernelArgs::check_ndim(const TensorArg& t, int ndim, const char* what) const {
  if (t.ndim != ndim)
    fail(std::string(what) + " must have " + std::to_string(ndim) + " dims, got shape " + shape_str(t));
}
void KernelArgs::check_shape(const TensorArg& t, const std::vector<int64_t>& shape, const char* what) const {
  bool ok = t.ndim == (int)shape.size();
  for (int i = 0; ok && i < t.ndim; i++) ok = t.shape[i] == shape[i];
  if (!ok) {
    std::string want = "[";
    for (size_t i = 0; i < shape.size(); i++) want += (i ? ", " : "") + std::to_string(shape[i]);
    fail(std::string(what) + " has shape " + shape_str(t) + ", expected " + want + "]");
  }
}
void KernelArgs::check_numel(const TensorArg& t, int64_t n, const char* what) const {
  if (t.numel() != n)
    fail(std::string(what) + " must have " + std::to_string(n) + " elements, got " + std::to_string(t.numel()));
}
// Byte range [lo, hi) a view can touch.
static void view_range(const TensorArg& t, int64_t& lo, int64_t& hi) {
  int64_t mn = t.offset, mx = t.offset;
  for (int d = 0; d < t.ndim; d++) {
    if (t.shape[d] == 0) {
      lo = hi = 0;
      return;
    }
    int64_t ext = (t.shape[d] - 1) * t.strides[d];
    if (ext < 0)
      mn += ext;
    else
      mx += ext;
  }
  lo = mn * (int64_t)dtype_size(t.dtype);
  hi = (mx + 1) * (int64_t)dtype_size(t.dtype);
}
void KernelArgs::check_no_overlap(const TensorArg& out, const TensorArg& in, const char* what) const {
  if (out.storage != in.storage) return;
  int64_t a0, a1, b0, b1;
  view_range(out, a0, a1);
  view_range(in, b0, b1);
  if (a0 < b1 && b0 < a1) fail(std::string(what) + ": output overlaps an input");
}

}  // namespace llava
