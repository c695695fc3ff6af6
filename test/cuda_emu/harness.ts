// harness.ts — what the emulator test files (test/cuda/cuda_emu.test.ts: the kernel test binary;
// test/cuda/cuda_emu_addon.test.ts: the whole addon with its CUDA backend emulated) and
// test/cuda/device_suites.test.ts share: the reason to skip on a machine that cannot build the emulator,
// running a command without ever rejecting, a clean environment (no inherited EMU_* knobs), and running
// a test file of the suite on a given device.
import { spawn, spawnSync } from 'child_process';
import fs from 'fs';
import path from 'path';

export const EMU = __dirname;
export const CUDA_INC = process.env.CUDA_INC || '/usr/local/cuda/include';

export function skipReason(): string | null {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    return `host emulator needs linux x86-64 (ucontext fibers, AVX2/F16C); this is ${process.platform}/${process.arch}`;
  }
  const gxx = spawnSync('g++', ['--version'], { encoding: 'utf8' });
  if (gxx.error || gxx.status !== 0) return 'g++ not found (needed to build the CUDA host emulator)';
  const hdr = path.join(CUDA_INC, 'cuda_bf16.h');
  if (!fs.existsSync(hdr)) return `${hdr} not found (CUDA toolkit headers needed to build the CUDA host emulator)`;
  return null;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  ms: number;
  error?: Error;
}

/** Runs a command, collecting stdout and stderr together; never rejects. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<RunResult> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let out = '';
    let error: Error | undefined;
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, killSignal: 'SIGKILL' });
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', (e) => (error = e));
    child.on('close', (code, signal) => resolve({ code, signal, out, ms: Date.now() - t0, error }));
  });
}

/** The inherited environment without EMU_* knobs, so the default run is the default run. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('EMU_')) env[k] = v;
  return { ...env, CUDA_INC, ...extra };
}

/** How a finished command ended, in words. */
export const how = (r: RunResult): string => (r.error ? `error ${r.error.message}` : r.signal ? `signal ${r.signal}` : `exit code ${r.code}`);
export const secs = (ms: number): string => (ms / 1000).toFixed(1);
export const tail = (s: string, n = 40): string => s.trimEnd().split('\n').slice(-n).join('\n');

/** The test files that run once per device (LLAVA_TEST_DEVICE): ops (the op table's four files), gradients,
 *  SwiGLU, LoRA and quantized linears, AdamW, the tiny LLaVA against the transformers fixture, generation, the
 *  trainer (bf16 master weights, accumulation, resume), activation checkpointing and the profiler. */
export const DEVICE_SUITES = [
  'engine/ops_unary_binary',
  'engine/ops_reduce_matmul_norm',
  'engine/ops_index_attention',
  'engine/ops_create_shape_random',
  'engine/grad',
  'engine/swiglu',
  'nn/lora_quant_ops',
  'optim/adamw',
  'models/llava_model',
  'app/inference/generate',
  'app/train/trainer',
  'engine/recompute',
  'engine/profile',
];

export interface SuiteRun extends RunResult {
  total: number;
  pass: number;
  fail: number;
  /** The `not ok` lines, for the failure report. */
  failing: string[];
}

/**
 * Runs one test file of the suite as a plain `node --import=tsx FILE` with tensor factories defaulting to
 * `device` (LLAVA_TEST_DEVICE, test/helpers.ts) and `extra` in the environment. The calling runner's
 * TAP_* / NODE_OPTIONS are dropped, so the child prints its own TAP and summary instead of reporting to a
 * parent runner.
 */
export async function runSuiteOn(file: string, device: string, extra: Record<string, string> = {}, timeoutMs = 900_000): Promise<SuiteRun> {
  const env = cleanEnv({ ...extra, LLAVA_TEST_DEVICE: device });
  for (const k of Object.keys(env)) if (/^(TAP|_TAPJS_)/.test(k) || k === 'NODE_OPTIONS') delete env[k];
  env.TAP_TIMEOUT = String(Math.ceil(timeoutMs / 1000));
  const r = await run(process.execPath, ['--import=tsx', file], env, timeoutMs);
  const m = /# \{ total: (\d+), pass: (\d+)(?:, fail: (\d+))?/.exec(r.out);
  return {
    ...r,
    total: m ? Number(m[1]) : 0,
    pass: m ? Number(m[2]) : 0,
    fail: m ? Number(m[3] ?? 0) : 0,
    failing: r.out.split('\n').filter((l) => /^\s*not ok/.test(l)),
  };
}
