#!/usr/bin/env node
// run_tests.js — `npm test`: runs the tap suite (test/**/*.test.ts) and turns its TAP stream into a short
// report, ending with the line CI reads:
//   N passed, N failed, N skipped
//
//   npm test [-- [--raw] [--tap-file FILE] [tap arguments...]]
//
// While tap runs, one line per test file is printed as the file finishes: ok/FAIL, the file, its
// pass/fail/skip counts and its seconds. For a failed file the failing assertions follow in full: their
// subtest path, the `not ok` line and tap's YAML diagnostics (diff, source, stack). A file that died
// without a failing assertion (crash, exit code, timeout) shows tap's diagnostics for the file instead.
// When nothing finishes for a minute a "still running" line says so (naming the files when few are left),
// because a few files (the CUDA emulator's) take minutes.
//
// Where the lines come from: tap runs two files at a time but prints each file's TAP only once the files
// started before it have finished, so one slow file would hold back every line after it. tap also copies
// each file's own TAP to --output-dir as it runs (a private temp folder here, removed at the end); a copy
// that ends with its root "# time=" line is a finished file, and its line is printed then. tap's stream
// stays the authority: when its verdict differs (a file whose assertions passed but whose process exited
// non-zero) the file's line is printed again, as tap has it.
//
// The full TAP stream is written to a file (default <os tmpdir>/llava-node-test.tap, overwritten each run;
// --tap-file FILE to choose); its path is printed just before the closing line. --raw also streams the
// raw TAP to stdout as it arrives, as the runner did before. Every other argument goes to tap unchanged
// (test files, --grep, --timeout, ...). What the test processes (and tap) write to stderr cannot be told
// apart by file, so it goes to FILE.stderr instead of the screen; when the run fails its last lines are
// shown before the closing line (a crash's reason is usually there). With --raw it passes straight through.
//
// Counts and exit code: the closing line takes its numbers from tap's own summary
// ("# { total, pass, fail, skip, todo }"; todo counts as skipped). The exit code is tap's, made non-zero
// when the summary shows a failure, or when a test file that should have run did not (it is named); with
// no summary at all the run is a failure (exit 1).
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

/** Lines of captured stderr shown when a run fails. */
const STDERR_TAIL = 40;

const POINT_RE = /^(not ok|ok)\b(?: +\d+)?(?: +-)? *(.*)$/;

