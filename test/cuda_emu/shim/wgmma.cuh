// test/cuda_emu/shim/wgmma.cuh — emulator version of cuda/wgmma.cuh: the warpgroup GEMM instruction
// implemented from the PTX ISA's definitions (matrix descriptors, the 128-byte-swizzled canonical layouts,
// the accumulator fragment), with its asynchrony modelled like cp.async's: a wgmma reads shared memory
// and updates the accumulators when the wgmma.wait_group that retires its group runs (the latest a GPU
// may do it), or at issue with EMU_WGMMA_EAGER=1 (the earliest). The latest is the default because it
// is the one that exposes the hazards of a pipeline: with copies landing early (EMU_CP_EAGER=1, the kernel
// tests' second pass) a kernel that refills an operand's slot before the wait that retires its reader
// computes a wrong result, and one that reads the accumulators before the wait does in any mode.
#pragma once

#include <functional>
#include <utility>

namespace llava {
namespace wgmma {

// The emulated shared address is the offset into the running block's dynamic shared memory (shim/mma.cuh).
inline uint16_t wg_elem(uint32_t addr, const char* what) {
  addr ^= ((addr >> 7) & 7) << 4;  // the 128-byte swizzle on address bits [4:6] from [7:9]
  if (addr % 2) ::emu::die("wgmma: odd %s address", what);
  const unsigned char* p = ::emu::dyn_smem_buf + addr;
  ::emu::check_smem(p, 2, what);
  ::emu::note_shared(p, 2, false, ::emu::cur->tid);
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Element (r, k) of the operand a descriptor describes (r < 64 for A, < N for B; k < 16).
inline uint16_t wg_operand(uint64_t desc, bool mn_major, int r, int k, const char* what) {
  const uint32_t start = uint32_t(desc & 0x3fff) << 4, lbo = uint32_t((desc >> 16) & 0x3fff) << 4,
                 sbo = uint32_t((desc >> 32) & 0x3fff) << 4;
  if ((desc >> 62) != 1)
    ::emu::die("wgmma: %s descriptor layout type %d (only the 128-byte swizzle is emulated)", what, int(desc >> 62));
  if ((desc >> 49) & 7) ::emu::die("wgmma: %s descriptor base offset must be 0", what);
  if (!mn_major) return wg_elem(start + (r / 8) * sbo + (r % 8) * 128 + 2 * k, what);
  return wg_elem(start + (r / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + 2 * (r % 64), what);
}

inline float wg_bf16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline void fence_proxy_async() {}
inline void fence() {}
template <int R> inline void fence_regs(float (&)[R]) {}
inline void commit() {
  auto* f = ::emu::cur;
  f->wg_groups.push_back(std::move(f->wg_open));
  f->wg_open.clear();
}
template <int N> inline void wait() {
  auto& gs = ::emu::cur->wg_groups;
  while ((int)gs.size() > N) {
    auto group = std::move(gs.front());
    gs.erase(gs.begin());
    for (auto& op : group) op();
  }
}

template <int N> struct Wgmma {
  static_assert(N % 8 == 0 && N >= 8 && N <= 256, "wgmma n is 8..256 in steps of 8");
  template <int TA, int TB> static void run(float (&d)[N / 2], uint64_t da, uint64_t db) {
    // All 32 lanes of each warp issue it together (a warp collective for synccheck); warp w of the
    // warpgroup owns rows 16w..16w+15.
    ::emu::warp_collective(
        "wgmma", true, [](::emu::Warp&, const void*) {}, nullptr);
    const int tid = ::emu::cur->tid, w = (tid % 128) / 32, g = (tid % 32) / 4, t = tid % 4;
    float* acc = d;
    auto op = [acc, da, db, w, g, t] {
      ::emu::Mute m;  // the operand reads are recorded by wg_elem
      float a[2][16];
      for (int h = 0; h < 2; h++)
        for (int k = 0; k < 16; k++) a[h][k] = wg_bf16(wg_operand(da, TA, 16 * w + g + 8 * h, k, "wgmma A"));
      for (int j = 0; j < N / 8; j++)
        for (int e = 0; e < 2; e++) {
          float b[16];
          for (int k = 0; k < 16; k++) b[k] = wg_bf16(wg_operand(db, TB, 8 * j + 2 * t + e, k, "wgmma B"));
          for (int h = 0; h < 2; h++) {
            float s = 0.f;
            for (int k = 0; k < 16; k++) s += a[h][k] * b[k];
            acc[4 * j + 2 * h + e] += s;
          }
        }
    };
    static const bool eager = std::getenv("EMU_WGMMA_EAGER") != nullptr;
    if (eager)
      op();
    else
      ::emu::cur->wg_open.push_back(op);
  }
};

}  // namespace wgmma
}  // namespace llava
