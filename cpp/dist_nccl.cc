// dist_nccl.cc — collectives on CUDA tensors over NCCL, with libnccl opened at run time.
//
// Which library: the paths the caller passes (lib/dist/nccl.ts: LLAVA_NCCL_LIB, then libnccl.so.2 from
// the system, then a Python wheel's nvidia/nccl/lib). Nothing from nccl.h is needed at build time: the
// few functions are declared below with NCCL's stable C ABI (ncclUniqueId is 128 bytes passed by value,
// data types and reduction ops are small enums, the communicator an opaque pointer).
//
// Ordering: every NCCL call is enqueued on the addon's one CUDA stream (cuda_common.cuh), so it runs after
// the kernels that produced its input and before any kernel issued later reads its output — the same
// order rule the caching allocator relies on. The work id of a collective is a CUDA event recorded
// right after it; waiting polls the event with a timeout, and a timeout aborts the communicator
// (ncclCommAbort) so the error surfaces instead of a hang.
//
// Builds without CUDA compile only the stubs, which say so. The NCCL path has not run on a GPU yet
// (README "Training on several GPUs or machines").
#include <cstring>
#include <string>

#include "dist_api.h"

#ifdef LLAVA_WITH_CUDA
#include <cuda_runtime_api.h>

#include <chrono>
#include <map>
#include <thread>

namespace llava {
namespace gpu {
cudaStream_t stream();
}
namespace {

struct UniqueId {
  char internal[128];
};
using Comm = void*;
using Fn_get_id = int (*)(UniqueId*);
using Fn_init_rank = int (*)(Comm*, int, UniqueId, int);
using Fn_all_reduce = int (*)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
using Fn_reduce_scatter = int (*)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
using Fn_all_gather = int (*)(const void*, void*, size_t, int, Comm, cudaStream_t);
using Fn_broadcast = int (*)(const void*, void*, size_t, int, int, Comm, cudaStream_t);
using Fn_comm = int (*)(Comm);
using Fn_err = const char* (*)(int);

struct Nccl {
  void* lib = nullptr;
  Fn_get_id get_unique_id;
  Fn_init_rank comm_init_rank;
  Fn_all_reduce all_reduce;
  Fn_reduce_scatter reduce_scatter;
  Fn_all_gather all_gather;
  Fn_broadcast broadcast;
  Fn_comm destroy, abort;
  Fn_err error_string;
  Comm comm = nullptr;
  int rank = -1, size = 0;
  std::map<int64_t, cudaEvent_t> events;
  int64_t next = 1;
} N;

template <typename F> F sym(const char* name) { return reinterpret_cast<F>(dist_sym(N.lib, name, "libnccl")); }

void open_library(const std::string& paths) {
  if (N.lib) return;
  std::vector<std::string> cands;
  size_t at = 0;
  while (at <= paths.size()) {
    size_t e = paths.find(':', at);
    if (e == std::string::npos) e = paths.size();
    if (e > at) cands.push_back(paths.substr(at, e - at));
    at = e + 1;
  }
  std::string tried;
  void* h = dist_dlopen(cands, &tried);
  if (!h)
    throw KernelError(
        "[dist] NCCL is not available: could not open" + tried +
        "\n  install NCCL (libnccl2, or pip install nvidia-nccl-cu12) or point LLAVA_NCCL_LIB at libnccl.so.2");
  N.lib = h;
  N.get_unique_id = sym<Fn_get_id>("ncclGetUniqueId");
  N.comm_init_rank = sym<Fn_init_rank>("ncclCommInitRank");
  N.all_reduce = sym<Fn_all_reduce>("ncclAllReduce");
  N.reduce_scatter = sym<Fn_reduce_scatter>("ncclReduceScatter");
  N.all_gather = sym<Fn_all_gather>("ncclAllGather");
  N.broadcast = sym<Fn_broadcast>("ncclBroadcast");
  N.destroy = sym<Fn_comm>("ncclCommDestroy");
  N.abort = sym<Fn_comm>("ncclCommAbort");
  N.error_string = sym<Fn_err>("ncclGetErrorString");
}

void check(int rc, const char* what) {
  if (rc != 0)
    throw KernelError(std::string("[") + what + "] NCCL error " + std::to_string(rc) + ": " + N.error_string(rc));
}
void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw KernelError(std::string("[") + what + "] " + cudaGetErrorString(e));
}

// ncclDataType_t and ncclRedOp_t values.
int nccl_type(const KernelArgs& a, DType d) {
  switch (d) {
    case DType::F32:
      return 7;
    case DType::F64:
      return 8;
    case DType::F16:
      return 6;
    case DType::BF16:
      return 9;
    case DType::I32:
      return 2;
    case DType::I64:
      return 4;
    case DType::U8:
    case DType::BOOL:
      return 1;
  }
  a.fail("unsupported dtype");
}
int nccl_op(const KernelArgs& a, size_t i) {
  const std::string& s = a.str(i);
  if (s == "sum") return 0;
  if (s == "max") return 2;
  if (s == "min") return 3;
  if (s == "avg") return 4;
  a.fail("unknown reduction '" + s + "' (sum, avg, max, min)");
}

const TensorArg& cuda_tensor(const KernelArgs& a, size_t i, const char* what) {
  const TensorArg& t = a.tensor(i);
  if (t.device() != Device::CUDA) a.fail(std::string(what) + " is a CPU tensor: NCCL collectives take CUDA tensors");
  a.check_contiguous(t, what);
  return t;
}
void require_comm(const KernelArgs& a) {
  if (!N.comm) a.fail("NCCL is not initialised: call dist.init() first");
}

double record(const char* what) {
  cudaEvent_t ev;
  check_cuda(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming), what);
  check_cuda(cudaEventRecord(ev, gpu::stream()), what);
  int64_t id = N.next++;
  N.events[id] = ev;
  return (double)id;
}