/** Split a test point's description into name, directive (skip/todo) and time in ms. */
function parsePoint(line) {
  const m = POINT_RE.exec(line);
  if (!m) return null;
  let rest = m[2];
  let directive = null;
  let ms = null;
  const t = /\s*# time=([\d.]+)ms\s*$/.exec(rest);
  if (t) {
    ms = Number(t[1]);
    rest = rest.slice(0, t.index);
  }
  const d = /\s+# (SKIP|TODO)\b.*$/i.exec(rest);
  if (d) {
    directive = d[1].toLowerCase();
    rest = rest.slice(0, d.index);
  }
  return { ok: m[1] === 'ok', name: rest.replace(/\\#/g, '#').trim(), directive, ms };
}

const indentOf = (line) => line.length - line.trimStart().length;

/**
 * Reads tap's TAP stream line by line and calls onFile(result) each time a top-level subtest (one test
 * file) closes. result = { name, ok, pass, fail, skip, todo, seconds, failures: [{ path, line, yaml }],
 * bailOut }. Nested subtests are tracked by indentation: "# Subtest: X" at indent d opens one,
 * the next test point at the same indent closes it; every other test point is an assertion. A subtest
 * that fails with no failing assertion inside (a crash, a timeout) counts as one failure, as tap counts it.
 * summary() returns tap's closing counts, or null when none was seen.
 */
class TapReport {
  constructor(onFile) {
    this.onFile = onFile;
    this.stack = []; // open subtests: { indent, name, failedInside }
    this.file = null; // the file (top-level subtest) being read
    this.yaml = null; // { indent, lines, target } while inside a YAML diagnostics block
    this.lastPoint = null; // the test point a following '---' block belongs to
    this.pendingFile = null; // a closed file waiting for its YAML block
    this.summaryLine = null;
    this.bailOut = null;
  }

  line(raw) {
    const line = raw.replace(/\r$/, '');
    const ind = indentOf(line);
    const body = line.trim();
    if (this.yaml) {
      if (ind === this.yaml.indent && body === '...') {
        this.yaml.target.yaml = this.yaml.lines.join('\n');
        this.yaml = null;
        this.flushFile();
      } else this.yaml.lines.push(line.slice(Math.min(ind, this.yaml.indent)));
      return;
    }
    if (body === '---' && this.lastPoint && ind === this.lastPoint.indent + 2) {
      this.yaml = { indent: ind, lines: [], target: this.lastPoint.record };
      this.lastPoint = null;
      return;
    }
    this.lastPoint = null;
    this.flushFile();
    if (body === '') return;
    if (ind === 0 && /^# \{ total: \d+/.test(body)) {
      this.summaryLine = body;
      return;
    }
    if (/^Bail out!/.test(body)) {
      this.bailOut = body;
      if (this.file) this.file.bailOut = body;
      return;
    }
    const sub = /^# Subtest: (.*)$/.exec(body);
    if (sub) {
      if (ind === 0) this.file = { name: sub[1], ok: true, pass: 0, fail: 0, skip: 0, todo: 0, seconds: null, failures: [], bailOut: null };
      this.stack.push({ indent: ind, name: sub[1], failedInside: false });
      return;
    }
    const p = parsePoint(body);
    if (!p) return;
    // subtests deeper than this point that never closed (their process died) end here
    while (this.stack.length && this.stack[this.stack.length - 1].indent > ind) this.stack.pop();
    const top = this.stack[this.stack.length - 1];
    if (top && top.indent === ind) {
      // closes the open subtest at this indent
      this.stack.pop();
      if (!p.ok && !p.directive) this.markFailed();
      if (ind === 0) {
        const f = this.file;
        if (!f) return;
        f.ok = p.ok;
        f.seconds = p.ms !== null ? p.ms / 1000 : null;
        // a failed file with no failing assertion (crash, exit code, timeout): tap's diagnostics for it
        const rec = { path: [], line: body, yaml: null };
        if (!p.ok && !top.failedInside) {
          f.fail++;
          f.failures.push(rec);
        }
        this.lastPoint = { indent: ind, record: rec };
        this.pendingFile = f;
        this.file = null;
        return;
      }
      if (!p.ok && !p.directive && !top.failedInside) this.assertion(p, body, ind, top.name);
      else this.lastPoint = { indent: ind, record: {} };
      return;
    }
    if (ind === 0 || !this.file) return; // a top-level point of a file without a "# Subtest" block
    this.assertion(p, body, ind, null);
  }

  /** Count one assertion (or a failed subtest with nothing failing inside) in the current file. */
  assertion(p, body, ind, closing) {
    const f = this.file;
    const record = {};
    if (p.directive === 'skip') f.skip++;
    else if (p.directive === 'todo') f.todo++;
    else if (p.ok) f.pass++;
    else {
      f.fail++;
      const names = this.stack.slice(1).map((s) => s.name);
      if (closing) names.push(closing);
      Object.assign(record, { path: names, line: body, yaml: null });
      f.failures.push(record);
      this.markFailed();
    }
    this.lastPoint = { indent: ind, record };
  }

  markFailed() {
    for (const s of this.stack) s.failedInside = true;
  }

  flushFile() {
    if (!this.pendingFile || this.yaml) return;
    const f = this.pendingFile;
    this.pendingFile = null;
    this.onFile(f);
  }

  end() {
    this.lastPoint = null;
    if (this.yaml) {
      this.yaml.target.yaml = this.yaml.lines.join('\n');
      this.yaml = null;
    }
    this.flushFile();
  }

  /** tap's closing counts: { total, pass, fail, skip, todo } or null. */
  summary() {
    if (!this.summaryLine) return null;
    const field = (name) => {
      const r = new RegExp(`\\b${name}: (\\d+)`).exec(this.summaryLine);
      return r ? Number(r[1]) : 0;
    };
    return { total: field('total'), pass: field('pass'), fail: field('fail'), skip: field('skip'), todo: field('todo') };
  }
}

/** One line per file: "ok   file   N passed ..." / "FAIL file ...". */
function fileLine(f) {
  const secs = f.seconds !== null ? `  ${f.seconds.toFixed(1)} s` : '';
  return `${f.ok ? 'ok  ' : 'FAIL'} ${f.name}  ${f.pass} passed, ${f.fail} failed, ${f.skip + f.todo} skipped${secs}`;
}

/** A file-level diagnostics block without how tap spawned the file (command, args, cwd, ...). */
function processNoise(yaml) {
  const drop = new Set(['stdio', 'cwd', 'externalID', 'command', 'args', 'jobId']);
  const out = [];
  let skipping = false;
  for (const l of yaml.split('\n')) {
    const key = /^([\w$]+):/.exec(l);
    if (key) skipping = drop.has(key[1]);
    else if (/^\S/.test(l)) skipping = false;
    if (!skipping) out.push(l);
  }
  return out.join('\n');
}

/** The failing assertions of a failed file, each with its subtest path and YAML diagnostics. */
function failureText(f) {
  const out = [];
  for (const x of f.failures) {
    const where = [f.name, ...x.path].join(' > ');
    out.push(`  --- ${where}`);
    out.push(`  ${x.line}`);
    if (x.yaml) out.push((x.path.length ? x.yaml : processNoise(x.yaml)).replace(/^/gm, '    '));
  }
  if (f.bailOut) out.push(`  ${f.bailOut}`);
  return out.join('\n');
}

function parseArgs(argv) {
  const o = { raw: false, tapFile: path.join(os.tmpdir(), 'llava-node-test.tap'), tapArgs: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--raw') o.raw = true;
    else if (a === '--tap-file' && i + 1 < argv.length) o.tapFile = path.resolve(argv[++i]);
    else if (a.startsWith('--tap-file=')) o.tapFile = path.resolve(a.slice('--tap-file='.length));
    else o.tapArgs.push(a);
  }
  return o;
}

/** The test files tap will run, as it names them (relative to the repository root): the files given on
 *  the command line, or every test/**\/*.test.ts when none is; null when that cannot be told (a directory
 *  or a glob among the arguments). Used to find the per-file TAP copies and to name the files still running. */
function expectedFiles(tapArgs) {
  const root = path.join(__dirname, '..');
  const given = tapArgs.filter((a) => !a.startsWith('-'));
  if (given.length) {
    if (!given.every((a) => /\.[cm]?[jt]sx?$/.test(a) && fs.existsSync(path.resolve(root, a)))) return null;
    return given.map((a) => path.normalize(path.relative(root, path.resolve(root, a))));
  }
  const out = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory() && e.name !== 'node_modules') walk(rel);
      else if (e.isFile() && e.name.endsWith('.test.ts')) out.push(rel);
    }
  };
  try {
    walk('test');
  } catch {
    return null;
  }
  return out;
}

