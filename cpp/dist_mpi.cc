// dist_mpi.cc — collectives on CPU tensors over MPI, with libmpi opened at run time.
//
// Which library: LLAVA_MPI_LIB if set, else Open MPI's soname libmpi.so.40 (Debian's openmpi-bin /
// libopenmpi-dev), then libmpi.so. Binding at run time rather than linking keeps the addon buildable and
// loadable on machines without MPI; mpi.h is not needed either, because the few functions used take
// plain pointers and ints. What is Open MPI specific is the handles: MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM,
// ... are addresses of global objects in libmpi (ompi_mpi_comm_world, ompi_mpi_float, ompi_mpi_op_sum),
// found with dlsym; MPI_IN_PLACE is (void*)1. Another MPI (MPICH encodes handles as integers) would need
// its own table here, so init() refuses a library without those symbols, by name.
//
// Every MPI call runs on the communication thread (dist_work.cc), so FUNNELED support is enough; the
// collectives are the non-blocking MPI-3 ones, completed by a test-then-sleep loop (run_request). The
// world communicator gets MPI_ERRORS_RETURN so a failed call becomes a JS error instead of an abort.
// Reductions: sum, avg (sum then one scale, as NCCL's ncclAvg), max, min on f32, f64, i32, i64; bf16 and
// f16 are widened into an f32 scratch, reduced, and rounded back once. Counts go to MPI as int, so
// all_reduce is cut into chunks of 2^30 elements; the other collectives refuse more than 2^31-1 per rank.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "cpu_common.h"
#include "dist_api.h"

