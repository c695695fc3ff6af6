// test/cuda_emu/shim/launch.cuh — emulator version of cuda/launch.cuh: gpu::launch runs the grid on the
// host, one block after another, each block's threads as fibers (emu.cc), after the launch checks a
// GPU would make (empty grid, grid y/z, threads per block, dynamic shared memory). With EMU_DEFERRED=1
// the grid is queued (arguments copied, as the driver does) and runs at the next synchronising call.
#pragma once
#include <tuple>
#include <utility>

namespace llava {
namespace gpu {

template <typename... KParams, typename... Args>
inline void launch(void (*kernel)(KParams...), dim3 grid, dim3 block, size_t smem, cudaStream_t, Args&&... args) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) ::emu::die("launch with an empty grid");
  if (grid.y > 65535 || grid.z > 65535) ::emu::die("grid y/z too large");
  const int nt = block.x * block.y * block.z;
  if (nt > 1024 || nt <= 0) ::emu::die("bad block");
  if (smem > 227 * 1024) ::emu::die("dynamic smem %zu > 227 KB", smem);
  std::tuple<std::decay_t<KParams>...> params(std::forward<Args>(args)...);
  // The launch itself: run now, or (EMU_DEFERRED=1) queued on the stream until a synchronising call.
  auto body = [kernel, grid, block, smem, nt, params]() {
    ::emu::launches++;
    ::emu::begin_kernel((const void*)kernel);
    ::emu::g_gridDim = grid;
    ::emu::g_blockDim = block;
    ::emu::smem_base = ::emu::dyn_smem_buf;
    ::emu::smem_size = smem;
    for (unsigned z = 0; z < grid.z; z++)
      for (unsigned y = 0; y < grid.y; y++)
        for (unsigned x = 0; x < grid.x; x++) {
          ::emu::g_blockIdx = make_uint3(x, y, z);
          std::memset(::emu::dyn_smem_buf, 0xff, smem);  // NaN poison: stale reads show up
          ::emu::run_block(nt, [&] { std::apply(kernel, params); });
        }
    ::emu::end_kernel();
  };
  ::emu::submit(body);
}

}  // namespace gpu
}  // namespace llava
