// ptxas.ts — the build-time resource check of the CUDA kernels: what ptxas allocates per kernel and per
// arch (registers, static shared memory, spills; `nvcc -Xptxas -v` with binding.gyp's flags) joined with
// the launch configurations the backend really uses (threads per block and dynamic shared memory of
// every launch, logged by the emulated addon: EMU_LAUNCH_LOG, test/cuda_emu/emu.cc), against the limits
// that make a GPU refuse a launch ("too many resources requested for launch") on sm_80 and sm_90a (the H100 build:
// sm_90 plus the wgmma instructions).
//
// ptxas -v is a full device compile of every cuda/*.cu for two archs (minutes on 2 cores), so its
// parsed output is kept: test/cuda/ptxas_usage.json (committed) when its hash of the CUDA sources
// matches, else a cache under node_modules/.cache/llava-node/, else nvcc is run (and the cache written).
// `node --import=tsx test/cuda_emu/ptxas.ts --write` refreshes the committed file after a kernel change.
import { spawn, spawnSync } from 'child_process';
import crypto from 'crypto';
import fs from 'fs';
import os from 'os';
import path from 'path';

export const ROOT = path.join(__dirname, '..', '..');
export const COMMITTED = path.join(ROOT, 'test', 'cuda', 'ptxas_usage.json');
const CACHE_DIR = path.join(ROOT, 'node_modules', '.cache', 'llava-node');
export const ARCHS = ['sm_80', 'sm_90a'] as const;

/** Per-block limits: registers (65,536 per block on both), shared memory with the opt-in attribute. */
export const LIMITS: Record<string, { regsPerBlock: number; smemOptin: number; smemDefault: number }> = {
  sm_80: { regsPerBlock: 65536, smemOptin: 163 * 1024, smemDefault: 48 * 1024 },
  sm_90a: { regsPerBlock: 65536, smemOptin: 227 * 1024, smemDefault: 48 * 1024 },
};
/** The archs a kernel can launch on: the wgmma GEMM (cuda/matmul_sm90.cu) only on sm_90 (its sm_80 image is a trap). */
export function archsFor(mangled: string): readonly string[] {
  return mangled.includes('gemm_wgmma_kernel') ? ['sm_90a'] : ARCHS;
}
/** Spill budget (bytes of spill stores per thread) for the tensor-core kernels. */
export const TC_SPILL_BUDGET = 64;

export interface KernelUsage {
  arch: string;
  mangled: string;
  regs: number;
  smem: number;
  spillStores: number;
  spillLoads: number;
  stack: number;
}
export interface UsageFile {
  hash: string;
  nvcc: string;
  kernels: KernelUsage[];
}
export interface Launch {
  mangled: string;
  launches: number;
  threads: number;
  smem: number;
}

export function nvccPath(): string | null {
  for (const p of [process.env.NVCC, 'nvcc', '/usr/local/cuda/bin/nvcc']) {
    if (!p) continue;
    const r = spawnSync(p, ['--version'], { encoding: 'utf8' });
    if (!r.error && r.status === 0) return p;
  }
  return null;
}

function cuFiles(): string[] {
  return fs
    .readdirSync(path.join(ROOT, 'cuda'))
    .filter((f) => f.endsWith('.cu'))
    .sort();
}

/** Hash of everything a device compile of cuda/ reads from this repository. */
export function sourceHash(): string {
  const h = crypto.createHash('sha256');
  for (const dir of ['cuda', 'cpp']) {
    for (const f of fs.readdirSync(path.join(ROOT, dir)).sort()) {
      if (dir === 'cpp' ? f.endsWith('.h') : /\.(cu|cuh)$/.test(f)) h.update(f).update(fs.readFileSync(path.join(ROOT, dir, f)));
    }
  }
  return h.digest('hex').slice(0, 20);
}

/** Parses ptxas -v output ("Compiling entry function 'X' for 'sm_80'", spills, "Used N registers, ... N bytes smem"). */
export function parsePtxas(text: string): KernelUsage[] {
  const out: KernelUsage[] = [];
  let cur: KernelUsage | null = null;
  for (const line of text.split('\n')) {
    let m = line.match(/Compiling entry function '(\w+)' for '(sm_\d+a?)'/);
    if (m) {
      cur = { arch: m[2], mangled: m[1], regs: 0, smem: 0, spillStores: 0, spillLoads: 0, stack: 0 };
      out.push(cur);
      continue;
    }
    if (!cur) continue;
    if ((m = line.match(/(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads/))) {
      cur.stack = Number(m[1]);
      cur.spillStores = Number(m[2]);
      cur.spillLoads = Number(m[3]);
    } else if ((m = line.match(/Used (\d+) registers/))) {
      cur.regs = Number(m[1]);
      const s = line.match(/(\d+) bytes smem/);
      cur.smem = s ? Number(s[1]) : 0;
    }
  }
  return out;
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    let out = '';
    const c = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', (e) => resolve({ code: -1, out: out + String(e) }));
    c.on('close', (code) => resolve({ code, out }));
  });
}

