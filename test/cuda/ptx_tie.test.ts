// ptx_tie.test.ts — ties the inline PTX of cuda/mma.cuh and cuda/wgmma.cuh to the C++ that replaces it in the
// host emulator (test/cuda_emu/shim/), so that the two cannot drift apart. The emulator never compiles the real
// asm strings; this test does: test/cuda_emu/ptx_probe.cu (one kernel per wrapper, each operand loaded
// from its own slot of a volatile input, each result stored to its own slot) goes through
// `nvcc -ptx -arch=sm_90a` (the wgmma instruction exists only there; the others are the same PTX as for
// sm_80), and for every wrapper the table below names the exact instruction (with its
// modifiers) and which C++ argument must sit at each operand position. The test follows every register
// of the PTX back to the slot it was loaded from (or forward to the slot it is stored to) and compares.
// The same table states the fragment layout the emulator implements for those positions; the shim's
// source must still contain each of those definitions. Without nvcc this is a skip carrying the reason.
import t from 'tap';
import { spawnSync } from 'child_process';
import fs from 'fs';
import os from 'os';
import path from 'path';
import { TEST_DIR } from '../helpers';

const ROOT = path.join(TEST_DIR, '..');
const PROBE = path.join(ROOT, 'test', 'cuda_emu', 'ptx_probe.cu');
const SHIM_DIR = path.join(ROOT, 'test', 'cuda_emu', 'shim');

function nvccPath(): string | null {
  for (const p of [process.env.NVCC, 'nvcc', '/usr/local/cuda/bin/nvcc']) {
    if (!p) continue;
    const r = spawnSync(p, ['--version'], { encoding: 'utf8' });
    if (!r.error && r.status === 0) return p;
  }
  return null;
}

/** Per kernel: each instruction as [opcode, operand text], and a name for every register we can trace. */
interface Entry {
  insts: { op: string; args: string }[];
  label: Map<string, string>;
  stores: Map<string, string>; // output slot -> register stored there
}

function parse(ptx: string): Map<string, Entry> {
  const out = new Map<string, Entry>();
  // Each entry runs to the next one (an inline asm may hold braces of its own, so not to the first "}").
  for (const chunk of ptx.split(/\.entry\s+/).slice(1)) {
    const m = chunk.match(/^(\w+)\(([\s\S]*)$/);
    if (!m) continue;
    const e: Entry = { insts: [], label: new Map(), stores: new Map() };
    for (const raw of m[2].split('\n')) {
      const line = raw
        .replace(/\/\/.*$/, '')
        .trim()
        .replace(/;$/, '');
      const sp = line.match(/^([a-z][\w.]*)\s*(.*)$/);
      if (!sp) continue;
      const [, op, args] = sp;
      e.insts.push({ op, args });
      const a = args.split(',').map((s) => s.trim());
      const lab = (r: string): string => e.label.get(r) ?? r;
      let mm: RegExpMatchArray | null;
      if (op === 'ld.param.u64' && (mm = args.match(/^(%\w+),\s*\[\w+_param_(\d+)\]/))) e.label.set(mm[1], `p${mm[2]}`);
      else if (op.startsWith('cvta.to.global') || /^mov\.(u32|b32|f32|u64|b64)$/.test(op)) {
        e.label.set(a[0], /dyn_smem/.test(a[1]) ? 'smem' : lab(a[1]));
      } else if ((mm = op.match(/^ld\.volatile\.global\.\w+$/)) && (mm = args.match(/^(%\w+),\s*\[(%\w+)(?:\+(\d+))?\]/))) {
        e.label.set(mm[1], `${lab(mm[2])}[${Number(mm[3] ?? 0) / 4}]`);
      } else if (/^add\.[su](32|64)$/.test(op)) {
        e.label.set(a[0], [lab(a[1]), lab(a[2])].sort().join('+'));
      } else if (/^st\.volatile\.global\./.test(op) && (mm = args.match(/^\[(%\w+)(?:\+(\d+))?\],\s*(%\w+)/))) {
        e.stores.set(`${lab(mm[1])}[${Number(mm[2] ?? 0) / 4}]`, mm[3]);
      }
    }
    out.set(m[1], e);
  }
  return out;
}

/** The operand groups of an instruction: "{%f1, %f2}, [%r5], 16, %r2" -> [["%f1","%f2"], ["[%r5]"], ["16"], ["%r2"]]. */
function groups(args: string): string[][] {
  return [...args.matchAll(/\{([^}]*)\}|(\[[^\]]*\])|([^,\s{}[\]]+)/g)].map((g) =>
    g[1] !== undefined ? g[1].split(',').map((s) => s.trim()) : [g[2] ?? g[3]],
  );
}

const slots = (p: string, from: number, n: number): string[] => Array.from({ length: n }, (_, i) => `${p}[${from + i}]`);

