// nccl_path.ts — where libnccl may live, in the order cpp/dist_nccl.cc tries them: an explicit path or
// LLAVA_NCCL_LIB, the system's libnccl.so.2 (the loader's search path), then the copy a Python wheel
// installs (nvidia-nccl-cu12: site-packages/nvidia/nccl/lib/libnccl.so.2) under the active virtual or
// conda environment, the user's site-packages and the system's.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export function ncclCandidates(explicit?: string, env: NodeJS.ProcessEnv = process.env): string[] {
  if (explicit) return [explicit];
  if (env.LLAVA_NCCL_LIB) return [env.LLAVA_NCCL_LIB];
  const out = ['libnccl.so.2'];
  const roots = [env.VIRTUAL_ENV, env.CONDA_PREFIX, path.join(os.homedir(), '.local'), '/usr/local', '/usr'].filter((r): r is string => !!r);
  for (const root of roots) {
    const lib = path.join(root, 'lib');
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(lib).filter((e) => /^python3(\.\d+)?$/.test(e));
    } catch {
      continue;
    }
    for (const py of entries)
      for (const site of ['site-packages', 'dist-packages']) {
        const f = path.join(lib, py, site, 'nvidia', 'nccl', 'lib', 'libnccl.so.2');
        if (fs.existsSync(f)) out.push(f);
      }
  }
  return out;
}
