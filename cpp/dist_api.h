// dist_api.h — the plain C++ side of collective communication (MPI on CPU tensors, NCCL on CUDA
// tensors), shared by dist_work.cc, dist_mpi.cc and dist_nccl.cc. No napi.h and no mpi.h/nccl.h here:
// both libraries are opened at run time (dlopen), so the addon builds and loads without them and
// `dist.init()` says which one is missing.
//
// An entry point is like a kernel (it receives the same checked KernelArgs) but returns a number: a
// rank, a world size, or the id of work queued on the communication thread. The binding exposes them
// as `dist(name, args)`.
//
// Work: collectives are queued in call order on one communication thread per process. Every rank
// issues the same collectives in the same order, so a single FIFO keeps them matched, and that thread is
// the only one that ever calls MPI (MPI_THREAD_FUNNELED is all we need from the library). JS continues
// (for example with the backward of the next layers) and later waits on the id, with a timeout, which is
// how a dead or hung peer turns into an error instead of a silent hang.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernel_api.h"

namespace llava {

using DistFn = std::function<double(const KernelArgs&)>;
void register_dist(const std::string& name, DistFn fn);
const DistFn* find_dist(const std::string& name);
std::vector<std::string> dist_names();

struct DistRegistrar {
  DistRegistrar(const char* name, DistFn fn) { register_dist(name, std::move(fn)); }
};
#define REGISTER_DIST(name, ...) static ::llava::DistRegistrar LLAVA_CAT(llava_dist_reg_, __LINE__)(name, __VA_ARGS__)

// The communication thread. submit() queues a job and returns its id; wait() blocks until it ran
// (rethrowing its error as a KernelError) or `timeout_s` passed (then it throws, naming `what`).
int64_t dist_submit(const std::string& what, std::function<void()> job);
void dist_wait(int64_t id, double timeout_s);
bool dist_done(int64_t id);
// Runs a job on the communication thread and waits for it.
void dist_run(const std::string& what, std::function<void()> job, double timeout_s);

// Shared helpers: the library handle (RTLD_GLOBAL, the first path that opens) and symbol lookup.
void* dist_dlopen(const std::vector<std::string>& candidates, std::string* tried);
void* dist_sym(void* lib, const char* name, const char* libname);

}  // namespace llava
