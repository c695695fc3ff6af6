// registry_dup.cc — fixture for kernel_registry.test.ts: registers the kernel "twice" two times for
// the CPU (plus once for CUDA, which is allowed) and "once" a single time, then reports what
// cpp/registry.cc made of it. Built two ways by the test:
//   * as a program (with main): prints the registry's view, one fact per line;
//   * with -DREGISTRY_DUP_NO_MAIN, linked into an addon with cpp/binding.cc, which must refuse to load.
#include <cstdio>
#include <string>

#include "kernel_api.h"

namespace {
using llava::Device;
using llava::KernelArgs;

int which_ran = 0;
void first(const KernelArgs&) { which_ran = 1; }
void second(const KernelArgs&) { which_ran = 2; }
void on_cuda(const KernelArgs&) { which_ran = 3; }
void single(const KernelArgs&) { which_ran = 4; }

REGISTER_KERNEL("twice", Device::CPU, first);
REGISTER_KERNEL("twice", Device::CPU, second);
REGISTER_KERNEL("twice", Device::CUDA, on_cuda);
REGISTER_KERNEL("once", Device::CPU, single);
}  // namespace

#ifndef REGISTRY_DUP_NO_MAIN
int main() {
  for (const auto& d : llava::duplicate_registrations()) std::printf("duplicate: %s\n", d.c_str());
  for (const auto& n : llava::kernel_names(Device::CPU)) std::printf("cpu: %s\n", n.c_str());
  for (const auto& n : llava::kernel_names(Device::CUDA)) std::printf("cuda: %s\n", n.c_str());
  const llava::KernelFn* fn = llava::find_kernel("twice", Device::CPU);
  if (fn) (*fn)(KernelArgs("twice", {}));
  std::printf("twice on cpu runs: %d\n", which_ran);
  try {
    llava::check_registrations();
    std::printf("check: passed\n");
  } catch (const llava::KernelError& e) { std::printf("check: %s\n", e.what()); }
  return 0;
}
#endif