interface Wrapper {
  kernel: string;
  /** The instruction exactly, modifiers included. */
  instruction: string;
  /** Per operand group: the C++ argument each position must come from ('out:' = where it is stored). */
  operands: string[][];
  /** The emulator's definitions of those positions: each must appear in shim/<shimFile> (default mma.cuh). */
  shim: string[];
  shimFile?: string;
  /** The first operand group is read and written (wgmma's accumulators): its registers must also be the
   *  ones loaded from these slots. */
  inPlace?: string[];
  also?: string[];
}

// mma probe: p0 = f (the accumulator d[0..3]), p1 = u (a[0..3], b0, b1), p2 = out (d after the mma).
// ldmatrix probe: p0[0] = the shared offset, p1 = out (r[0..3]). cp.async probe: p0 = u (smem offset,
// global offset, src_bytes), p1 = the global pointer.
const MMA_SHIM = [
  // register i of A is a[i], of B b0 / b1, of C/D d[i] (the shim packs them into w.in[lane][0..7] in order)
  'w.in[L][i] = a[i]',
  'w.in[L][4] = b0',
  'w.in[L][5] = b1',
  // A 16x16 row major: a0 (g, 2t..), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..), low half first
  'A[g][2 * t] = lo(w.in[l][0])',
  'A[g][2 * t + 1] = hi(w.in[l][0])',
  'A[g + 8][2 * t] = lo(w.in[l][1])',
  'A[g][2 * t + 8] = lo(w.in[l][2])',
  'A[g + 8][2 * t + 8] = lo(w.in[l][3])',
  // B 16x8 "col": b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
  'B[2 * t][g] = lo(w.in[l][4])',
  'B[2 * t + 1][g] = hi(w.in[l][4])',
  'B[2 * t + 8][g] = lo(w.in[l][5])',
  // C/D: c0,c1 (g, 2t..2t+1), c2,c3 (g+8, 2t..2t+1)
  'rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1}',
];
const LDSM_SHIM = ['for (int i = 0; i < 4; i++) r[i] = (uint32_t)w.out[L][i]'];
// wgmma probe: p0 = f (d[0..63] before), p1 = u (descriptor of A, of B: 8-byte slots 0 and 2 in 4-byte
// units), p2 = out (d after the instruction and its wait).
const WGMMA_SHIM = [
  // the transpose flags select the descriptor's K-major or MN-major layout, per operand
  'wg_operand(da, TA, 16 * w + g + 8 * h, k, "wgmma A")',
  'wg_operand(db, TB, 8 * j + 2 * t + e, k, "wgmma B")',
  'return wg_elem(start + (r / 8) * sbo + (r % 8) * 128 + 2 * k, what)',
  'return wg_elem(start + (r / 64) * lbo + (k / 8) * sbo + (k % 8) * 128 + 2 * (r % 64), what)',
  'addr ^= ((addr >> 7) & 7) << 4',
  // descriptor fields: start, LBO, SBO (>> 4, 14 bits each at bits 0, 16, 32), layout type at bit 62
  'const uint32_t start = uint32_t(desc & 0x3fff) << 4, lbo = uint32_t((desc >> 16) & 0x3fff) << 4',
  'sbo = uint32_t((desc >> 32) & 0x3fff) << 4',
  // D: d[4j + 2h + e] = (row 16w + g + 8h, column 8j + 2t + e), accumulated
  'acc[4 * j + 2 * h + e] += s',
];
const TABLE: Wrapper[] = [
  ...(['bf16', 'f16'] as const).map((ty) => ({
    kernel: `probe_mma_${ty}`,
    instruction: `mma.sync.aligned.m16n8k16.row.col.f32.${ty}.${ty}.f32`,
    operands: [slots('out:p2', 0, 4), slots('p1', 0, 4), slots('p1', 4, 2), slots('p0', 0, 4)],
    shim: [...MMA_SHIM, ty === 'bf16' ? 'kBf16 ? "mma.bf16"' : ': "mma.f16"'],
  })),
  {
    kernel: 'probe_ldsm_x4',
    instruction: 'ldmatrix.sync.aligned.m8n8.x4.shared.b16',
    operands: [slots('out:p1', 0, 4), ['[p0[0]+smem]']],
    // lane i supplies row (i % 8) of matrix i / 8; lane l gets elements 2(l%4), 2(l%4)+1 of row l / 4
    shim: [...LDSM_SHIM, 'const uint16_t* row = (const uint16_t*)(uintptr_t)w.in[i * 8 + l / 4][0]', 'lo = row[2 * (l % 4)]'],
  },
  {
    kernel: 'probe_ldsm_x4_trans',
    instruction: 'ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16',
    operands: [slots('out:p1', 0, 4), ['[p0[0]+smem]']],
    shim: [...LDSM_SHIM, 'lo = ((const uint16_t*)(uintptr_t)w.in[i * 8 + 2 * (l % 4)][0])[l / 4]'],
  },
  {
    kernel: 'probe_cp_async',
    instruction: 'cp.async.cg.shared.global',
    // [smem dst], [global src], cp-size 16, src-size (bytes actually read; the rest zero-filled)
    operands: [['[p0[0]+smem]'], ['[p0[1]+p1]'], ['16'], ['p0[2]']],
    shim: ['if (src_bytes) std::memcpy(smem, gmem, src_bytes)', 'std::memset((char*)smem + src_bytes, 0, 16 - src_bytes)'],
    also: ['cp.async.commit_group', 'cp.async.wait_group'],
  },
  {
    kernel: 'probe_wgmma_n128',
    instruction: 'wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16',
    // {d}, A descriptor, B descriptor, scale-d (a predicate set from 1: accumulate), scale-a, scale-b,
    // transpose A (0: K-major), transpose B (1: N-major)
    operands: [slots('out:p2', 0, 64), ['p1[0]'], ['p1[2]'], ['p'], ['1'], ['1'], ['0'], ['1']],
    inPlace: slots('p0', 0, 64),
    shim: WGMMA_SHIM,
    shimFile: 'wgmma.cuh',
    also: ['setp.ne.b32', 'wgmma.fence.sync.aligned', 'wgmma.commit_group.sync.aligned', 'wgmma.wait_group.sync.aligned'],
  },
];