REGISTER_DIST("nccl_unique_id", [](const KernelArgs& a) {
  open_library(a.str(1));
  const TensorArg& out = a.tensor(0);
  if (out.device() != Device::CPU || out.dtype != DType::U8 || out.numel() != 128 || !out.is_contiguous())
    a.fail("the id buffer must be a contiguous CPU u8 tensor of 128 bytes");
  UniqueId id;
  check(N.get_unique_id(&id), "nccl_unique_id");
  std::memcpy(out.bytes(), id.internal, 128);
  return 0.0;
});

// nccl_init(id u8[128], rank, size, libPaths)
REGISTER_DIST("nccl_init", [](const KernelArgs& a) {
  open_library(a.str(3));
  if (N.comm) a.fail("NCCL is already initialised");
  const TensorArg& idt = a.tensor(0);
  if (idt.device() != Device::CPU || idt.dtype != DType::U8 || idt.numel() != 128 || !idt.is_contiguous())
    a.fail("the id must be a contiguous CPU u8 tensor of 128 bytes");
  int rank = (int)a.int_(1), size = (int)a.int_(2);
  if (size < 1 || rank < 0 || rank >= size)
    a.fail("rank " + std::to_string(rank) + " is not in a world of " + std::to_string(size));
  UniqueId id;
  std::memcpy(id.internal, idt.bytes(), 128);
  gpu::stream();  // opens device 0 (CUDA_VISIBLE_DEVICES picks the rank's GPU) before NCCL binds to it
  check(N.comm_init_rank(&N.comm, size, id, rank), "nccl_init");
  N.rank = rank;
  N.size = size;
  return (double)size;
});

REGISTER_DIST("nccl_all_reduce", [](const KernelArgs& a) {
  require_comm(a);
  const TensorArg& t = cuda_tensor(a, 0, "tensor");
  int op = nccl_op(a, 1), ty = nccl_type(a, t.dtype);
  if (ty == 1 || ty == 0) a.fail("cannot reduce u8/bool tensors");
  check(N.all_reduce(t.bytes(), t.bytes(), (size_t)t.numel(), ty, op, N.comm, gpu::stream()), "all_reduce");
  return record("all_reduce");
});