/** Runs ptxas -v over every cuda/*.cu for both archs (binding.gyp's flags), two compiles at a time. */
export async function compileUsage(nvcc: string, log: (s: string) => void = () => {}): Promise<UsageFile> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ptxas-'));
  const files = cuFiles();
  const kernels: KernelUsage[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < files.length) {
      const f = files[next++];
      const t0 = Date.now();
      const args = ['-std=c++17', '-O3', '-Icuda', '-Icpp', '--expt-relaxed-constexpr', '-Xptxas', '-v'];
      for (const a of ARCHS) args.push('-gencode', `arch=compute_${a.slice(3)},code=${a}`);
      const r = await run(nvcc, [...args, '-c', path.join('cuda', f), '-o', path.join(tmp, `${f}.o`)]);
      if (r.code !== 0) throw new Error(`nvcc -Xptxas -v cuda/${f} failed:\n${r.out.slice(-3000)}`);
      kernels.push(...parsePtxas(r.out));
      log(`ptxas -v cuda/${f}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    }
  };
  try {
    await Promise.all([worker(), worker()]);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const ver = spawnSync(nvcc, ['--version'], { encoding: 'utf8' }).stdout.trim().split('\n').pop() ?? '?';
  kernels.sort((a, b) => (a.mangled + a.arch < b.mangled + b.arch ? -1 : 1));
  return { hash: sourceHash(), nvcc: ver, kernels };
}

/** The usage table for the current sources: committed file, cache, or a compile (null without nvcc). */
export async function loadUsage(log: (s: string) => void = () => {}): Promise<{ usage: UsageFile; from: string } | null> {
  const hash = sourceHash();
  const read = (p: string): UsageFile | null => {
    try {
      const u = JSON.parse(fs.readFileSync(p, 'utf8')) as UsageFile;
      return u.hash === hash ? u : null;
    } catch {
      return null;
    }
  };
  const committed = read(COMMITTED);
  if (committed) return { usage: committed, from: path.relative(ROOT, COMMITTED) };
  const cacheFile = path.join(CACHE_DIR, `ptxas-${hash}.json`);
  const cached = read(cacheFile);
  if (cached) return { usage: cached, from: path.relative(ROOT, cacheFile) };
  const nvcc = nvccPath();
  if (!nvcc) return null;
  const usage = await compileUsage(nvcc, log);
  fs.mkdirSync(CACHE_DIR, { recursive: true });
  fs.writeFileSync(cacheFile, JSON.stringify(usage));
  return { usage, from: `nvcc -Xptxas -v (cached in ${path.relative(ROOT, cacheFile)})` };
}

/**
 * A mangled kernel name with its anonymous namespaces made comparable: g++ encodes one as
 * `12_GLOBAL__N_1`, nvcc as `39_GLOBAL__N__018b87de_7_anon_cu_d8743435` (a per-file tag); both become `4ANON`.
 */
export function normalizeMangled(m: string): string {
  let out = '';
  let i = 0;
  const re = /(\d+)_GLOBAL__N_/g;
  let mm: RegExpExecArray | null;
  while ((mm = re.exec(m))) {
    const start = mm.index;
    out += m.slice(i, start) + '4ANON';
    i = start + mm[1].length + Number(mm[1]);
    re.lastIndex = i;
  }
  return out + m.slice(i);
}

/** Register file per block as the hardware allocates it: per warp, registers x 32 rounded up to 256. */
export function regsPerBlock(regs: number, threads: number): number {
  return Math.ceil(threads / 32) * Math.ceil((regs * 32) / 256) * 256;
}

/** Why the GPU would refuse (or we refuse) this launch on this arch, or null when it fits. */
export function refusal(k: KernelUsage, l: Launch, optinRaised: boolean): string | null {
  const lim = LIMITS[k.arch];
  const rb = regsPerBlock(k.regs, l.threads);
  if (rb > lim.regsPerBlock) return `${k.regs} registers x ${l.threads} threads = ${rb} > ${lim.regsPerBlock} registers per block`;
  const smem = k.smem + l.smem;
  const cap = optinRaised ? lim.smemOptin : lim.smemDefault;
  if (smem > cap) return `${k.smem} B static + ${l.smem} B dynamic shared memory = ${smem} > ${cap} B${optinRaised ? '' : ' (no opt-in)'}`;
  if (/tc_kernel|mma|_tc/.test(k.mangled) && k.spillStores > TC_SPILL_BUDGET) {
    return `${k.spillStores} bytes of spill stores > the tensor-core budget of ${TC_SPILL_BUDGET}`;
  }
  return null;
}

if (require.main === module && process.argv.includes('--write')) {
  const nvcc = nvccPath();
  if (!nvcc) {
    console.error('ptxas.ts --write: nvcc not found (set NVCC)');
    process.exit(2);
  }
  void compileUsage(nvcc, (s) => console.log(s)).then((u) => {
    fs.writeFileSync(COMMITTED, JSON.stringify(u, null, 0).replace(/\},\{/g, '},\n{') + '\n');
    console.log(`wrote ${path.relative(ROOT, COMMITTED)}: ${u.kernels.length} kernel entries, hash ${u.hash}`);
  });
}
