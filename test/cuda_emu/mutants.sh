#!/usr/bin/env bash
# test/cuda_emu/mutants.sh — runs the sanitizer mutants of README.md's table through mutate.sh and prints
# the table's rows: each mutant (a barrier guarding a shared tile removed, an atomic turned into a plain
# read-modify-write, a partial __syncthreads, a shuffle with a wrong mask, a copy to the host read
# without synchronising) and what reported it.
#
#   bash test/cuda_emu/mutants.sh [NAME-REGEX]      # all mutants, or those whose name matches
#
# One run per mutant with EMU_RACECHECK=1 EMU_RANDOM=1 (the same run also counts wrong numbers), so a
# row shows racecheck hazards, synccheck/fatal errors and failed checks side by side. Every mutant
# rebuilds one kernel file (~1 min) and runs its tests (under a minute); seven of them took 6.6 min on 2
# cores, the first addon build included. Scratch builds go to ${TMPDIR:-/tmp}/cuda_emu_mutants (kept,
# reused between runs).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ONLY=${1:-.}
SCRATCH=${TMPDIR:-/tmp}/cuda_emu_mutants
NL=$'\n'

# name @@ target (test/addon) @@ file @@ old @@ new @@ filter (a regex: the test family, or check.ts --filter)
#   [@@ mode: the EMU_* settings of the run instead of race's EMU_RACECHECK=1 EMU_RANDOM=1]
MUTANTS=(
  "matmul wgmma: operand tile stored without the 128-byte swizzle @@ test @@ matmul_sm90.cu @@ ((((k >> 3) ^ row) & 7) << 3) @@ (((k >> 3) & 7) << 3) @@ matmul"
  "matmul wgmma: LBO and SBO swapped in the MN-major descriptor @@ test @@ matmul_sm90.cu @@ BK * 128, 1024); @@ 1024, BK * 128); @@ matmul"
  "matmul wgmma: no barrier before refilling a stage @@ test @@ matmul_sm90.cu @@     __syncthreads();             // ... for every @@     // @@ matmul"
  "matmul wgmma: wait_group 2, so a stage is refilled while a wgmma still reads it @@ test @@ matmul_sm90.cu @@ wgmma::wait<1>(); @@ wgmma::wait<2>(); @@ matmul @@ EMU_CP_EAGER=1 EMU_RACECHECK=1 EMU_RANDOM=1"
  "matmul wgmma: no final wait_group 0 @@ test @@ matmul_sm90.cu @@   wgmma::wait<0>(); @@   @@ matmul"
  "matmul tc: no barrier before reusing a stage @@ test @@ matmul.cu @@         __syncthreads();${NL}      }${NL}      if (ks == 0) { @@       }${NL}      if (ks == 0) { @@ matmul"
  "matmul tc: prefetch reads the next tile into the wrong fragment set @@ test @@ matmul.cu @@ load_frags(0, (kt + 1) % STAGES, 0) @@ load_frags(1, (kt + 1) % STAGES, 0) @@ matmul"
  "matmul simt: no barrier after the tile stores @@ test @@ matmul.cu @@ : C(0);${NL}    }${NL}    __syncthreads(); @@ : C(0);${NL}    } @@ matmul"
  "matmul simt: no barrier before the next tile @@ test @@ matmul.cu @@     __syncthreads();${NL}  }${NL}${NL}  T* O @@   }${NL}${NL}  T* O @@ matmul"
  "attention fwd: no barrier after K_j/V_{j-1} @@ test @@ attention_fwd.cu @@     __syncthreads();          // ... for all threads @@     // @@ attn"
  "attention fwd: no barrier after V_j/K_j @@ test @@ attention_fwd.cu @@     __syncthreads();          // ... everywhere @@     // @@ attn"
  "attention fwd simt: no barrier after the K/V tiles are staged @@ test @@ attention_simt.cuh @@       __syncthreads();  // the Q, K (and V) tiles @@       // @@ attn"
  "attention fwd simt: no barrier before restaging the tiles @@ test @@ attention_simt.cuh @@       __syncthreads();  // every thread is done with the previous tiles (sQ @@       // @@ attn"
  "attention fwd simt: no __syncwarp after the P rows @@ test @@ attention_simt.cuh @@     __syncwarp();  // a row of P @@     // @@ attn"
  "attention bwd: no barrier at the item start @@ test @@ attention_bwd.cu @@     __syncthreads();          // ... for all; every warp @@     // @@ attn"
  "attention bwd: no barrier after dS^T @@ test @@ attention_bwd.cu @@     __syncthreads();  // all of dS^T @@     // @@ attn"
  "attention bwd: dQ atomicAdd -> plain += @@ test @@ attention_bwd.cu @@ atomicAdd(dst + nt * 8, dq[nt][2 * hh]); @@ dst[nt * 8] += dq[nt][2 * hh]; @@ attn"
  "attention bwd simt: no barrier after the Q/dO/K/V tiles @@ test @@ attention_simt.cuh @@       __syncthreads();  // the Q, dO, K, V tiles @@       // @@ attn"
  "attention bwd simt: no barrier after P and dS @@ test @@ attention_simt.cuh @@     __syncthreads();  // P and dS are complete @@     // @@ attn"
  "attention bwd simt: dQ atomicAdd -> plain += @@ test @@ attention_simt.cuh @@ atomicAdd(dq_rows + (int64_t)i * D + col0 + tx + 8 * c, acc[c]); @@ dq_rows[(int64_t)i * D + col0 + tx + 8 * c] += acc[c]; @@ attn"
  "norms: no barrier before the group sums' smem @@ addon @@ norm.cu @@     __syncthreads();${NL}    if (lane == 0) {${NL}      smem[warp] = a; @@     if (lane == 0) {${NL}      smem[warp] = a; @@ norm"
  "norms: no barrier after the group sums' smem @@ addon @@ norm.cu @@       smem[kBlock / 32 + warp] = b;${NL}    }${NL}    __syncthreads(); @@       smem[kBlock / 32 + warp] = b;${NL}    } @@ norm"
  "norms bwd: no barrier after the partial rows @@ addon @@ norm.cu @@ accb[q * V + k];${NL}          });${NL}          __syncthreads(); @@ accb[q * V + k];${NL}          }); @@ norm"
  "norms bwd: no barrier in colsum @@ addon @@ norm.cu @@     tile[ty][tx] = s;${NL}    __syncthreads(); @@     tile[ty][tx] = s; @@ norm"
  "reductions: no barrier before the block reduce @@ addon @@ reduce.cu @@     __syncthreads();  // smem may still be read @@     // @@ sum|mean|max|cross_entropy|softmax"
  "reductions/cross-entropy: no barrier after the block reduce @@ addon @@ reduce.cu @@     if (lane == 0) smem[warp] = st;${NL}    __syncthreads(); @@     if (lane == 0) smem[warp] = st; @@ sum|mean|max|cross_entropy|softmax"
  "reductions: no barrier in the column tile @@ addon @@ reduce.cu @@     tile[ty][tx] = st;${NL}    __syncthreads(); @@     tile[ty][tx] = st; @@ sum|mean|max"
  "partial __syncthreads (block reduce) @@ addon @@ reduce.cu @@     if (lane == 0) smem[warp] = st;${NL}    __syncthreads(); @@     if (lane == 0) smem[warp] = st;${NL}    if (threadIdx.x < 64) __syncthreads(); @@ cross_entropy"
  "index_add: atomicAdd -> plain += @@ addon @@ index.cu @@ template <typename T> __device__ __forceinline__ void atomic_add(T* p, T v) { atomicAdd(p, v); } @@ template <typename T> __device__ __forceinline__ void atomic_add(T* p, T v) { *p += v; } @@ index|scatter|embedding"
  "no synchronise before reading a copy to the host @@ addon @@ backend.cu @@ cudaMemcpyDeviceToHost, s));${NL}  CUDA_CHECK(cudaStreamSynchronize(s));${NL}} @@ cudaMemcpyDeviceToHost, s));${NL}} @@ softmax"
  "warp shuffle with a half mask @@ addon @@ cuda_common.cuh @@ v += __shfl_xor_sync(kFullMask, v, o); @@ v += __shfl_xor_sync(0xffffu, v, o); @@ layer_norm"
)

