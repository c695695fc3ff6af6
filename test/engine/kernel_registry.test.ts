// kernel_registry.test.ts — registering one kernel name twice for one device is an error.
//
// Kernels register from static constructors (REGISTER_KERNEL), too early to throw, so cpp/registry.cc
// keeps the first registration, records the second, and check_registrations() reports it; the addon's
// module init calls that check. Both levels are exercised with test/engine/registry_dup.cc, which
// registers "twice" two times on the CPU (and once on CUDA, which is fine):
//   1. as a plain C++ program linked with cpp/registry.cc: the registry's own view;
//   2. linked into an addon with cpp/binding.cc: require() must fail with an Error naming the kernel.
// Needs g++ (and, for 2, the Node headers); skips with the reason otherwise. Builds go to a temp dir.
import t from 'tap';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { spawnSync } from 'child_process';

const ROOT = path.resolve(__dirname, '..', '..');
const CXX = process.env.CXX || 'g++';
const NODE_INC = process.env.NODE_INC || '/usr/include/node';
const FIXTURE = path.join(__dirname, 'registry_dup.cc');

const hasCxx = spawnSync(CXX, ['--version']).status === 0;
const out = fs.mkdtempSync(path.join(os.tmpdir(), 'kernel-registry-'));
t.teardown(() => fs.rmSync(out, { recursive: true, force: true }));

function compile(args: string[]): { ok: boolean; log: string } {
  const r = spawnSync(CXX, args, { cwd: ROOT, encoding: 'utf8', timeout: 240_000 });
  return { ok: r.status === 0, log: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}` };
}

t.test('the registry keeps the first registration and reports the second', { skip: hasCxx ? false : `${CXX} not found` }, async (t) => {
  const exe = path.join(out, 'registry_dup');
  const c = compile(['-std=c++17', '-O0', '-Icpp', 'cpp/registry.cc', FIXTURE, '-o', exe]);
  t.ok(c.ok, 'the fixture program builds');
  if (!c.ok) return void t.comment(c.log);
  const r = spawnSync(exe, [], { encoding: 'utf8' });
  t.equal(r.status, 0, 'it runs');
  const lines = r.stdout.trim().split('\n');
  t.same(
    lines.filter((l) => l.startsWith('duplicate: ')),
    ["duplicate: 'twice' for cpu"],
    'exactly one duplicate: twice on the cpu',
  );
  t.same(
    lines.filter((l) => l.startsWith('cpu: ')),
    ['cpu: once', 'cpu: twice'],
    'each cpu name listed once',
  );
  t.same(
    lines.filter((l) => l.startsWith('cuda: ')),
    ['cuda: twice'],
    'the same name on another device is not a duplicate',
  );
  t.ok(lines.includes('twice on cpu runs: 1'), 'the first registration stays in force (the second does not overwrite it)');
  const check = lines.find((l) => l.startsWith('check: ')) ?? '';
  t.match(
    check,
    /^check: \[registry\] kernel registered more than once: 'twice' for cpu/,
    'check_registrations() throws, naming the kernel and device',
  );
  t.notMatch(check, /once'/, 'and only that kernel');
});

t.test('an addon with a duplicate registration refuses to load, naming the kernel', async (t) => {
  if (!hasCxx) return void t.skip(`${CXX} not found`, () => {});
  if (!fs.existsSync(path.join(NODE_INC, 'node_api.h'))) return void t.skip(`Node headers not found in ${NODE_INC} (set NODE_INC)`, () => {});
  const napiInc = spawnSync(process.execPath, ['-p', "require('node-addon-api').include_dir"], { cwd: ROOT, encoding: 'utf8' }).stdout.trim();
  const addon = path.join(out, 'dup_addon.node');
  const c = compile([
    '-std=c++17',
    '-O0',
    '-shared',
    '-fPIC',
    '-pthread',
    '-fexceptions',
    '-DNAPI_VERSION=8',
    '-DNODE_ADDON_API_DISABLE_DEPRECATED',
    '-DREGISTRY_DUP_NO_MAIN',
    `-I${NODE_INC}`,
    `-I${path.resolve(ROOT, napiInc)}`,
    '-Icpp',
    'cpp/binding.cc',
    'cpp/registry.cc',
    'cpp/cpu_backend.cc',
    FIXTURE,
    '-o',
    addon,
  ]);
  t.ok(c.ok, 'the addon with the duplicate builds (the duplicate is not a link error)');
  if (!c.ok) return void t.comment(c.log);
  const load = (p: string): { status: number | null; err: string } => {
    const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(p)}); console.log('loaded')`], { encoding: 'utf8' });
    return { status: r.status, err: `${r.stdout}${r.stderr}` };
  };
  const r = load(addon);
  t.not(r.status, 0, 'require() fails');
  t.notMatch(r.err, /loaded/, 'nothing after the require ran');
  t.match(r.err, /Error: \[registry\] kernel registered more than once: 'twice' for cpu/, 'with an Error naming the kernel and the device');
});