REGISTER_DIST("nccl_reduce_scatter", [](const KernelArgs& a) {
  require_comm(a);
  const TensorArg &out = cuda_tensor(a, 0, "output"), &in = cuda_tensor(a, 1, "input");
  a.check_same_dtype(out, in, "output and input");
  a.check_no_overlap(out, in, "output");
  if (in.numel() != out.numel() * N.size) a.fail("input must hold world size x output elements");
  check(N.reduce_scatter(in.bytes(), out.bytes(), (size_t)out.numel(), nccl_type(a, in.dtype), nccl_op(a, 2), N.comm,
                         gpu::stream()),
        "reduce_scatter");
  return record("reduce_scatter");
});

REGISTER_DIST("nccl_all_gather", [](const KernelArgs& a) {
  require_comm(a);
  const TensorArg &out = cuda_tensor(a, 0, "output"), &in = cuda_tensor(a, 1, "input");
  a.check_same_dtype(out, in, "output and input");
  if (out.numel() != in.numel() * N.size) a.fail("output must hold world size x input elements");
  int64_t bytes = in.numel() * (int64_t)dtype_size(in.dtype);
  if (!(in.storage == out.storage && in.bytes() == out.bytes() + bytes * N.rank)) a.check_no_overlap(out, in, "output");
  check(N.all_gather(in.bytes(), out.bytes(), (size_t)bytes, 1, N.comm, gpu::stream()), "all_gather");
  return record("all_gather");
});

REGISTER_DIST("nccl_broadcast", [](const KernelArgs& a) {
  require_comm(a);
  const TensorArg& t = cuda_tensor(a, 0, "tensor");
  int root = (int)a.int_(1);
  if (root < 0 || root >= N.size) a.fail("root is not a rank");
  size_t bytes = (size_t)t.numel() * dtype_size(t.dtype);
  check(N.broadcast(t.bytes(), t.bytes(), bytes, 1, root, N.comm, gpu::stream()), "broadcast");
  return record("broadcast");
});

// nccl_wait(id, timeout_s): polls the event; on timeout aborts the communicator and throws.
REGISTER_DIST("nccl_wait", [](const KernelArgs& a) {
  auto it = N.events.find(a.int_(0));
  if (it == N.events.end()) a.fail("unknown work id (already waited on?)");
  cudaEvent_t ev = it->second;
  N.events.erase(it);
  double timeout = a.num(1);
  auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    cudaError_t e = cudaEventQuery(ev);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) check_cuda(e, "nccl_wait");
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (timeout > 0 && s > timeout) {
      N.abort(N.comm);
      N.comm = nullptr;
      a.fail("no answer from the other ranks within " + std::to_string((int)timeout) +
             " s: a rank died or hung (the NCCL communicator was aborted)");
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  cudaEventDestroy(ev);
  return 0.0;
});

REGISTER_DIST("nccl_destroy", [](const KernelArgs&) {
  if (N.comm) N.destroy(N.comm);
  N.comm = nullptr;
  return 0.0;
});

}  // namespace
}  // namespace llava

#else  // no CUDA in this build

namespace llava {
namespace {
[[noreturn]] double no_cuda(const KernelArgs& a) {
  a.fail("this build has no CUDA support (nvcc was not found at build time), so no NCCL collectives");
}
REGISTER_DIST("nccl_unique_id", no_cuda);
REGISTER_DIST("nccl_init", no_cuda);
REGISTER_DIST("nccl_all_reduce", no_cuda);
REGISTER_DIST("nccl_reduce_scatter", no_cuda);
REGISTER_DIST("nccl_all_gather", no_cuda);
REGISTER_DIST("nccl_broadcast", no_cuda);
REGISTER_DIST("nccl_wait", no_cuda);
REGISTER_DIST("nccl_destroy", [](const KernelArgs&) { return 0.0; });
}  // namespace
}  // namespace llava

#endif