namespace llava {
namespace {

using Fn_init_thread = int (*)(int*, char***, int, int*);
using Fn_flag = int (*)(int*);
using Fn_void = int (*)();
using Fn_comm_int = int (*)(void*, int*);
// The non-blocking collectives (MPI 3): the last argument receives the request (a pointer in Open MPI).
using Fn_allreduce = int (*)(const void*, void*, int, void*, void*, void*, void**);
using Fn_reduce_scatter = int (*)(const void*, void*, int, void*, void*, void*, void**);
using Fn_allgather = int (*)(const void*, int, void*, void*, int, void*, void*, void**);
using Fn_bcast = int (*)(void*, int, void*, int, void*, void**);
using Fn_ibarrier = int (*)(void*, void**);
using Fn_test = int (*)(void**, int*, void*);
using Fn_abort = int (*)(void*, int);
using Fn_errstr = int (*)(int, char*, int*);
using Fn_set_errh = int (*)(void*, void*);

void* const kInPlace = reinterpret_cast<void*>(1);

struct Mpi {
  void* lib = nullptr;
  std::string path;
  Fn_init_thread init_thread;
  Fn_flag initialized, finalized;
  Fn_void finalize;
  Fn_comm_int comm_rank, comm_size;
  Fn_allreduce allreduce;
  Fn_reduce_scatter reduce_scatter_block;
  Fn_allgather allgather;
  Fn_bcast bcast;
  Fn_ibarrier barrier;
  Fn_test test;
  Fn_abort abort;
  Fn_errstr error_string;
  Fn_set_errh set_errhandler;
  void *world, *t_float, *t_double, *t_int, *t_int64, *t_byte, *op_sum, *op_max, *op_min, *errors_return;
  int rank = -1, size = 0;
  bool up = false, down = false;
} M;

template <typename F> F sym(const char* name) { return reinterpret_cast<F>(dist_sym(M.lib, name, M.path.c_str())); }

void open_library(const std::string& explicit_path) {
  if (M.lib) return;
  std::vector<std::string> cands;
  if (!explicit_path.empty())
    cands.push_back(explicit_path);
  else if (const char* e = std::getenv("LLAVA_MPI_LIB"); e && *e)
    cands.push_back(e);
  else
    cands = {"libmpi.so.40", "libmpi.so"};
  std::string tried;
  void* h = dist_dlopen(cands, &tried);
  if (!h)
    throw KernelError("[dist] MPI is not available: could not open" + tried +
                      "\n  install Open MPI (Debian: apt-get install openmpi-bin libopenmpi-dev) or point "
                      "LLAVA_MPI_LIB at libmpi.so");
  M.lib = h;
  M.path = cands.size() == 1 ? cands[0] : "libmpi";
  M.init_thread = sym<Fn_init_thread>("MPI_Init_thread");
  M.initialized = sym<Fn_flag>("MPI_Initialized");
  M.finalized = sym<Fn_flag>("MPI_Finalized");
  M.finalize = sym<Fn_void>("MPI_Finalize");
  M.comm_rank = sym<Fn_comm_int>("MPI_Comm_rank");
  M.comm_size = sym<Fn_comm_int>("MPI_Comm_size");
  M.allreduce = sym<Fn_allreduce>("MPI_Iallreduce");
  M.reduce_scatter_block = sym<Fn_reduce_scatter>("MPI_Ireduce_scatter_block");
  M.allgather = sym<Fn_allgather>("MPI_Iallgather");
  M.bcast = sym<Fn_bcast>("MPI_Ibcast");
  M.barrier = sym<Fn_ibarrier>("MPI_Ibarrier");
  M.test = sym<Fn_test>("MPI_Test");
  M.abort = sym<Fn_abort>("MPI_Abort");
  M.error_string = sym<Fn_errstr>("MPI_Error_string");
  M.set_errhandler = sym<Fn_set_errh>("MPI_Comm_set_errhandler");
  // Open MPI's predefined handles (see the header comment).
  M.world = sym<void*>("ompi_mpi_comm_world");
  M.t_float = sym<void*>("ompi_mpi_float");
  M.t_double = sym<void*>("ompi_mpi_double");
  M.t_int = sym<void*>("ompi_mpi_int");
  M.t_int64 = sym<void*>("ompi_mpi_int64_t");
  M.t_byte = sym<void*>("ompi_mpi_byte");
  M.op_sum = sym<void*>("ompi_mpi_op_sum");
  M.op_max = sym<void*>("ompi_mpi_op_max");
  M.op_min = sym<void*>("ompi_mpi_op_min");
  M.errors_return = sym<void*>("ompi_mpi_errors_return");
}

void check(int rc, const char* what) {
  if (rc == 0) return;
  char buf[512] = {0};
  int n = 0;
  if (M.error_string && M.error_string(rc, buf, &n) == 0) buf[n < 511 ? n : 511] = 0;
  throw KernelError(std::string("[") + what + "] MPI error " + std::to_string(rc) + ": " + buf);
}

// Completes a non-blocking collective started by `start(&request)`. Blocking MPI calls busy-poll for as
// long as the slowest rank takes, which steals a core from this process's compute or a neighbour's when
// ranks share cores; here a short busy phase keeps the latency of a quick collective, then the thread
// sleeps between tests (20 us, then 200 us after a millisecond or so).
template <typename Start> void run_request(Start start, const char* what) {
  void* req = nullptr;
  check(start(&req), what);
  int done = 0;
  for (int i = 0;; i++) {
    check(M.test(&req, &done, nullptr /* MPI_STATUS_IGNORE */), what);
    if (done) return;
    if (i >= 200) std::this_thread::sleep_for(std::chrono::microseconds(i < 1000 ? 20 : 200));
  }
}

void require_up(const KernelArgs& a) {
  if (!M.up) a.fail("MPI is not initialised: call dist.init() first");
  if (M.down) a.fail("MPI was already finalised (dist.destroy())");
}

const TensorArg& cpu_tensor(const KernelArgs& a, size_t i, const char* what) {
  const TensorArg& t = a.tensor(i);
  if (t.device() != Device::CPU)
    a.fail(std::string(what) + " is a CUDA tensor: MPI collectives take CPU tensors (CUDA tensors go through NCCL)");
  a.check_contiguous(t, what);
  return t;
}

enum class Red { Sum, Avg, Max, Min };
Red parse_op(const KernelArgs& a, size_t i) {
  const std::string& s = a.str(i);
  if (s == "sum") return Red::Sum;
  if (s == "avg") return Red::Avg;
  if (s == "max") return Red::Max;
  if (s == "min") return Red::Min;
  a.fail("unknown reduction '" + s + "' (sum, avg, max, min)");
}

// The MPI datatype a reduction runs in; bf16/f16 run in f32 through a scratch copy.
void* red_type(const KernelArgs& a, DType d, Red op) {
  switch (d) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      return M.t_float;
    case DType::F64:
      return M.t_double;
    case DType::I32:
    case DType::I64:
      if (op == Red::Avg) a.fail("avg needs a floating-point tensor");
      return d == DType::I32 ? M.t_int : M.t_int64;
    default:
      a.fail(std::string("cannot reduce ") + dtype_name(d) + " tensors");
  }
}
void* mpi_op(Red op) { return op == Red::Max ? M.op_max : op == Red::Min ? M.op_min : M.op_sum; }

// Widen bf16/f16 into f32 (to == true) or round back.
void convert(DType d, void* half, float* f, int64_t n, bool to) {
  auto* h = static_cast<uint16_t*>(half);
  for (int64_t i = 0; i < n; i++) {
    if (to)
      f[i] = d == DType::BF16 ? bf16_to_f32(h[i]) : f16_to_f32(h[i]);
    else
      h[i] = d == DType::BF16 ? f32_to_bf16(f[i]) : f32_to_f16(f[i]);
  }
}
void scale(DType d, void* p, int64_t n, double s) {
  if (d == DType::F64)
    for (int64_t i = 0; i < n; i++) static_cast<double*>(p)[i] *= s;
  else
    for (int64_t i = 0; i < n; i++) static_cast<float*>(p)[i] *= (float)s;
}
bool is_half(DType d) { return d == DType::BF16 || d == DType::F16; }

int32_t int_count(const KernelArgs& a, int64_t n, const char* what) {
  if (n > 2147483647) a.fail(std::string(what) + " has more than 2^31-1 elements per rank, beyond an MPI count");
  return (int32_t)n;
}

// The queued work below reads and writes tensor memory on the communication thread after the call has
// returned. It stays valid: lib/dist/process_group.ts retains every storage of a collective until its
// wait() (a tensor disposed meanwhile keeps its memory until then), and a storage is only freed by JS.

// mpi_init(libPath|null, timeout_s) -> world size. Idempotent.
double mpi_init(const KernelArgs& a) {
  if (M.down) a.fail("MPI was finalised in this process and cannot be initialised again");
  if (M.up) return M.size;
  open_library(a.is_none(0) ? std::string() : a.str(0));
  dist_run(
      "mpi_init",
      [] {
        int flag = 0;
        check(M.initialized(&flag), "mpi_init");
        if (!flag) {
          int provided = 0;
          check(M.init_thread(nullptr, nullptr, 1 /* MPI_THREAD_FUNNELED */, &provided), "mpi_init");
        }
        check(M.set_errhandler(M.world, M.errors_return), "mpi_init");
        check(M.comm_rank(M.world, &M.rank), "mpi_init");
        check(M.comm_size(M.world, &M.size), "mpi_init");
      },
      a.num(1));
  M.up = true;
  return M.size;
}

double mpi_all_reduce(const KernelArgs& a) {
  require_up(a);
  TensorArg t = cpu_tensor(a, 0, "tensor");
  Red op = parse_op(a, 1);
  void* type = red_type(a, t.dtype, op);
  return (double)dist_submit("all_reduce", [t, op, type] {
    int64_t n = t.numel();
    std::unique_ptr<float[]> scratch;
    void* buf = t.bytes();
    if (is_half(t.dtype)) {
      scratch.reset(new float[n > 0 ? n : 1]);
      convert(t.dtype, t.bytes(), scratch.get(), n, true);
      buf = scratch.get();
    }
    size_t item = type == M.t_double || type == M.t_int64 ? 8 : 4;
    for (int64_t at = 0; at < n; at += (int64_t)1 << 30) {
      int cnt = (int)std::min<int64_t>(n - at, (int64_t)1 << 30);
      char* p = static_cast<char*>(buf) + at * item;
      run_request([&](void** r) { return M.allreduce(kInPlace, p, cnt, type, mpi_op(op), M.world, r); }, "all_reduce");
    }
    if (op == Red::Avg) scale(is_half(t.dtype) ? DType::F32 : t.dtype, buf, n, 1.0 / M.size);
    if (scratch) convert(t.dtype, t.bytes(), scratch.get(), n, false);
  });
}

// mpi_reduce_scatter(out, in, op): in holds size * out.numel elements; rank r gets the reduction of block r.
double mpi_reduce_scatter(const KernelArgs& a) {
  require_up(a);
  TensorArg out = cpu_tensor(a, 0, "output"), in = cpu_tensor(a, 1, "input");
  Red op = parse_op(a, 2);
  a.check_same_dtype(out, in, "output and input");
  a.check_no_overlap(out, in, "output");
  if (in.numel() != out.numel() * M.size)
    a.fail("input has " + std::to_string(in.numel()) + " elements, expected world size " + std::to_string(M.size) +
           " x output " + std::to_string(out.numel()));
  void* type = red_type(a, in.dtype, op);
  int cnt = int_count(a, out.numel(), "output");
  return (double)dist_submit("reduce_scatter", [out, in, op, type, cnt] {
    if (is_half(in.dtype)) {
      std::unique_ptr<float[]> si(new float[(size_t)cnt * M.size + 1]), so(new float[(size_t)cnt + 1]);
      convert(in.dtype, in.bytes(), si.get(), (int64_t)cnt * M.size, true);
      run_request(
          [&](void** r) { return M.reduce_scatter_block(si.get(), so.get(), cnt, type, mpi_op(op), M.world, r); },
          "reduce_scatter");
      if (op == Red::Avg) scale(DType::F32, so.get(), cnt, 1.0 / M.size);
      convert(out.dtype, out.bytes(), so.get(), cnt, false);
      return;
    }
    run_request(
        [&](void** r) { return M.reduce_scatter_block(in.bytes(), out.bytes(), cnt, type, mpi_op(op), M.world, r); },
        "reduce_scatter");
    if (op == Red::Avg) scale(out.dtype, out.bytes(), cnt, 1.0 / M.size);
  });
}

// mpi_all_gather(out, in): out holds size blocks of in.numel elements, block r from rank r. `in` may be
// this rank's own block of `out` (then it is sent in place).
double mpi_all_gather(const KernelArgs& a) {
  require_up(a);
  TensorArg out = cpu_tensor(a, 0, "output"), in = cpu_tensor(a, 1, "input");
  a.check_same_dtype(out, in, "output and input");
  if (out.numel() != in.numel() * M.size)
    a.fail("output has " + std::to_string(out.numel()) + " elements, expected world size " + std::to_string(M.size) +
           " x input " + std::to_string(in.numel()));
  int64_t bytes = in.numel() * (int64_t)dtype_size(in.dtype);
  bool in_place = in.storage == out.storage && in.bytes() == out.bytes() + bytes * M.rank;
  if (!in_place) a.check_no_overlap(out, in, "output");
  int cnt = int_count(a, bytes, "input (in bytes)");
  return (double)dist_submit("all_gather", [out, in, cnt, in_place] {
    const void* src = in_place ? kInPlace : in.bytes();
    run_request([&](void** r) { return M.allgather(src, cnt, M.t_byte, out.bytes(), cnt, M.t_byte, M.world, r); },
                "all_gather");
  });
}

// mpi_broadcast(tensor, root)
double mpi_broadcast(const KernelArgs& a) {
  require_up(a);
  TensorArg t = cpu_tensor(a, 0, "tensor");
  int64_t root = a.int_(1);
  if (root < 0 || root >= M.size)
    a.fail("root " + std::to_string(root) + " is not a rank of a world of " + std::to_string(M.size));
  int cnt = int_count(a, t.numel() * (int64_t)dtype_size(t.dtype), "tensor (in bytes)");
  return (double)dist_submit("broadcast", [t, root, cnt] {
    run_request([&](void** r) { return M.bcast(t.bytes(), cnt, M.t_byte, (int)root, M.world, r); }, "broadcast");
  });
}

double mpi_barrier(const KernelArgs& a) {
  require_up(a);
  return (double)dist_submit("barrier", [] { run_request([](void** r) { return M.barrier(M.world, r); }, "barrier"); });
}

// mpi_finalize(timeout_s): after every queued collective.
double mpi_finalize(const KernelArgs& a) {
  if (!M.up || M.down) return 0;
  M.down = true;
  dist_run(
      "mpi_finalize", [] { check(M.finalize(), "mpi_finalize"); }, a.num(0));
  return 0;
}

// mpi_abort(code): ends every rank of the job (the launcher kills the others). Called from the JS
// thread on purpose: the communication thread may be stuck in a collective that will never complete.
double mpi_abort(const KernelArgs& a) {
  int code = (int)a.int_(0);
  if (M.up && M.abort) M.abort(M.world, code);
  std::_Exit(code);
}

REGISTER_DIST("mpi_init", mpi_init);
REGISTER_DIST("mpi_rank", [](const KernelArgs& a) {
  require_up(a);
  return (double)M.rank;
});
REGISTER_DIST("mpi_all_reduce", mpi_all_reduce);
REGISTER_DIST("mpi_reduce_scatter", mpi_reduce_scatter);
REGISTER_DIST("mpi_all_gather", mpi_all_gather);
REGISTER_DIST("mpi_broadcast", mpi_broadcast);
REGISTER_DIST("mpi_barrier", mpi_barrier);
REGISTER_DIST("mpi_finalize", mpi_finalize);
REGISTER_DIST("mpi_abort", mpi_abort);

}  // namespace
}  // namespace llava
