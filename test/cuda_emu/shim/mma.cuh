// test/cuda_emu/shim/mma.cuh — emulator version of cuda/mma.cuh: the same functions, implemented from the PTX ISA's
// definitions of cp.async, ldmatrix and mma.m16n8k16 fragment layouts.
#pragma once
#include <immintrin.h>

#include <utility>

namespace llava {
namespace mma {

// The dynamic shared memory of the running block (see shim/launch.cuh).
inline unsigned char* const dyn_smem = ::emu::dyn_smem_buf;
// A shared-memory address as the GPU sees it: here, the offset into the dynamic shared memory.
inline uint32_t smem_u32(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < dyn_smem || c >= dyn_smem + sizeof(::emu::dyn_smem_buf)) ::emu::die("smem_u32: not a dynamic shared address");
  return uint32_t(c - dyn_smem);
}

inline void cp_async16(void* smem, const void* gmem, int src_bytes) {
  if ((uintptr_t)smem % 16) ::emu::die("cp.async: shared address not 16-byte aligned");
  ::emu::check_smem(smem, 16, "cp.async dst");
  if (src_bytes < 0 || src_bytes > 16) ::emu::die("cp.async: src_bytes %d", src_bytes);
  if (src_bytes > 0) {
    if ((uintptr_t)gmem % 16) ::emu::die("cp.async: global address %p not 16-byte aligned", gmem);
    ::emu::check_global(gmem, src_bytes, "cp.async src");
  }
  ::emu::note_cp_async(smem);
  if (::emu::cp_eager) {  // earliest completion: exposes write-after-read hazards on the slot
    ::emu::Mute m;        // the copy is recorded as a write of the 16 bytes when it lands (here)
    ::emu::note_shared(smem, 16, true, ::emu::cur->tid);
    if (src_bytes) std::memcpy(smem, gmem, src_bytes);
    std::memset((char*)smem + src_bytes, 0, 16 - src_bytes);
    return;
  }
  ::emu::cur->open.push_back({smem, gmem, src_bytes});
}
inline void cp_async_commit() {
  ::emu::cur->groups.push_back(std::move(::emu::cur->open));
  ::emu::cur->open.clear();
}
template <int N> inline void cp_async_wait() {
  auto& gs = ::emu::cur->groups;
  ::emu::Mute m;
  while ((int)gs.size() > N) {
    for (auto& c : gs.front()) {
      ::emu::note_shared(c.dst, 16, true, ::emu::cur->tid);  // a cp.async write counts when it lands
      if (c.n) std::memcpy(c.dst, c.src, c.n);
      std::memset((char*)c.dst + c.n, 0, 16 - c.n);
    }
    gs.erase(gs.begin());
  }
}

inline void ldsm_impl(uint32_t (&r)[4], const void* p, bool trans) {
  if ((uintptr_t)p % 16) ::emu::die("ldmatrix: address not 16-byte aligned");
  ::emu::check_smem(p, 16, "ldmatrix");
  ::emu::note_shared(p, 16, false, ::emu::cur->tid);  // this lane's row, read at the collective
  ::emu::Warp& w = ::emu::my_warp();
  const int L = ::emu::lane();
  w.in[L][0] = (uint64_t)(uintptr_t)p;
  w.in[L][1] = trans;
  ::emu::warp_collective(
      trans ? "ldmatrix.trans" : "ldmatrix", true,
      [](::emu::Warp& w, const void*) {
        const bool tr = w.in[0][1];
        for (int i = 0; i < 4; i++) {  // one phase per 8x8 matrix: 8 rows of 16 B must hit 8 distinct bank slots
          int seen = 0, worst = 1, cnt[8] = {0};
          for (int r = 0; r < 8; r++) {
            int slot = (int)((w.in[i * 8 + r][0] / 16) % 8);
            worst = std::max(worst, ++cnt[slot]);
            seen |= 1 << slot;
          }
          ::emu::note_phase("ldmatrix", worst);
        }
        for (int l = 0; l < 32; l++) {
          for (int i = 0; i < 4; i++) {
            uint16_t lo, hi;
            if (!tr) {
              const uint16_t* row = (const uint16_t*)(uintptr_t)w.in[i * 8 + l / 4][0];
              lo = row[2 * (l % 4)];
              hi = row[2 * (l % 4) + 1];
            } else {
              lo = ((const uint16_t*)(uintptr_t)w.in[i * 8 + 2 * (l % 4)][0])[l / 4];
              hi = ((const uint16_t*)(uintptr_t)w.in[i * 8 + 2 * (l % 4) + 1][0])[l / 4];
            }
            w.out[l][i] = (uint32_t)lo | ((uint32_t)hi << 16);
          }
        }
      },
      nullptr);
  for (int i = 0; i < 4; i++) r[i] = (uint32_t)w.out[L][i];
}
inline void ldsm_x4(uint32_t (&r)[4], const void* smem) { ldsm_impl(r, smem, false); }
inline void ldsm_x4_trans(uint32_t (&r)[4], const void* smem) { ldsm_impl(r, smem, true); }

inline float h2f(uint16_t h, bool is_bf16) {
  if (is_bf16) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  }
  return _cvtsh_ss(h);
}

