// The one list of native sources, read by binding.gyp (node-gyp), CMakeLists.txt (cmake-js) and the
// scripts that compile cpp/ by hand (test/cuda_emu/build_addon.sh, scripts/check_arm64.sh).
//   node scripts/sources.js cpp|avx2|avx512|cuda   prints the paths, one per line, relative to the repo root
//
//   cpp     every cpp/*.cc: the portable build (baseline flags), always
//   avx2    the files of cpp/ that are compiled a second time with -mavx2 -mfma -mf16c (they carry
//           AVX2 code under `#if LLAVA_AVX2` and register through LLAVA_CPU_KERNEL), plus cpp/isa/*_avx2.cc
//   avx512  cpp/isa/*_avx512.cc, compiled with the AVX-512 flags
// The avx2 and avx512 sets are built on x86-64 only (cpu_isa.h chooses among them at run time).
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const kind = process.argv[2];

// cpp/ files with an AVX2 copy.
const AVX2_COPIES = ['cpu_attention.cc', 'cpu_elementwise.cc', 'cpu_matmul.cc', 'cpu_norm.cc', 'cpu_quant.cc', 'cpu_reduce.cc', 'cpu_rope.cc'];

function list(dir, test) {
  const full = path.join(root, dir);
  return (fs.existsSync(full) ? fs.readdirSync(full) : [])
    .filter(test)
    .sort()
    .map((f) => `${dir}/${f}`);
}

let files;
if (kind === 'cuda') files = list('cuda', (f) => f.endsWith('.cu'));
else if (kind === 'cpp') files = list('cpp', (f) => f.endsWith('.cc'));
else if (kind === 'avx2') files = [...AVX2_COPIES.map((f) => `cpp/${f}`), ...list('cpp/isa', (f) => f.endsWith('_avx2.cc'))];
else if (kind === 'avx512') files = list('cpp/isa', (f) => f.endsWith('_avx512.cc'));
else {
  process.stderr.write(`sources.js: unknown kind '${kind}' (cpp, avx2, avx512 or cuda)\n`);
  process.exit(2);
}
process.stdout.write(files.join('\n') + '\n');
