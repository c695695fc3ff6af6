// launch.cuh — the one way this addon launches a kernel: gpu::launch(kernel, grid, block, smem, stream,
// args...). Included at the end of cuda_common.cuh; never write `<<<...>>>` anywhere else.
//
// Keeping every launch behind this function is what lets the host emulator (test/cuda_emu) run the
// kernel sources unchanged: it compiles them with g++ and swaps this header for one that runs each
// block's threads as fibers. The caller still calls gpu::check_launch(args) afterwards, which turns a
// launch error into "[op] CUDA kernel launch failed: ...".
#pragma once

#include <cuda_runtime.h>

#include <mutex>
#include <unordered_map>
#include <utility>

namespace llava {
namespace gpu {

// Launches `kernel` on `stream`, first raising its dynamic shared-memory limit when it needs more
// than the default 48 KB (once per kernel, and again only if a later launch needs more). A failed
// attribute call throws the CUDA error.
template <typename... KParams, typename... Args> inline void launch(void (*kernel)(KParams...), dim3 grid, dim3 block,
                                                                    size_t smem, cudaStream_t stream, Args&&... args) {
  if (smem > 48 * 1024) {
    static std::mutex mu;
    static std::unordered_map<const void*, size_t> raised;
    const void* fn = reinterpret_cast<const void*>(kernel);
    std::lock_guard<std::mutex> lock(mu);
    size_t& have = raised[fn];
    if (have < smem) {
      CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
      have = smem;
    }
  }
  kernel<<<grid, block, smem, stream>>>(std::forward<Args>(args)...);
}

}  // namespace gpu
}  // namespace llava