template <typename T> inline void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  constexpr bool kBf16 = std::is_same<T, __nv_bfloat16>::value;
  ::emu::Warp& w = ::emu::my_warp();
  const int L = ::emu::lane();
  for (int i = 0; i < 4; i++) w.in[L][i] = a[i];
  w.in[L][4] = b0;
  w.in[L][5] = b1;
  for (int i = 0; i < 2; i++) {
    uint64_t u = 0;
    std::memcpy(&u, &d[2 * i], 8);
    w.in[L][6 + i] = u;
  }
  ::emu::warp_collective(
      kBf16 ? "mma.bf16" : "mma.f16", true,
      [](::emu::Warp& w, const void*) {
        float A[16][16], B[16][8], C[16][8];
        for (int l = 0; l < 32; l++) {
          const int g = l / 4, t = l % 4;
          auto lo = [](uint64_t r) { return h2f((uint16_t)(r & 0xffff), kBf16); };
          auto hi = [](uint64_t r) { return h2f((uint16_t)((r >> 16) & 0xffff), kBf16); };
          A[g][2 * t] = lo(w.in[l][0]);
          A[g][2 * t + 1] = hi(w.in[l][0]);
          A[g + 8][2 * t] = lo(w.in[l][1]);
          A[g + 8][2 * t + 1] = hi(w.in[l][1]);
          A[g][2 * t + 8] = lo(w.in[l][2]);
          A[g][2 * t + 9] = hi(w.in[l][2]);
          A[g + 8][2 * t + 8] = lo(w.in[l][3]);
          A[g + 8][2 * t + 9] = hi(w.in[l][3]);
          B[2 * t][g] = lo(w.in[l][4]);
          B[2 * t + 1][g] = hi(w.in[l][4]);
          B[2 * t + 8][g] = lo(w.in[l][5]);
          B[2 * t + 9][g] = hi(w.in[l][5]);
          float c[4];
          std::memcpy(&c[0], &w.in[l][6], 8);
          std::memcpy(&c[2], &w.in[l][7], 8);
          C[g][2 * t] = c[0];
          C[g][2 * t + 1] = c[1];
          C[g + 8][2 * t] = c[2];
          C[g + 8][2 * t + 1] = c[3];
        }
        for (int l = 0; l < 32; l++) {
          const int g = l / 4, t = l % 4;
          const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
          float o[4];
          for (int e = 0; e < 4; e++) {
            float s = C[rows[e]][cols[e]];
            for (int k = 0; k < 16; k++) s += A[rows[e]][k] * B[k][cols[e]];
            o[e] = s;
          }
          std::memcpy(&w.out[l][0], &o[0], 8);
          std::memcpy(&w.out[l][1], &o[2], 8);
        }
      },
      nullptr);
  std::memcpy(&d[0], &w.out[L][0], 8);
  std::memcpy(&d[2], &w.out[L][1], 8);
}

template <typename T> inline uint32_t pack2(float lo, float hi);
template <> inline uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}
template <> inline uint32_t pack2<__half>(float lo, float hi) {
  __half2 v = __floats2half2_rn(lo, hi);
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return u;
}

}  // namespace mma
}  // namespace llava