const nvcc = nvccPath();
t.test(
  'inline PTX of cuda/mma.cuh and cuda/wgmma.cuh vs the emulator shims (nvcc -ptx, operand order and modifiers)',
  nvcc ? {} : { skip: 'nvcc not found (set NVCC)' },
  async (tt) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ptx_tie-'));
    tt.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
    const ptxFile = path.join(dir, 'probe.ptx');
    const t0 = Date.now();
    const r = spawnSync(nvcc!, ['-ptx', '-arch=sm_90a', '-O3', '-std=c++17', `-I${path.join(ROOT, 'cuda')}`, PROBE, '-o', ptxFile], {
      encoding: 'utf8',
    });
    tt.comment(`nvcc -ptx: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (!tt.equal(r.status, 0, 'nvcc compiles the probe to PTX', { stderr: r.stderr })) return;
    const entries = parse(fs.readFileSync(ptxFile, 'utf8'));

    for (const w of TABLE) {
      const e = entries.get(w.kernel);
      if (!tt.ok(e, `${w.kernel} is in the PTX`)) continue;
      const insts = e!.insts.filter((i) => i.op === w.instruction);
      if (!tt.equal(insts.length, 1, `${w.kernel}: exactly one ${w.instruction}`, { ops: e!.insts.map((i) => i.op) })) continue;
      const got = groups(insts[0].args);
      const lab = (reg: string): string => {
        const inner = reg.match(/^\[(.*)\]$/);
        if (inner) return `[${e!.label.get(inner[1]) ?? inner[1]}]`;
        return e!.label.get(reg) ?? reg;
      };
      tt.equal(got.length, w.operands.length, `${w.kernel}: ${w.operands.length} operand groups`);
      w.operands.forEach((want, gi) => {
        const regs = got[gi] ?? [];
        const names = want.map((slot, i) => {
          if (slot.startsWith('out:')) return e!.stores.get(slot.slice(4)) === regs[i] ? slot : `${lab(regs[i])} (not stored to ${slot.slice(4)})`;
          return lab(regs[i]);
        });
        tt.same(names, want, `${w.kernel}: operand group ${gi} in order`);
      });
      if (w.instruction.startsWith('mma')) tt.same(got[0], got[3], `${w.kernel}: D and C are the same registers (accumulate in place)`);
      if (w.inPlace) tt.same((got[0] ?? []).map(lab), w.inPlace, `${w.kernel}: D is read from the registers loaded with C`);
      for (const op of w.also ?? [])
        tt.ok(
          e!.insts.some((i) => i.op === op),
          `${w.kernel}: ${op} present`,
        );
      const shim = fs.readFileSync(path.join(SHIM_DIR, w.shimFile ?? 'mma.cuh'), 'utf8');
      for (const s of w.shim) tt.ok(shim.includes(s), `emulator shim ${w.shimFile ?? 'mma.cuh'} defines: ${s}`);
    }
    // Nothing in the wrappers is a plain asm (the compiler could drop or move it): every statement is volatile.
    for (const f of ['mma.cuh', 'wgmma.cuh']) {
      const real = fs.readFileSync(path.join(ROOT, 'cuda', f), 'utf8');
      tt.equal((real.match(/\basm\s*\(/g) ?? []).length, 0, `every asm in cuda/${f} is asm volatile`);
    }
  },
);
