// dist_record.ts — what a checkpoint says about the processes that wrote it (distributed.ts). Plain file
// reading, no engine code: the command line reads it before the engine loads.
import * as fs from 'fs';
import * as path from 'path';

/** In a checkpoint of a several-process run: the strategy and the world size. */
export const DIST_FILE = 'distributed.json';
/** Rank `rank`'s optimizer shard in a checkpoint of a sharded run (zero1/2/3). */
export const shardFile = (rank: number, world: number): string => `optimizer.rank-${rank}-of-${world}.safetensors`;

/** What a checkpoint's distributed.json says; a one-process checkpoint has none (world size 1). */
export function readDistRecord(dir: string): { strategy?: string; worldSize: number } {
  const f = path.join(dir, DIST_FILE);
  return fs.existsSync(f) ? (JSON.parse(fs.readFileSync(f, 'utf8')) as { strategy?: string; worldSize: number }) : { worldSize: 1 };
}
