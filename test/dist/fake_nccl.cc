// fake_nccl.cc — a stand-in libnccl for tests without a GPU: the C functions cpp/dist_nccl.cc calls, with
// NCCL's ABI (ncclUniqueId is 128 bytes by value, data types and reductions as NCCL numbers them), done
// with MPI on host memory. The emulated CUDA addon (test/cuda_emu) keeps "device" memory on the host, so
// the pointers it passes can go to MPI as they are; the emulated stream runs work at once, so the
// collective is complete when the call returns.
//
// The ranks are those of the mpirun job: the process has already initialised MPI through lib/dist (libmpi
// opened RTLD_GLOBAL, so this library binds to the same instance). NCCL calls come from the JavaScript
// thread while lib/dist's communication thread is idle, never both at once.
//
//   g++ -shared -fPIC -O1 test/dist/fake_nccl.cc -I/usr/lib/x86_64-linux-gnu/openmpi/include -lmpi -o libnccl_fake.so
#define OMPI_SKIP_MPICXX 1  // the C API only (no libmpi_cxx)
#include <mpi.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace {
struct Comm {
  MPI_Comm mpi;
  int rank, size;
};
const char kMagic[] = "fake-nccl-id";

MPI_Datatype mpi_type(int t, size_t* item) {
  switch (t) {
    case 0:
    case 1:
      *item = 1;
      return MPI_BYTE;
    case 2:
      *item = 4;
      return MPI_INT;
    case 4:
      *item = 8;
      return MPI_INT64_T;
    case 7:
      *item = 4;
      return MPI_FLOAT;
    case 8:
      *item = 8;
      return MPI_DOUBLE;
    case 6:
    case 9:
      *item = 2;
      return MPI_FLOAT;  // widened through a float scratch
  }
  *item = 0;
  return MPI_DATATYPE_NULL;
}
MPI_Op mpi_op(int op) { return op == 2 ? MPI_MAX : op == 3 ? MPI_MIN : MPI_SUM; }

float half_to_f32(uint16_t h, int t) {
  if (t == 9) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  uint32_t s = (h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, b;
  if (e == 0) {
    float f = (float)m / 1024.0f / 16384.0f;
    return s ? -f : f;
  }
  b = e == 31 ? (s | 0x7f800000u | (m << 13)) : (s | ((e + 112) << 23) | (m << 13));
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}
uint16_t f32_to_half(float f, int t) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  if (t == 9) return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1)) >> 16);
  uint32_t s = (b >> 16) & 0x8000u;
  int e = (int)((b >> 23) & 0xff) - 112;
  uint32_t m = b & 0x7fffff;
  if (e <= 0) return (uint16_t)s;
  if (e >= 31) return (uint16_t)(s | 0x7c00u);
  uint32_t r = (uint32_t)(s | (e << 10) | (m >> 13));
  if ((m & 0x1fff) > 0x1000 || ((m & 0x1fff) == 0x1000 && (r & 1))) r++;
  return (uint16_t)r;
}

int reduce(const void* send, void* recv, size_t count, int t, int op, MPI_Comm c, int size, bool scatter) {
  size_t item;
  MPI_Datatype dt = mpi_type(t, &item);
  if (dt == MPI_DATATYPE_NULL) return 4;  // ncclInvalidArgument
  size_t in_n = scatter ? count * size : count;
  if (t == 6 || t == 9) {
    std::vector<float> a(in_n), r(count);
    for (size_t i = 0; i < in_n; i++) a[i] = half_to_f32(static_cast<const uint16_t*>(send)[i], t);
    int rc = scatter ? MPI_Reduce_scatter_block(a.data(), r.data(), (int)count, MPI_FLOAT, mpi_op(op), c)
                     : MPI_Allreduce(a.data(), r.data(), (int)count, MPI_FLOAT, mpi_op(op), c);
    if (rc) return 2;
    for (size_t i = 0; i < count; i++) {
      float v = op == 4 ? r[i] / size : r[i];
      static_cast<uint16_t*>(recv)[i] = f32_to_half(v, t);
    }
    return 0;
  }
  const void* s = !scatter && send == recv ? MPI_IN_PLACE : send;
  int rc = scatter ? MPI_Reduce_scatter_block(s, recv, (int)count, dt, mpi_op(op), c)
                   : MPI_Allreduce(s, recv, (int)count, dt, mpi_op(op), c);
  if (rc) return 2;
  if (op == 4)
    for (size_t i = 0; i < count; i++) {
      if (t == 7) static_cast<float*>(recv)[i] /= size;
      if (t == 8) static_cast<double*>(recv)[i] /= size;
    }
  return 0;
}
}  // namespace

extern "C" {
struct ncclUniqueId {
  char internal[128];
};

int ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id->internal, 0, 128);
  std::memcpy(id->internal, kMagic, sizeof(kMagic));
  return 0;
}

int ncclCommInitRank(void** comm, int nranks, ncclUniqueId id, int rank) {
  int up = 0;
  MPI_Initialized(&up);
  if (!up || std::memcmp(id.internal, kMagic, sizeof(kMagic)) != 0) return 4;
  auto* c = new Comm();
  MPI_Comm_dup(MPI_COMM_WORLD, &c->mpi);
  MPI_Comm_rank(c->mpi, &c->rank);
  MPI_Comm_size(c->mpi, &c->size);
  if (c->size != nranks || c->rank != rank) return 4;
  *comm = c;
  return 0;
}

int ncclAllReduce(const void* send, void* recv, size_t count, int t, int op, void* comm, void*) {
  auto* c = static_cast<Comm*>(comm);
  return reduce(send, recv, count, t, op, c->mpi, c->size, false);
}

int ncclReduceScatter(const void* send, void* recv, size_t count, int t, int op, void* comm, void*) {
  auto* c = static_cast<Comm*>(comm);
  return reduce(send, recv, count, t, op, c->mpi, c->size, true);
}

int ncclAllGather(const void* send, void* recv, size_t count, int t, void* comm, void*) {
  auto* c = static_cast<Comm*>(comm);
  size_t item;
  if (mpi_type(t, &item) == MPI_DATATYPE_NULL) return 4;
  int bytes = (int)(count * item);
  const void* s = send == static_cast<char*>(recv) + (size_t)bytes * c->rank ? MPI_IN_PLACE : send;
  return MPI_Allgather(s, bytes, MPI_BYTE, recv, bytes, MPI_BYTE, c->mpi) ? 2 : 0;
}

int ncclBroadcast(const void* send, void* recv, size_t count, int t, int root, void* comm, void*) {
  auto* c = static_cast<Comm*>(comm);
  size_t item;
  if (mpi_type(t, &item) == MPI_DATATYPE_NULL) return 4;
  if (c->rank == root && send != recv) std::memmove(recv, send, count * item);
  return MPI_Bcast(recv, (int)(count * item), MPI_BYTE, root, c->mpi) ? 2 : 0;
}

int ncclCommDestroy(void* comm) {
  auto* c = static_cast<Comm*>(comm);
  MPI_Comm_free(&c->mpi);
  delete c;
  return 0;
}
int ncclCommAbort(void* comm) {
  delete static_cast<Comm*>(comm);
  return 0;
}
const char* ncclGetErrorString(int rc) {
  return rc == 4 ? "invalid argument (fake NCCL)" : rc ? "MPI failed (fake NCCL)" : "no error";
}
}
