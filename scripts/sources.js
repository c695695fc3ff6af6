// The one list of native sources, read by binding.gyp (node-gyp) and CMakeLists.txt (cmake-js).
//   node scripts/sources.js cpp|cuda   prints the paths, one per line, relative to the repo root
const fs = require('fs');
const path = require('path');
const root = path.join(__dirname, '..');
const kind = process.argv[2];
const dir = kind === 'cuda' ? 'cuda' : 'cpp';
const ext = kind === 'cuda' ? '.cu' : '.cc';
const files = fs.readdirSync(path.join(root, dir)).filter((f) => f.endsWith(ext)).sort();
process.stdout.write(files.map((f) => `${dir}/${f}`).join('\n') + '\n');
