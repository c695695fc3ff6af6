// spec_runner.cjs — tfjs-core's own spec suite (the ~265 *_test.js files its dist/ ships) run with
// jasmine 5 against one backend: `node test/tfjs/spec_runner.cjs [llava|cpu]`.
//
// The recipe: tsx's CommonJS hook first (the spec files are ES modules, and our backend is
// TypeScript), then the backend, then jasmine_util.setTestEnvs so that every describeWithFlags in
// the specs runs on that backend alone, then setupTestFilters with the exclusions of
// exclusions.cjs (one reason per entry; tfjs-backend-wasm and tfjs-node filter the same way).
// Prints `N passed, N failed, N skipped` (skipped = excluded or pending) and exits 1 on any failure.
'use strict';
require('tsx/cjs');
const path = require('path');
const Jasmine = require('jasmine');

const backend = process.argv[2] || 'llava';
const core = path.dirname(require.resolve('@tensorflow/tfjs-core/package.json'));
const jasmineUtil = require(path.join(core, 'dist', 'jasmine_util.js'));
require(path.join(core, 'dist', 'register_all_gradients.js'));
require('@tensorflow/tfjs-backend-cpu');
if (backend !== 'cpu') require('../../lib/tfjs/index.ts');

jasmineUtil.setTestEnvs([{ name: backend, backendName: backend, flags: {}, isDataSync: true }]);

const runner = new Jasmine({ projectBaseDir: core });
runner.loadConfig({
  spec_dir: 'dist',
  spec_files: ['**/*_test.js'],
  jsLoader: 'require',
  random: false,
  stopSpecOnExpectationFailure: false,
});
runner.exitOnCompletion = false;

const { EXCLUSIONS } = require('./exclusions.cjs');
const excluded = backend === 'cpu' ? [] : EXCLUSIONS.map((e) => e.spec);
jasmineUtil.setupTestFilters([{ startsWith: '', excludes: excluded }], () => false);

let passed = 0,
  failed = 0,
  skipped = 0;
const failures = [];
const t0 = Date.now();
runner.env.clearReporters();
runner.env.addReporter({
  specDone(r) {
    if (r.status === 'passed') passed++;
    else if (r.status === 'failed') {
      failed++;
      failures.push(
        `${r.fullName}\n    ${r.failedExpectations
          .map((f) => f.message)
          .join('\n    ')
          .slice(0, 600)}`,
      );
    } else skipped++;
  },
  suiteDone(r) {
    if (r.status === 'failed') {
      failed++;
      failures.push(
        `[suite] ${r.fullName}\n    ${r.failedExpectations
          .map((f) => f.message)
          .join('\n    ')
          .slice(0, 600)}`,
      );
    }
  },
});

runner.execute().then(
  () => {
    for (const f of failures) console.log(`FAILED ${f}`);
    console.log(
      `backend ${backend}: ${passed} passed, ${failed} failed, ${skipped} skipped (${excluded.length} exclusion patterns) in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    );
    process.exit(failed ? 1 : 0);
  },
  (e) => {
    console.error(e);
    process.exit(2);
  },
);
