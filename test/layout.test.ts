// layout.test.ts — the house rules of the source tree, checked on every run (README "Layout"):
//   1. rooms import only rooms below them (the RANK table), peers never import each other (type-only
//      imports excepted: Tensor's method signatures come from lib/ops that way, and they vanish at run time);
//   2. only lib/core, lib/cuda.ts and lib/native.ts itself touch the native addon (lib/native.ts);
//   3. nothing under lib/ imports the package index (lib/index.ts);
//   4. no import cycles between files of lib/ (type-only imports excepted: they vanish at run time);
//   5. the line budget, with no exceptions: .ts ≤ 500 lines, test files and .cc/.h ≤ 600, .cu/.cuh ≤ 800;
//   6. every TypeScript file type-checks, the tests included (tsconfig.test.json: tsx runs the tests
//      without checking types, so a misspelt option such as `{ causal: true }` would otherwise pass silently);
//   7. the sources are formatted: TypeScript by prettier (.prettierrc.json), C++ and CUDA by clang-format
//      (.clang-format; skipped, with the reason, where Debian's clang-format is not installed);
//   8. importing the package index, the GPU check (test/gpu/check.ts) and the bench's CUDA run load no dev
//      dependency and none of NOT_CARRIED (heavy packages required where they are first used), so tensor code
//      never pays for them and the GPU machine, which gets the production modules less those
//      (scripts/gpu_check.sh), can start them.
import t from 'tap';
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as fs from 'fs';
import * as path from 'path';
import { TEST_DIR } from './helpers';

const ROOT = path.join(TEST_DIR, '..');

/** Rooms from the bottom up; a room may import rooms of a lower rank only. */
const RANK: Record<string, number> = {
  native: 0,
  constants: 0,
  options: 0,
  io: 1,
  core: 2,
  cuda: 2,
  ops: 3,
  nn: 4,
  optim: 4,
  dist: 4,
  tfjs: 4,
  models: 5,
  'app/util': 6,
  'app/processing': 7,
  'app/inference': 8,
  'app/train': 9,
  'app/serve': 10,
  'app/eval': 10,
  'app/datagen': 10,
  'app/cli': 11,
  index: 12,
};

/** Runtime packages that the GPU check's carry leaves out (scripts/gpu_check.sh): they must load on first use. */
const NOT_CARRIED = ['openai', 'sharp'];

function walk(dir: string, keep: (f: string) => boolean): string[] {
  const abs = path.join(ROOT, dir);
  if (!fs.existsSync(abs)) return [];
  return fs.readdirSync(abs, { withFileTypes: true }).flatMap((e) => {
    const rel = path.join(dir, e.name);
    if (e.isDirectory()) return e.name === 'node_modules' || e.name === 'fixtures' ? [] : walk(rel, keep);
    return keep(rel) ? [rel] : [];
  });
}

/** The room of a file under lib/: its folder (app rooms by their sub-folder) or its stem. */
function roomOf(file: string): string {
  const p = file.split('/');
  if (p[1] === 'app') return `app/${p[2]}`;
  return p.length > 2 ? p[1] : p[1].replace(/\.ts$/, '');
}

interface Edge {
  from: string;
  to: string;
  typeOnly: boolean;
}

