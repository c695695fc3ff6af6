#!/usr/bin/env node
// The package's install step: builds the native addon only when it is missing, older than its sources,
// or does not load in this Node; says what it does either way. `--force` always rebuilds
// (npm run build:native). Node's headers come from the running Node's own prefix when they are there
// (distribution packages, nvm, volta and tarball installs all ship include/node/common.gypi), so nothing
// is downloaded; npm_config_nodedir, when set, wins. LLAVA_NO_CUDA=1 builds without the CUDA kernels.
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.join(__dirname, '..');
const addon = path.join(root, 'build', 'Release', 'llava_native.node');
const force = process.argv.includes('--force');

function newestSource() {
  let newest = 0;
  let name = '';
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const e of fs.readdirSync(p)) visit(path.join(p, e));
    else if (st.mtimeMs > newest) [newest, name] = [st.mtimeMs, path.relative(root, p)];
  };
  for (const p of ['cpp', 'cuda', 'binding.gyp', 'scripts/sources.js']) if (fs.existsSync(path.join(root, p))) visit(path.join(root, p));
  return { newest, name };
}

/** Why the addon must be built, or null when the one in build/ is current and loads. */
function reason() {
  if (force) return 'rebuild requested';
  if (!fs.existsSync(addon)) return 'no native addon built yet';
  const src = newestSource();
  if (src.newest > fs.statSync(addon).mtimeMs) return `${src.name} is newer than the built addon`;
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(addon)})`], { encoding: 'utf8' });
  if (probe.status !== 0) return `the built addon does not load in this Node ${process.version} (${(probe.stderr || '').trim().split('\n').pop()})`;
  return null;
}

function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.dirname(path.dirname(process.execPath));
  return fs.existsSync(path.join(prefix, 'include', 'node', 'common.gypi')) ? prefix : null;
}

const why = reason();
if (!why) {
  console.log(`llava-node: native addon is up to date (${path.relative(process.cwd(), addon) || addon}); not rebuilding (npm run build:native forces it)`);
  process.exit(0);
}
const dir = nodeDir();
console.log(`llava-node: building the native addon: ${why}. This takes a few minutes${process.env.LLAVA_NO_CUDA ? ' (CUDA off: LLAVA_NO_CUDA)' : ''}.`);
if (!dir) console.log(`llava-node: Node's headers were not found under ${path.dirname(path.dirname(process.execPath))}; node-gyp will look for them itself (set npm_config_nodedir to a folder with include/node/common.gypi to avoid a download)`);
// node-gyp: this package's own (a dev dependency), else the one npm runs install scripts with.
function gypCommand() {
  try {
    return [process.execPath, require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] })];
  } catch {
    return process.env.npm_config_node_gyp ? [process.execPath, process.env.npm_config_node_gyp] : ['node-gyp'];
  }
}
const [cmd, ...pre] = gypCommand();
const r = spawnSync(cmd, [...pre, 'rebuild', '-j', 'max', ...(dir ? [`--nodedir=${dir}`] : [])], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