echo "| mutant | file | failed checks | racecheck hazards | synccheck / fatal |"
echo "|---|---|---|---|---|"
for m in "${MUTANTS[@]}"; do
  f=()
  rest=$m
  while [[ "$rest" == *" @@ "* ]]; do
    f+=("${rest%% @@ *}")
    rest=${rest#* @@ }
  done
  f+=("$rest")
  name=${f[0]} target=${f[1]} file=${f[2]} old=${f[3]} new=${f[4]} filter=${f[5]} mode=${f[6]:-race}
  [[ "$name" =~ $ONLY ]] || continue
  res=$(EMU_OUT="$SCRATCH/$target" EMU_TARGET=$target EMU_MODES=$mode bash "$HERE/mutate.sh" "$file" "$old" "$new" "$filter" 2>&1)
  line=$(echo "$res" | grep -m1 "mode\[")
  if [ -z "$line" ]; then
    echo "| $name | $file | ? | ? | $(echo "$res" | tail -1) |"
    continue
  fi
  fails=$(echo "$line" | sed -n 's/.*: \([0-9]*\) failures.*/\1/p')
  hz=$(echo "$line" | sed -n 's/.*failures, \([0-9-]*\) hazards.*/\1/p')
  fatal=$(echo "$line" | sed -n 's/.*fatal: \(.*\)/\1/p' | sed 's/EMU FATAL: //; s/ (block .*//' | cut -c1-110)
  kind=$(echo "$res" | sed -n 's/.*first hazard: EMU RACE \([a-z]*-memory [A-Z]*\) hazard.*/\1/p' | head -1)
  echo "| $name | $file | $fails | $hz${kind:+ (first: $kind)} | ${fatal:--} |"
done
