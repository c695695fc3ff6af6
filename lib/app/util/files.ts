// files.ts — files the application writes and reads back: JSONL records (read whole, or appended one
// line at a time and resumed after a crash) and atomic writes (a file or a whole folder appears complete
// or not at all), used by training state, evaluation answers/reviews and GPT-data outputs.
//
// Temp names: every atomic write goes through `.NAME.tmp-PID-HEX` next to its target (writeFileAtomic,
// writeDirAtomic and the safetensors writer); writeDirAtomic parks the folder it replaces as `...tmp-...old`
// and removeDirAtomic renames a folder to `...tmp-....del` before deleting it. A process killed with -9
// leaves these behind; cleanStaleTemps removes them (and puts back a parked `.old` folder whose target
// vanished), skipping names whose process is still alive.
import * as fs from 'fs';
import * as path from 'path';
import { randomBytes } from 'crypto';

/** Parses JSONL text: one JSON value per non-blank line; a malformed line is an error with its line number. */
export function parseJsonl<T = unknown>(text: string, source = '<jsonl>'): T[] {
  const out: T[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      out.push(JSON.parse(line) as T);
    } catch (e) {
      throw new Error(`${source}: line ${i + 1} is not valid JSON (${(e as Error).message})`);
    }
  });
  return out;
}

/** Reads a JSONL file (see parseJsonl). */
export function readJsonl<T = unknown>(file: string, what = 'JSONL file'): T[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${what} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : (e as Error).message}`);
  }
  return parseJsonl<T>(text, `${what} ${file}`);
}

/**
 * Opens a JSONL output for resuming: returns the records already there. A last line without its newline
 * (a run killed mid-write) is cut off the file so that appending continues cleanly; any other malformed
 * line is an error (the file is not ours to repair). A missing file is created empty, with its folder.
 */
export function prepareJsonlOutput<T = unknown>(file: string): T[] {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  if (!fs.existsSync(file)) {
    fs.writeFileSync(file, '');
    return [];
  }
  let text = fs.readFileSync(file, 'utf8');
  if (text.length > 0 && !text.endsWith('\n')) {
    const cut = text.lastIndexOf('\n') + 1;
    text = text.slice(0, cut);
    fs.truncateSync(file, Buffer.byteLength(text, 'utf8'));
  }
  return parseJsonl<T>(text, `output ${file}`);
}

/** Appends one JSON record as a line (synchronously, so a crash loses at most the line being written). */
export function appendJsonl(file: string, record: unknown): void {
  fs.appendFileSync(file, JSON.stringify(record) + '\n');
}

/** Write a file atomically (temp name in the same directory, fsync, rename). */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  const fd = fs.openSync(tmp, 'wx', 0o644);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data, 'utf8') : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** A temp name next to `target` (see the header). */
function tempName(target: string, suffix = ''): string {
  const r = path.resolve(target);
  return path.join(path.dirname(r), `.${path.basename(r)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}${suffix}`);
}

const TEMP_RE = /^\.(.+)\.tmp-(\d+)-[0-9a-f]{8}(\.old|\.del)?$/;

function processAlive(pid: number): boolean {
  if (pid === process.pid) return false; // ours: none can be in use before we start writing
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes the temp files and folders that atomic writes of killed processes left in `dir` (not below it);
 *  a parked `.old` folder whose target is gone is renamed back instead. Returns one line per action. */
export function cleanStaleTemps(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const done: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    const m = TEMP_RE.exec(name);
    if (!m || processAlive(Number(m[2]))) continue;
    const p = path.join(dir, name);
    const target = path.join(dir, m[1]);
    try {
      if (m[3] === '.old' && !fs.existsSync(target)) {
        fs.renameSync(p, target);
        done.push(`restored ${target} from ${name}`);
      } else {
        fs.rmSync(p, { recursive: true, force: true });
        done.push(`removed ${p}`);
      }
    } catch (e) {
      throw new Error(`${p}: cannot clean up a stale temp entry (${(e as Error).message})`);
    }
  }
  return done;
}

/** Deletes a folder so that it is either whole or gone at any moment: renamed to a temp name first. */
export function removeDirAtomic(dir: string): void {
  if (!fs.existsSync(dir)) return;
  const tmp = tempName(dir, '.del');
  try {
    fs.renameSync(dir, tmp);
  } catch (e) {
    throw new Error(`${dir}: cannot remove (${(e as Error).message})`);
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

/** Build a directory under a temp name with `fill(tmpDir)`, then move it to `dir` (replacing it). */
export function writeDirAtomic(dir: string, fill: (tmpDir: string) => void): void {
  const parent = path.dirname(path.resolve(dir));
  fs.mkdirSync(parent, { recursive: true });
  const tmp = path.join(parent, `.${path.basename(dir)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  fs.mkdirSync(tmp);
  try {
    fill(tmp);
    if (fs.existsSync(dir)) {
      const old = `${tmp}.old`;
      fs.renameSync(dir, old);
      fs.renameSync(tmp, dir);
      fs.rmSync(old, { recursive: true, force: true });
    } else fs.renameSync(tmp, dir);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
