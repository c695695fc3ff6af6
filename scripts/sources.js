// The one list of native sources, read by binding.gyp (node-gyp) and CMakeLists.txt (cmake-js).
//   node scripts/sources.js cpp|cuda   prints the paths, one per line, relative to the repo root
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const kind = process.argv[2];
const dir = kind === 'cuda' ? 'cuda' : 'cpp';
const ext = kind === 'cuda' ? '.cu' : '.cc';
const full = path.join(root, dir);
const files = (fs.existsSync(full) ? fs.readdirSync(full) : []).filter((f) => f.endsWith(ext)).sort();
process.stdout.write(files.map((f) => `${dir}/${f}`).join('\n') + '\n');