/**
 * Reads one test file's own TAP (what tap saves per file with --output-dir) and returns its result, or
 * null while the file is not finished: a finished file ends with its root test's "# time=...ms" line.
 * ok here means no failing assertion; the process's exit code is only known from tap's stream.
 */
function parseFileTap(name, text) {
  const end = /(?:^|\n)# time=([\d.]+)ms\s*$/.exec(text);
  if (!end) return null;
  let result = null;
  const r = new TapReport((f) => (result = f));
  r.line(`# Subtest: ${name}`);
  for (const l of text.split('\n')) if (!/^TAP version/.test(l)) r.line(l ? `    ${l}` : '');
  const failed = r.file.fail > 0;
  r.line(`${failed ? 'not ok' : 'ok'} 1 - ${name} # time=${end[1]}ms`);
  r.end();
  return result;
}

const sameResult = (a, b) => ['ok', 'pass', 'fail', 'skip', 'todo'].every((k) => a[k] === b[k]);

function main() {
  const o = parseArgs(process.argv.slice(2));
  const start = Date.now();
  const rawOut = fs.createWriteStream(o.tapFile);
  const failed = [];
  let lastActivity = Date.now();
  let filesDone = 0;
  const done = new Set();
  const early = new Map(); // file -> result already printed from its own TAP file
  const show = (f) => {
    console.log(fileLine(f));
    const text = f.ok ? '' : failureText(f);
    if (text) console.log(text);
  };
  const report = new TapReport((f) => {
    const name = path.normalize(f.name);
    if (!done.has(name)) filesDone++;
    done.add(name);
    lastActivity = Date.now();
    if (!f.ok) failed.push(f.name);
    if (o.raw) return;
    // tap's stream is the word that counts: print unless the early line said the same
    const seen = early.get(name);
    if (!seen || !sameResult(seen, f)) show(f);
  });
  const expected = expectedFiles(o.tapArgs);

  // tap prints a file's TAP only once every file started before it has finished, so one slow file (the
  // CUDA emulator's) would hold back the lines of all that finish after it. Each file's own TAP, which tap
  // also writes to --output-dir as the file runs, shows when it is done: poll that for the early lines.
  // Only for files inside the repository (tap would place the copy of an outside file outside the folder).
  const userDir = o.tapArgs.some((a) => /^(--output-dir|-d)(=|$)/.test(a));
  const watchDir =
    !o.raw && !userDir && expected && expected.every((f) => !f.startsWith('..')) ? fs.mkdtempSync(path.join(os.tmpdir(), 'llava-node-tap-')) : null;
  const sizes = new Map();
  const poll = () => {
    if (!watchDir) return;
    for (const name of expected) {
      if (done.has(name) || early.has(name)) continue;
      const file = path.join(watchDir, `${name}.tap`);
      let size;
      try {
        size = fs.statSync(file).size;
      } catch {
        continue;
      }
      if (sizes.get(name) === size) continue;
      sizes.set(name, size);
      const r = parseFileTap(name, fs.readFileSync(file, 'utf8'));
      if (!r) continue;
      early.set(name, r);
      filesDone++;
      done.add(name);
      lastActivity = Date.now();
      show(r);
    }
  };
  const watcher = watchDir ? setInterval(poll, 1000) : null;

  const heartbeat = setInterval(() => {
    if (Date.now() - lastActivity < 60_000) return;
    lastActivity = Date.now();
    const el = Math.round((Date.now() - start) / 1000);
    const time = `${Math.floor(el / 60)}m${String(el % 60).padStart(2, '0')}s`;
    const left = expected ? expected.filter((f) => !done.has(f)) : null;
    const which = left && left.length > 0 && left.length <= 4 ? `: ${left.join(', ')}` : '';
    const of = expected ? ` of ${expected.length}` : '';
    console.log(`... still running${which} (${filesDone}${of} files done, ${time} so far)`);
  }, 5_000);

  const child = spawn('npx', ['tap', '--reporter=tap', ...(watchDir ? [`--output-dir=${watchDir}`] : []), ...o.tapArgs], {
    cwd: path.join(__dirname, '..'),
    stdio: ['ignore', 'pipe', o.raw ? 'inherit' : 'pipe'],
  });
  const stderrFile = `${o.tapFile}.stderr`;
  const errOut = o.raw ? null : fs.createWriteStream(stderrFile);
  let errTail = [];
  let errLines = 0;
  let errPartial = '';
  if (child.stderr)
    child.stderr.on('data', (chunk) => {
      errOut.write(chunk);
      const lines = (errPartial + chunk.toString()).split('\n');
      errPartial = lines.pop();
      errLines += lines.length;
      errTail = errTail.concat(lines).slice(-STDERR_TAIL);
    });
  let partial = '';
  child.stdout.on('data', (chunk) => {
    rawOut.write(chunk);
    if (o.raw) process.stdout.write(chunk);
    const lines = (partial + chunk.toString()).split('\n');
    partial = lines.pop();
    for (const l of lines) report.line(l);
  });
  child.on('close', (code) => {
    clearInterval(heartbeat);
    if (watcher) clearInterval(watcher);
    if (watchDir) fs.rmSync(watchDir, { recursive: true, force: true });
    if (partial) report.line(partial);
    report.end();
    rawOut.end();
    if (errPartial) {
      errTail = errTail.concat([errPartial]).slice(-STDERR_TAIL);
      errLines++;
    }
    if (errOut) errOut.end();
    const s = report.summary();
    const runFailed = !s || s.fail > 0 || !!code;
    const secs = ((Date.now() - start) / 1000).toFixed(1);
    if (!o.raw && failed.length) console.log(`\nfailed files:\n${failed.map((f) => `  ${f}`).join('\n')}`);
    if (report.bailOut) console.log(report.bailOut);
    if (runFailed && errTail.length) {
      const lines = (n) => `${n} line${n === 1 ? '' : 's'}`;
      const shown = errTail.length < errLines ? `last ${errTail.length} of ${lines(errLines)}` : lines(errLines);
      console.log(`\nstderr of the test processes (${shown}; all in ${stderrFile}):\n${errTail.map((l) => `  ${l}`).join('\n')}`);
    }
    // A test file that tap never ran (its exclude patterns, e.g. its default `dist/` one, once hid
    // test/dist) is a failure, not a smaller suite.
    const unrun = expected ? expected.filter((f) => !done.has(f)) : [];
    if (unrun.length) {
      console.log(`\ntap did not run ${unrun.length} test file(s):\n${unrun.map((f) => `  ${f}`).join('\n')}`);
      if (!code) code = 1;
    }
    const errNote = errOut && errLines ? `; stderr: ${stderrFile}` : '';
    console.log(`\n${filesDone} test files in ${secs} s; full TAP output: ${o.tapFile}${errNote}`);
    if (s) {
      console.log(`${s.pass} passed, ${s.fail} failed, ${s.skip + s.todo} skipped`);
      if (s.fail > 0 && !code) code = 1;
    } else {
      console.log('0 passed, 1 failed, 0 skipped (no tap summary found)');
      if (!code) code = 1;
    }
    process.exit(code ?? 1);
  });
}

if (require.main === module) main();

module.exports = { TapReport, parsePoint, fileLine, failureText, parseArgs, expectedFiles, parseFileTap };