const IMPORT_RE = /(import\s+type\s[^;]*?from\s*|(?:^|[^\w.])(?:from|import)\s*\(?\s*|require\s*\(\s*)['"](\.{1,2}\/[^'"]*)['"]/gm;

function importsOf(file: string): Edge[] {
  const src = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const out: Edge[] = [];
  for (const m of src.matchAll(IMPORT_RE)) {
    const base = path.normalize(path.join(path.dirname(file), m[2]));
    const to = [`${base}.ts`, path.join(base, 'index.ts'), base].find((c) => c.endsWith('.ts') && fs.existsSync(path.join(ROOT, c)));
    if (to) out.push({ from: file, to, typeOnly: m[1].startsWith('import type') || /^\s*import\s+type\b/.test(m[0]) });
  }
  return out;
}

const libFiles = walk('lib', (f) => f.endsWith('.ts'));
const edges = libFiles.flatMap(importsOf);

t.test('every file under lib/ belongs to a known room', async (tt) => {
  const unknown = libFiles.filter((f) => RANK[roomOf(f)] === undefined);
  tt.same(unknown, [], 'rooms missing from the RANK table');
});

t.test('rooms import only rooms below them', async (tt) => {
  const bad = edges
    .filter((e) => !e.typeOnly && roomOf(e.from) !== roomOf(e.to))
    .filter((e) => !(RANK[roomOf(e.to)] < RANK[roomOf(e.from)]))
    .map((e) => `${e.from} -> ${e.to}`);
  tt.same(bad, [], 'imports that go up or sideways');
  tt.ok(edges.length > 100, `import graph read (${edges.length} imports)`);
});

t.test('only the engine core touches the native addon', async (tt) => {
  const bad = edges.filter((e) => e.to === 'lib/native.ts' && !/^lib\/(core\/|cuda\.ts)/.test(e.from)).map((e) => e.from);
  tt.same(bad, [], 'files importing lib/native.ts directly');
});

t.test('nothing under lib/ imports the package index', async (tt) => {
  tt.same(
    edges.filter((e) => e.to === 'lib/index.ts').map((e) => e.from),
    [],
  );
});

t.test('no import cycles between files', async (tt) => {
  const next = new Map<string, string[]>();
  for (const e of edges) if (!e.typeOnly && e.from !== e.to) next.set(e.from, [...(next.get(e.from) ?? []), e.to]);
  const state = new Map<string, 1 | 2>();
  const cycles: string[] = [];
  const visit = (f: string, stack: string[]): void => {
    state.set(f, 1);
    for (const g of next.get(f) ?? []) {
      if (state.get(g) === 1) cycles.push([...stack.slice(stack.indexOf(g)), f, g].join(' -> '));
      else if (!state.has(g)) visit(g, [...stack, f]);
    }
    state.set(f, 2);
  };
  for (const f of libFiles) if (!state.has(f)) visit(f, []);
  tt.same(cycles, [], 'import cycles');
});

t.test('line budget', async (tt) => {
  const limit = (f: string): number =>
    /\.test\.ts$/.test(f) ? 600 : f.endsWith('.ts') ? 500 : /\.(cc|h)$/.test(f) ? 600 : /\.(cu|cuh)$/.test(f) ? 800 : Infinity;
  const src = [
    ...walk('lib', (f) => f.endsWith('.ts')),
    ...walk('bench', (f) => f.endsWith('.ts')),
    ...walk('test', (f) => /\.(ts|cc|h)$/.test(f)),
    ...walk('cpp', (f) => /\.(cc|h)$/.test(f)),
    ...walk('cuda', (f) => /\.(cu|cuh)$/.test(f)),
  ];
  const over = src
    .map((f) => ({ f, n: fs.readFileSync(path.join(ROOT, f), 'utf8').split('\n').length - 1 }))
    .filter(({ f, n }) => n > limit(f))
    .map(({ f, n }) => `${f}: ${n} lines (budget ${limit(f)})`);
  tt.same(over, [], 'files over the line budget (split them by role)');
});

/** The package roots (node_modules/<name>) a node command loaded, read by an exit hook that --require installs. */
function packagesLoadedBy(args: string[]): { status: number | null; roots: string[]; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'llava-layout-'));
  try {
    const hook = path.join(dir, 'hook.js');
    fs.writeFileSync(
      hook,
      `process.on('exit', () => {
        const roots = Object.keys(require.cache).map((k) => /node_modules[\\\\/]((?:@[^/\\\\]+[\\\\/])?[^/\\\\]+)/.exec(k)?.[1]);
        require('fs').writeFileSync(${JSON.stringify(path.join(dir, 'roots.json'))}, JSON.stringify([...new Set(roots.filter(Boolean))]));
      });`,
    );
    const r = spawnSync(process.execPath, ['--require', hook, '--import', 'tsx', ...args], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, OUT: path.join(dir, 'out') },
    });
    const file = path.join(dir, 'roots.json');
    const roots: string[] = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')).map((m: string) => m.replace(/\\/g, '/')) : [];
    return { status: r.status, roots, stderr: r.stderr };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

t.test('every TypeScript file type-checks, tests included', async (tt) => {
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', path.join(ROOT, 'tsconfig.test.json')], { cwd: ROOT, encoding: 'utf8' });
  tt.equal(r.status, 0, 'tsc -p tsconfig.test.json');
  const errors = (r.stdout + r.stderr).split('\n').filter((l) => / error TS\d+/.test(l));
  tt.same(errors, [], 'type errors');
});

t.test('the TypeScript is formatted', async (tt) => {
  const prettier = path.join(ROOT, 'node_modules', 'prettier', 'bin', 'prettier.cjs');
  const r = spawnSync(process.execPath, [prettier, '--list-different', 'lib/**/*.ts', 'test/**/*.ts', 'bench/**/*.ts'], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  tt.equal(r.stderr, '', 'prettier ran');
  tt.same(r.stdout.split('\n').filter(Boolean), [], 'files prettier would change (npx prettier --write them)');
});

t.test('the C++ and CUDA are formatted', async (tt) => {
  const probe = spawnSync('clang-format', ['--version'], { encoding: 'utf8' });
  if (probe.status !== 0) return void tt.skip('clang-format not found (apt-get install clang-format)', () => {});
  const files = spawnSync('git', ['ls-files', '*.cc', '*.h', '*.cu', '*.cuh'], { cwd: ROOT, encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  tt.ok(files.length > 50, `${files.length} C++ / CUDA files tracked`);
  const r = spawnSync('clang-format', ['--dry-run', ...files], { cwd: ROOT, encoding: 'utf8' });
  const bad = [...new Set((r.stderr.match(/^[^\s:]+(?=:\d+:\d+: warning)/gm) ?? []).sort())];
  tt.same(bad, [], 'files clang-format would change (clang-format -i them)');
});

t.test('the library and what the GPU machine runs load only packages that are carried there', async (tt) => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  // tsx is this probe's own loader; everything else of the dev tooling stays behind.
  const absent = new Set([...Object.keys(pkg.devDependencies ?? {}), ...NOT_CARRIED].filter((m) => m !== 'tsx'));
  const runs: [string, string[]][] = [
    ['importing lib/', ['-e', `require(${JSON.stringify(path.join(ROOT, 'lib'))})`]],
    ['test/gpu/check.ts --no-bench', [path.join(ROOT, 'test', 'gpu', 'check.ts'), '--no-bench']],
    ['bench/run.ts --device cuda', [path.join(ROOT, 'bench', 'run.ts'), '--device', 'cuda', '--quick', '--json']],
  ];
  for (const [what, args] of runs) {
    const r = packagesLoadedBy(args);
    tt.equal(r.status, 0, `${what} ran (${r.stderr.slice(-300)})`);
    tt.ok(r.roots.includes('@huggingface/tokenizers'), `${what}: the probe sees the packages it does load (${r.roots.join(', ')})`);
    tt.same(
      r.roots.filter((m) => absent.has(m)),
      [],
      `${what}: dev dependencies, or packages the GPU check's carry leaves out, that it loads`,
    );
  }
});
