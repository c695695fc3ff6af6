// paths.ts — where this package's own files are, from the source tree (lib/...) or from the compiled
// one (dist/lib/...): the package root holds package.json and the bundled tiny checkpoint.
import * as fs from 'fs';
import * as path from 'path';

/** The folder of this package's package.json (found by walking up from this file). */
export function packageRoot(): string {
  for (let d = __dirname; ; d = path.dirname(d)) {
    const f = path.join(d, 'package.json');
    if (fs.existsSync(f)) {
      try {
        if ((JSON.parse(fs.readFileSync(f, 'utf8')) as { name?: string }).name === 'llava-node') return d;
      } catch {
        // not ours; keep walking up
      }
    }
    if (path.dirname(d) === d) throw new Error(`[paths] the llava-node package root was not found above ${__dirname}`);
  }
}

/** The package's version string. */
export function packageVersion(): string {
  return String((JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: string }).version);
}
