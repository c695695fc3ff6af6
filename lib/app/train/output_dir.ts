// output_dir.ts — the output directory of a `llava train` run before training starts: what a killed run left
// behind is cleaned, a directory that already holds something is refused unless the user says what to do
// with it (--resume continues the run in it, --overwrite-output starts over), and the command a user types
// to resume an interrupted run.
//
// Decisions:
// - "Non-empty" means any entry once a killed run's temp entries are gone (util/files.ts cleanStaleTemps):
//   a stray file may be the previous run's, and mixing two runs' checkpoints and logs is the failure this
//   guards against.
// - --overwrite-output deletes only what a run writes (checkpoint-N folders, train_log.jsonl, loss.png,
//   trainer_state.json, the weights and the copied model files) and says what else it left; checkpoints go
//   atomically (renamed, then deleted), so a kill during the cleanup leaves no half checkpoint to resume from.
// - The resume command is rebuilt from the flags that were typed (option table order), with --resume and
//   without --overwrite-output (which would delete the checkpoint to resume from).
import * as fs from 'fs';
import * as path from 'path';
import { cleanStaleTemps, removeDirAtomic } from '../util/files';
import { MODEL_FILE, MODEL_SIDE_FILES, PROJECTOR_FILE, STATE_FILE, listCheckpoints } from './train_state';
import { LOG_FILE, PLOT_FILE } from './trainer';
import { TRAIN_KEYS, TRAIN_OPTIONS, type Layer, type OptionSpec } from './options';

/** Files a run writes at the top of its output directory (besides checkpoint-N folders). */
export const RUN_FILES = [LOG_FILE, PLOT_FILE, STATE_FILE, MODEL_FILE, PROJECTOR_FILE, ...MODEL_SIDE_FILES];

/**
 * Gets `dir` ready for a run: created if missing, stale temp entries removed, then either empty, or resumed
 * (`resume`), or cleared of the old run's files (`overwrite`). Throws `[train] ...` naming the directory
 * when it holds something and neither is set.
 */
export function prepareOutputDir(dir: string, o: { resume: boolean; overwrite: boolean; log: (m: string) => void }): void {
  if (o.resume && o.overwrite) throw new Error('[train] --resume and --overwrite-output contradict each other: choose one');
  if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new Error(`[train] output ${dir} exists and is not a directory`);
  fs.mkdirSync(dir, { recursive: true });
  for (const line of cleanStaleTemps(dir)) o.log(`[train] ${line} (left by a killed run)`);
  const entries = fs.readdirSync(dir).sort();
  if (entries.length === 0 || o.resume) return;
  if (!o.overwrite) {
    const shown = entries.slice(0, 5).join(', ') + (entries.length > 5 ? `, ... (${entries.length} entries)` : '');
    throw new Error(
      `[train] output directory ${dir} is not empty (${shown}): pass --resume to continue the run in it, ` +
        '--overwrite-output to delete its checkpoints, log and model and start over, or choose another --output',
    );
  }
  const checkpoints = listCheckpoints(dir);
  for (const n of checkpoints) removeDirAtomic(path.join(dir, n));
  const files = RUN_FILES.filter((f) => fs.existsSync(path.join(dir, f)));
  for (const f of files) fs.rmSync(path.join(dir, f), { force: true });
  const left = fs.readdirSync(dir);
  o.log(
    `[train] --overwrite-output: removed ${checkpoints.length} checkpoint folder(s) and ${files.length} file(s) from ${dir}` +
      (left.length ? `; left alone: ${left.join(', ')}` : ''),
  );
}

/** A word as a POSIX shell reads it back. */
export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The command that resumes a run started with the typed `flags` (see the header). */
export function resumeCommand(flags: Layer, program = process.env.npm_command === 'exec' ? 'npx llava' : 'llava'): string {
  const words = [program, 'train'];
  for (const key of TRAIN_KEYS) {
    const s = TRAIN_OPTIONS[key] as OptionSpec<unknown>;
    const v = flags[key];
    if (!s.flag || v === undefined || key === 'resume' || key === 'overwriteOutput') continue;
    const name = s.flag.split(/[ ,]/)[0];
    if (typeof v === 'boolean') {
      if (v) words.push(name);
      else if (s.negatable) words.push(name.replace(/^--/, '--no-'));
    } else words.push(name, shellQuote(String(v)));
  }
  words.push('--resume');
  return words.join(' ');
}
